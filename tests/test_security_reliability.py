"""Reliability (issue 14, items 16 and 17): no older durable state replaces a newer one,
and a sender that dies in the middle of a transfer is a warning, not an error.

Item 16: right after an arrival the paglet's process may checkpoint a message
handled right behind its start, before its host writes down that the paglet
arrived. The host is held back there (``PAGLETS_DELAY_AT=keeper.before_keep``)
so that this order is certain, the test checks that it happened, and then the
host is SIGKILLed: the acknowledged, checkpointed change must come back.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING

import pytest

from paglets import AsyncHostClient, HostClient, PagletError
from paglets.persistence.store import PagletRecord, Store
from pagletstest import host_env
from tests.conftest import wait_for
from tests.hostproc import env_without_key
from tests.test_movement_crash import FREE_TRAVELER, TRAVELER, _wait

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets import Host
    from tests.hostproc import Pair, RunningHost

HOLD_KEEPER = "keeper.before_keep=3"  # the post-start write waits; the test runs meanwhile


def _target_phase(pair: Pair) -> str | None:
    """The phase of the one transfer dst received, read beside the running host."""
    db = sqlite3.connect(f"file:{pair.tmp / 'dst' / 'dst' / 'paglets.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT phase FROM transfers WHERE role = 'target'").fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def _start_pair_with_a_held_keeper(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, crash_at: str | None = None
) -> None:
    pair.start("src")
    monkeypatch.setenv("PAGLETS_DELAY_AT", HOLD_KEEPER)
    pair.start("dst", crash_at)
    monkeypatch.delenv("PAGLETS_DELAY_AT")
    with HostClient(pair.url("dst"), api_key="") as probe:
        _wait(lambda: all(h.online for h in probe.hosts()), 10, "dst sees src")


def _restart_dst_after_sigkill(pair: Pair, *, killed: bool) -> None:
    if not killed:
        _wait(lambda: _target_phase(pair) == "started", 30, "dst journals the start")
        pair.processes["dst"].kill()
    pair.wait_dead("dst")
    pair.start("dst")


# -- item 16: an arrival never overwrites a newer durable state ------------------------------


@pytest.mark.parametrize(
    "crash_at",
    [None, "keeper.after_keep"],
    ids=["killed-after-the-start-is-journaled", "killed-before-the-start-is-journaled"],
)
def test_a_checkpoint_right_behind_an_arrival_survives_a_sigkill(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, crash_at: str | None
) -> None:
    _start_pair_with_a_held_keeper(pair, monkeypatch, crash_at)
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.create(TRAVELER)
        traveler.dispatch("dst")
        assert traveler.send("increment") == 1
        assert traveler.send("save") == "saved"  # acknowledged, and checkpointed on dst
        agent_id = traveler.agent_id
    assert _target_phase(pair) == "committed", "the checkpoint came before the host's own write"
    _restart_dst_after_sigkill(pair, killed=crash_at is not None)
    _wait(lambda: pair.copies(agent_id) == {"dst": "active"}, 30, "one active copy, on dst")
    with HostClient(pair.url("dst"), api_key="") as client:
        assert client.proxy(agent_id).send("increment") == 2, "the checkpointed change is back"


def test_a_deactivation_right_behind_an_arrival_is_not_undone(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    _start_pair_with_a_held_keeper(pair, monkeypatch)
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.create(TRAVELER)
        traveler.dispatch("dst")
        assert traveler.send("increment") == 1
        assert traveler.send("nap") == "napping"  # deactivates itself: checkpoint, inactive
        agent_id = traveler.agent_id
    _wait(lambda: pair.copies(agent_id) == {"dst": "inactive"}, 10, "it is inactive on dst")
    assert _target_phase(pair) == "committed", "it was deactivated before the host's own write"
    _restart_dst_after_sigkill(pair, killed=False)
    _wait(lambda: pair.copies(agent_id) == {"dst": "inactive"}, 30, "still inactive on dst")
    with HostClient(pair.url("dst"), api_key="") as client:
        assert client.proxy(agent_id).send("increment") == 2, "its checkpoint is the latest"


def test_a_paglet_record_is_never_replaced_by_an_older_generation(tmp_path: Path) -> None:
    with Store(tmp_path / "paglets.db") as store:
        newer = PagletRecord("a1", "m:C", "inactive", "/c/a1.env", generation=7)
        assert store.put_paglet(newer)
        assert not store.put_paglet(PagletRecord("a1", "m:C", "active", "/c/a1.env", generation=6))
        assert store.get_paglet("a1") == newer
        same = PagletRecord("a1", "m:C", "inactive", "/c/a1.env", {"wake_at": 5.0}, generation=7)
        assert store.put_paglet(same), "a record of the same generation may change"
        assert store.get_paglet("a1") == same


def test_a_schema_1_store_gets_generations_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    with Store(path) as store:
        store.put_paglet(PagletRecord("a1", "m:C", "inactive", "/c/a1.env", updated=1.0))
    db = sqlite3.connect(path)  # back to what paglets with schema 1 wrote
    db.executescript(
        "ALTER TABLE paglets DROP COLUMN generation; UPDATE schema_version SET version = 1;"
    )
    db.close()
    with Store(path) as store:
        assert store.get_paglet("a1") == PagletRecord("a1", "m:C", "inactive", "/c/a1.env", {}, 1.0)
        assert store.put_paglet(PagletRecord("a1", "m:C", "active", generation=3))
        assert store.get_paglet("a1").generation == 3  # type: ignore[union-attr]


# -- item 17: a sender that dies mid-stream ----------------------------------------------------


async def test_a_sender_killed_mid_stream_is_one_warning_on_the_target(
    make_host: Callable[..., Awaitable[Host]],
    start_host: Callable[..., RunningHost],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING)
    target = await make_host(name="dst")
    inbox = target.config.home / "transfers" / "in"
    sender = await asyncio.to_thread(
        start_host,
        "--peer",
        target.url,
        "--gossip-interval",
        "0.1",
        env=host_env(env_without_key()),
    )
    slow = tmp_path / "slow.bin"  # sparse: its sender is still packing it when it is killed
    with slow.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
    async with AsyncHostClient(sender.url, api_key="") as client:
        await wait_for(lambda: _knows(client, "dst"), 10, "the sender sees the target")
        traveler = await client.create(FREE_TRAVELER)
        await traveler.send("carry", {"path": str(slow)})
        dispatching = asyncio.ensure_future(traveler.dispatch("dst"))
        # the target streams it to a temporary file; its last byte cannot have left yet
        await wait_for(lambda: any(inbox.glob(".*.tmp")), 30, "the target receives the envelope")
        sender.process.kill()
        with pytest.raises(PagletError):
            await dispatching

    def aborted() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith("paglets.movement")]

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    await wait_for(lambda: bool(aborted() or errors()), 10, "the target notes the aborted transfer")
    assert errors() == [], "a sender that died is not an error of the target"
    (warning,) = aborted()
    assert warning.levelno == logging.WARNING
    assert warning.exc_info is None, "no traceback"
    assert "\n" not in warning.getMessage(), "one line"
    assert "sender went away mid-stream" in warning.getMessage()
    assert errors() == []
    # the warning is logged as the read fails; the partial file goes as that error unwinds
    await wait_for(lambda: not any(inbox.iterdir()), 10, "nothing of it is kept")


async def _knows(client: AsyncHostClient, name: str) -> bool:
    return any(h.name == name and h.online for h in await client.hosts())
