"""Movement between host processes over HTTP, and SIGKILL at every phase of a dispatch.

Each crash test kills one host at one phase (``PAGLETS_CRASH_AT``), restarts it on
the same port and state directory, and checks the invariant: exactly one copy of
the paglet runs in the mesh, never zero, never two, with its state intact.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import pytest

from paglets import HostClient, Message, PagletError
from paglets.persistence.store import Store, TransferPhase, TransferRole

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.hostproc import Pair

TRAVELER = "examples.travel:Traveler"
FREE_TRAVELER = "pagletstest.travel:FreeTraveler"  # carries files from anywhere
PAYLOAD = 6 * 1024 * 1024  # several 1 MiB chunks: "mid-stream" is a real middle


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _traveler(pair: Pair, class_path: str = TRAVELER, payload: int = PAYLOAD) -> tuple[str, str]:
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.create(class_path)
        for _ in range(3):
            traveler.send("increment")
        traveler.send("payload", {"size": payload})
        return traveler.agent_id, traveler.send("digest")


def test_dispatch_and_clone_over_http(pair: Pair) -> None:
    pair.start("src")
    pair.start("dst")
    agent_id, digest = _traveler(pair)
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.proxy(agent_id)
        copy = traveler.clone("dst")
        traveler.dispatch("dst")
        assert traveler.send("where") == "dst"
        assert traveler.send("digest") == digest
        assert copy.send("digest") == digest
        assert traveler.send("increment") == 4
        assert copy.send("increment") == 4
        traveler.retract("src")
        assert traveler.send("where") == "src"
    assert pair.copies(agent_id) == {"src": "active"}


CRASHES = [
    # (host killed, phase, where the one copy ends up, whether the dispatch call fails)
    ("src", "source.before_send", "src", True),
    ("src", "source.mid_stream", "src", True),
    ("src", "source.after_commit", "dst", True),
    ("dst", "target.mid_stream", "src", True),
    ("dst", "target.after_commit", "dst", True),
    # the paglet started from the arrived envelope, `started` is not journaled yet;
    # the target had answered at its commit, so the dispatch call succeeded
    ("dst", "keeper.after_keep", "dst", False),
]


@pytest.mark.parametrize(
    ("victim", "point", "survivor", "fails"), CRASHES, ids=[c[1] for c in CRASHES]
)
def test_sigkill_during_a_dispatch_leaves_exactly_one_copy(
    pair: Pair, victim: str, point: str, survivor: str, *, fails: bool
) -> None:
    pair.start("src", point if victim == "src" else None)
    pair.start("dst", point if victim == "dst" else None)
    with HostClient(pair.url("dst"), api_key="") as probe:
        _wait(lambda: all(h.online for h in probe.hosts()), 10, "dst sees src")
    agent_id, digest = _traveler(pair)
    with HostClient(pair.url("src"), api_key="") as client:
        if fails:
            with pytest.raises(PagletError):
                client.proxy(agent_id).dispatch("dst")
        else:
            client.proxy(agent_id).dispatch("dst")
    pair.wait_dead(victim)
    pair.start(victim)

    def settled() -> bool:
        return pair.copies(agent_id) == {survivor: "active"}

    _wait(settled, 30, f"exactly one active copy on {survivor}: {pair.copies(agent_id)}")
    with HostClient(pair.url(survivor), api_key="") as client:
        traveler = client.proxy(agent_id)
        assert traveler.send("digest") == digest, "state intact"
        assert traveler.send("increment") == 4
    time.sleep(1.0)  # nothing revives a second copy afterwards
    assert pair.copies(agent_id) == {survivor: "active"}


def test_a_mid_size_envelope_goes_from_its_file_and_a_sigkill_mid_stream_keeps_it_here(
    pair: Pair,
) -> None:
    """A 1-4 MiB envelope is sent from the spool file (sendfile), not read into memory
    first: the source's crash point after its first MiB sent is reached, and the one
    copy stays at the source."""
    pair.start("src", "source.mid_stream")
    pair.start("dst")
    with HostClient(pair.url("dst"), api_key="") as probe:
        _wait(lambda: all(h.online for h in probe.hosts()), 10, "dst sees src")
    agent_id, digest = _traveler(pair, payload=2 * 1024 * 1024)
    with HostClient(pair.url("src"), api_key="") as client, pytest.raises(PagletError):
        client.proxy(agent_id).dispatch("dst")
    pair.wait_dead("src")
    pair.start("src")
    _wait(lambda: pair.copies(agent_id) == {"src": "active"}, 30, "one copy, on src")
    with HostClient(pair.url("src"), api_key="") as client:
        assert client.proxy(agent_id).send("digest") == digest, "state intact"
    time.sleep(1.0)  # nothing revives a second copy afterwards
    assert pair.copies(agent_id) == {"src": "active"}


def test_sigkill_while_the_paglet_writes_its_envelope_leaves_it_at_the_source(
    pair: Pair,
) -> None:
    pair.start("src", "source.while_writing")
    pair.start("dst")
    with HostClient(pair.url("dst"), api_key="") as probe:
        _wait(lambda: all(h.online for h in probe.hosts()), 10, "dst sees src")
    agent_id, digest = _traveler(pair, FREE_TRAVELER)
    slow = pair.tmp / "slow.bin"  # sparse: hashing and copying it keeps the writer busy
    with slow.open("wb") as f:
        f.truncate(128 * 1024 * 1024)
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.proxy(agent_id)
        traveler.send("carry", {"path": str(slow)})
        with pytest.raises(PagletError):
            traveler.dispatch("dst")
    pair.wait_dead("src")
    spool = pair.tmp / "src" / "src" / "transfers" / "out"
    assert [p.suffix for p in spool.iterdir()] == [".tmp"], "died half-way through writing"
    pair.start("src")
    _wait(lambda: pair.copies(agent_id) == {"src": "active"}, 30, "one copy, on src")
    # The move had not begun: as after any crash of its host, the paglet runs from
    # its last durable state, here its creation (it never wrote a checkpoint).
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.proxy(agent_id)
        assert traveler.send("digest") == hashlib.sha256(b"").hexdigest() != digest
        assert traveler.send("increment") == 1
    assert list(spool.iterdir()) == [], "the half-written envelope is gone"
    time.sleep(1.0)
    assert pair.copies(agent_id) == {"src": "active"}


def _dispatch_to_a_target_dying_at_commit(pair: Pair, *messages: Message | str) -> str:
    """Hosts with fsync on; a Traveler sent ``messages``, then dispatched to dst, which
    dies right after its commit. Returns the Traveler's id."""
    pair.start("src", fsync=True)
    pair.start("dst", "target.after_commit", fsync=True)
    with HostClient(pair.url("dst"), api_key="") as probe:
        _wait(lambda: all(h.online for h in probe.hosts()), 10, "dst sees src")
    with HostClient(pair.url("src"), api_key="") as client:
        traveler = client.create(TRAVELER)
        for message in messages:
            traveler.send(message)
        with pytest.raises(PagletError):
            traveler.dispatch("dst")
    pair.wait_dead("dst")
    return traveler.agent_id


def test_a_small_arrival_a_power_cut_tore_is_rebuilt_from_the_journal(pair: Pair) -> None:
    """With fsync on, a small envelope's file is not flushed: its journal row carries it."""
    agent_id = _dispatch_to_a_target_dying_at_commit(pair, "increment", "increment", "increment")
    # what a power cut can leave of a file written but never flushed: a torn one
    (arrived,) = (pair.tmp / "dst" / "dst" / "transfers" / "in").glob("*.in")
    arrived.write_bytes(arrived.read_bytes()[:40])
    pair.start("dst", fsync=True)
    _wait(lambda: pair.copies(agent_id) == {"dst": "active"}, 30, "one copy, on dst")
    with HostClient(pair.url("dst"), api_key="") as client:
        assert client.proxy(agent_id).send("increment") == 4, "state intact"
    assert "rebuilding the arrived envelope" in pair.log("dst")


@pytest.mark.parametrize(
    ("size", "in_row"), [(1024, True), (200 * 1024, False), (6 * 1024 * 1024, False)]
)
def test_with_fsync_only_a_small_arrival_rides_in_its_journal_row(
    pair: Pair, size: int, *, in_row: bool
) -> None:
    _dispatch_to_a_target_dying_at_commit(pair, Message("payload", {"size": size}))
    store = Store(pair.tmp / "dst" / "dst" / "paglets.db")
    try:
        (row,) = store.transfers(TransferRole.TARGET)
    finally:
        store.close()
    assert row.phase is TransferPhase.COMMITTED
    assert ("body" in row.detail) is in_row, "at most 64 KiB rides in the row"


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 6 * 1024 * 1024])
def test_with_fsync_a_larger_arrival_flushed_while_checked_starts_after_a_crash(
    pair: Pair, size: int
) -> None:
    """Taken whole (2 MiB) or streamed to its file (6 MiB), the envelope is flushed
    while a child checks it and committed after; the target killed right after the
    commit starts the paglet from it when it comes back, its state whole."""
    agent_id = _dispatch_to_a_target_dying_at_commit(pair, Message("payload", {"size": size}))
    pair.start("dst", fsync=True)
    _wait(lambda: pair.copies(agent_id) == {"dst": "active"}, 30, "one copy, on dst")
    with HostClient(pair.url("dst"), api_key="") as client:
        traveler = client.proxy(agent_id)
        payload = bytes(range(256)) * (size // 256)
        assert traveler.send("digest") == hashlib.sha256(payload).hexdigest()
        traveler.dispatch("src")  # flushed again as its checkpoint, it moves on
        assert traveler.send("where") == "src"
