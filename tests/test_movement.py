"""Dispatch, clone and retract between real hosts in one process (the envelope as a file link)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from examples.travel import TravelerState
from paglets import (
    AsyncHostClient,
    EventKind,
    Message,
    Paglet,
    PagletError,
    PagletMovedError,
    PagletState,
    PagletStatus,
    RequestError,
    StorageError,
    TransferError,
    TransferTicket,
)
from paglets.movement.service import TransferService
from paglets.movement.source import MESH_HEADER, TRANSFER_HEADER
from paglets.persistence.records import TransferPhase, TransferRole
from paglets.persistence.store import AsyncStore
from paglets.wire.envelope import INLINE_MAX, MEDIA_TYPE, EnvelopeSpec
from paglets.wire.envelope_write import write_envelope
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from paglets import AsyncPagletProxy, Host
    from paglets.persistence.records import TransferRecord
    from tests.hostproc import RunningHost

FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
TRAVELER = "examples.travel:Traveler"
FREE_TRAVELER = "pagletstest.travel:FreeTraveler"  # carries files from anywhere


async def _mesh(
    make_host: Callable[..., Awaitable[Host]], *names: str, **extra: object
) -> list[Host]:
    first = await make_host(name=names[0], **FAST, **extra)
    hosts = [first]
    hosts += [await make_host(name=n, peers=(first.url,), **FAST, **extra) for n in names[1:]]
    await wait_for(
        lambda: all(len(h.mesh.hosts(online=True)) == len(names) for h in hosts),
        10,
        "the mesh converged",
    )
    return hosts


async def test_dispatch_through_the_proxy_moves_state_and_runs_hooks(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a, b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        assert await traveler.send("increment") == 1
        assert await traveler.send("payload", {"size": 4 * 1024 * 1024}) == 4 * 1024 * 1024
        digest = await traveler.send("digest")
        moved = await traveler.dispatch("b")
        assert moved is traveler
        assert traveler.client.url == b.url
        assert await traveler.send("where") == "b"
        assert await traveler.send("increment") == 2
        assert await traveler.send("digest") == digest
        assert await traveler.send("log") == ["creation@a", "dispatching->b@a", "arrival<-a#1@b"]
        # the source keeps a forwarding tombstone; a stale proxy follows it
        stale = client.proxy(traveler.agent_id)
        assert await stale.send("where") == "b"
        info = a.supervisor.get(traveler.agent_id)
        assert info.status is PagletStatus.MOVED
        assert [r.agent_id for r in b.supervisor.list()] == [traveler.agent_id]
        assert a.supervisor.list() == []
        with pytest.raises(PagletMovedError) as moved_error:
            await a.supervisor.delivery.send(traveler.agent_id, "where", {})
        assert moved_error.value.location == b.url
        kinds = {e.kind for e in a.events.query(0, 1000)}
        assert EventKind.TRANSFER_SENT in kinds
        assert EventKind.TRANSFER_RECEIVED in {e.kind for e in b.events.query(0, 1000)}


async def test_a_mid_size_envelope_goes_whole_over_http_without_a_warning(
    make_host: Callable[..., Awaitable[Host]], start_host: Callable[..., RunningHost]
) -> None:
    """1 to 4 MiB goes to another host process from memory, in slices of a bytes body
    that aiohttp would warn about (as an error here: the suite turns warnings into errors),
    and arrives whole."""
    b = start_host()
    a = await make_host(name="a", peers=(b.url,))
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "a sees b")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        assert await traveler.send("payload", {"size": 2 * 1024 * 1024}) == 2 * 1024 * 1024
        digest = await traveler.send("digest")
        await traveler.dispatch(b.name)
        assert await traveler.send("where") == b.name
        assert await traveler.send("digest") == digest
        await traveler.dispose()


async def test_dispatch_from_inside_and_back(make_host: Callable[..., Awaitable[Host]]) -> None:
    _a, b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(_a.url) as client:
        traveler = await client.create(TRAVELER)
        assert await traveler.send("go", {"to": b.url}) == "leaving"
        assert await traveler.send("where") == "b"
        assert await traveler.send("go", {"to": "a"}) == "leaving"
        assert await traveler.send("where") == "a"
        log = await traveler.send("log")
        assert log[-1] == "arrival<-b#2@a"
        # a dispatch to the host it is on is a no-op
        assert await traveler.send("go", {"to": "a"}) == "leaving"
        assert await traveler.send("where") == "a"


async def test_clone_makes_a_second_identity_and_keeps_the_original(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    _a, b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(_a.url) as client:
        original = await client.create(TRAVELER)
        await original.send("increment")
        copy = await original.clone("b")
        assert copy.agent_id != original.agent_id
        assert await copy.send("where") == "b"
        assert await original.send("where") == "a"
        assert await copy.send("increment") == 2, "the copy starts from the original's state"
        assert await original.send("increment") == 2
        copy_log = await copy.send("log")
        assert copy_log == ["creation@a", "cloning@a", "clone<-a@b"]
        assert (await original.send("log"))[-1] == f"cloned:{copy.agent_id}@a"
        # from inside, to the same host by default
        local_id = await original.send("clone", {})
        assert await client.proxy(local_id).send("where") == "a"
        assert len(b.supervisor.list()) == 1


async def test_retract_pulls_a_paglet_home(make_host: Callable[..., Awaitable[Host]]) -> None:
    a, b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(a.url) as ca, AsyncHostClient(b.url) as cb:
        traveler = await cb.create(TRAVELER)
        back = await ca.retract(traveler)
        assert back.client.url == a.url
        assert await back.send("where") == "a"
        assert (await back.send("log"))[-2:] == [f"retracting->{a.url}@b", "arrival<-b#1@a"]
        # and out again through the proxy's own retract, to b
        await back.retract("b")
        assert await back.send("where") == "b"


async def test_an_itinerary_tours_the_mesh(make_host: Callable[..., Awaitable[Host]]) -> None:
    a, _b, _c = await _mesh(make_host, "a", "b", "c")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        assert await traveler.send("tour", {"hosts": ["b", "c", "a"]}) == "touring"

        async def toured() -> bool:
            report = await traveler.send("tour_log")
            return bool(report["done"])

        await wait_for(toured, 15, "the tour ended")
        report = await traveler.send("tour_log")
        assert report["seen"] == ["visit:b", "visit:c", "visit:a"]
        assert await traveler.send("where") == "a"


async def test_an_unmet_ticket_or_a_bad_target_leaves_the_paglet_running(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a, _b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("increment")
        with pytest.raises(TransferError, match=r"lacks tags \['gpu'\]"):
            await traveler.dispatch("b", TransferTicket(tags=("gpu",)))
        with pytest.raises(TransferError, match="code version"):
            await traveler.dispatch("b", TransferTicket(code_version="999.0"))
        with pytest.raises(TransferError, match="no host 'nowhere'"):
            await traveler.dispatch("nowhere")
        # refused from inside too: the handler gets the error, the paglet stays
        with pytest.raises(TransferError):
            await traveler.send("go", {"to": "nowhere"})
        assert await traveler.send("increment") == 2
        assert await traveler.send("where") == "a"
        assert len(a.supervisor.list()) == 1
        spool = a.supervisor.spool_dir
        assert not any(spool.glob("*")), "refused envelopes are not left behind"


class Homebody(Paglet[PagletState]):
    """A paglet of a module (``tests``) that only host ``a`` allows."""

    State = PagletState

    def handle_message(self, message: Message) -> str:
        return f"{message.kind} at {self.context.host_name}"


async def test_a_target_that_does_not_allow_the_class_refuses_it(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", allow_modules=("tests",), **FAST)
    strict = await make_host(name="strict", peers=(a.url,), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "joined")
    async with AsyncHostClient(a.url) as client:
        homebody = await client.create("tests.test_movement:Homebody")
        with pytest.raises(TransferError, match="--allow-module tests"):
            await homebody.dispatch("strict")
        assert await homebody.send("where") == "where at a"
        assert strict.supervisor.list() == []


async def test_a_refused_move_its_host_cannot_record_still_leaves_the_paglet_here(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await make_host(name="a", allow_modules=("tests",), **FAST)
    await make_host(name="strict", peers=(a.url,), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "joined")
    real = AsyncStore.set_phase

    async def no_room_for_failures(
        store: AsyncStore,
        transfer_id: str,
        role: TransferRole,
        phase: TransferPhase,
        detail: dict[str, Any] | None = None,
    ) -> TransferRecord:
        if phase is TransferPhase.FAILED:
            raise StorageError("could not record the transfer: no space left on the disk")
        return await real(store, transfer_id, role, phase, detail)

    monkeypatch.setattr(AsyncStore, "set_phase", no_room_for_failures)
    async with AsyncHostClient(a.url) as client:
        homebody = await client.create("tests.test_movement:Homebody")
        # the refusal is the reason the caller hears, not the bookkeeping after it
        with pytest.raises(TransferError, match="--allow-module tests"):
            await homebody.dispatch("strict")
        assert await homebody.send("where") == "where at a"
    # the row still says `sending`: at the next start the target will say it never
    # committed, and no stale envelope may be there to be restored in its place
    assert not any(a.supervisor.spool_dir.glob("*.out")), "no envelope left behind"


async def test_registered_files_travel_and_land_before_arrival(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    _a, _b = await _mesh(make_host, "a", "b")
    kept, moved = tmp_path / "kept.txt", tmp_path / "moved.txt"
    kept.write_text("stays at home too")
    moved.write_text("only travels")
    async with AsyncHostClient(_a.url) as client:
        traveler = await client.create(FREE_TRAVELER)
        assert await traveler.send("carry", {"path": str(kept)}) == "kept.txt"
        assert await traveler.send("carry", {"path": str(moved), "mode": "move"}) == "moved.txt"
        await traveler.dispatch("b")
        files = await traveler.send("files")
        assert files == {"kept.txt": "stays at home too", "moved.txt": "only travels"}
        assert kept.exists(), "copy mode keeps the source file"
        # the old process deletes it as it leaves, after the dispatch has returned
        await wait_for(lambda: not moved.exists(), 10, "move mode deletes the source")
        with pytest.raises(Exception, match="not a regular file"):
            await traveler.send("carry", {"path": str(tmp_path / "missing")})


async def test_messages_sent_during_a_move_all_arrive(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    _a, _b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(_a.url) as client:
        traveler = await client.create(TRAVELER)
        sends = [asyncio.ensure_future(traveler.send("increment")) for _ in range(20)]
        await asyncio.sleep(0)
        move = asyncio.ensure_future(client.proxy(traveler.agent_id).dispatch("b"))
        sends += [
            asyncio.ensure_future(client.proxy(traveler.agent_id).send("increment"))
            for _ in range(20)
        ]
        replies = await asyncio.gather(*sends)
        await move
        assert sorted(replies) == list(range(1, 41)), "every message handled exactly once"
        assert await traveler.send("where") == "b"


def _forged(
    class_path: str, state_class_path: str, state: bytes, transfer_id: str, agent_id: str = "f" * 32
) -> bytes:
    """An envelope written by hand, as an attacker would."""
    header = {
        "agent_id": agent_id,
        "class_path": class_path,
        "state_class_path": state_class_path,
        "transfer_id": transfer_id,
        "kind": "dispatch",
        "hops": 1,
        "origin": "evil",
        "origin_url": "http://127.0.0.1:1",
        "source": "evil",
        "created": 0.0,
        "ticket": {},
        "meta": {},
        "state_len": len(state),
        "blobs": [],
        "files": [],
    }
    raw = json.dumps(header).encode()
    return b"PGLE" + struct.pack(">HI", 1, len(raw)) + raw + state


@pytest.mark.parametrize(
    ("class_path", "state_class_path", "refusal"),
    [
        ("os:system", "examples.travel:TravelerState", "ClassNotAllowedError"),
        ("subprocess:Popen", "examples.travel:TravelerState", "ClassNotAllowedError"),
        ("examples.travel:Traveler", "builtins:eval", "ClassNotAllowedError"),
    ],
)
async def test_a_forged_envelope_naming_another_global_is_refused(
    host: Host, tmp_path: Path, class_path: str, state_class_path: str, refusal: str
) -> None:
    marker = tmp_path / "pwned"
    state = json.dumps({"log": [f"touch {marker}"]}).encode()
    body = _forged(class_path, state_class_path, state, "t" * 32)
    headers = _transfer_headers("t" * 32)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{host.url}/v1/transfers", data=body, headers=headers) as resp,
    ):
        error = (await resp.json())["error"]
    assert resp.status == 403
    assert error["type"] == refusal
    assert "--allow-module" in error["message"], "the error says what to do"
    assert not marker.exists()
    assert host.supervisor.list() == []
    assert not any(host.transfers.receiver.inbox.glob("*")), "nothing kept"


async def test_a_transfer_from_another_mesh_version_is_refused(host: Host) -> None:
    body = _forged("examples.travel:Traveler", "examples.travel:TravelerState", b"{}", "u" * 32)
    headers = {
        "Content-Type": "application/vnd.paglets.envelope",
        "X-Paglets-Transfer": "u" * 32,
        "X-Paglets-Mesh-Version": "other",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{host.url}/v1/transfers", data=body, headers=headers) as resp,
    ):
        error = (await resp.json())["error"]
    assert resp.status == 409
    assert error["type"] == "TransferError"
    assert "--mesh-version" in error["message"]


def _forged_spec(
    agent_id: str,
    class_path: str,
    state_class_path: str,
    transfer_id: str = "f" * 32,
    *,
    origin: str = "a",
) -> EnvelopeSpec:
    """The header fields of an envelope a test makes by hand, sent by host ``origin``."""
    return EnvelopeSpec(
        agent_id=agent_id,
        class_path=class_path,
        state_class_path=state_class_path,
        transfer_id=transfer_id,
        kind="dispatch",
        hops=0,
        origin=origin,
        origin_url="http://127.0.0.1:1",
        source=origin,
        created=0.0,
    )


class Forger(Paglet[PagletState]):
    """Tries to make its host send an envelope of another paglet (tests only)."""

    State = PagletState

    def handle_message(self, message: Message) -> Any:
        spool = Path(message.args["spool"])
        spool.mkdir(parents=True, exist_ok=True)
        path = spool / "forged.out"
        spec = _forged_spec(
            message.args["victim"], "examples.travel:Traveler", "examples.travel:TravelerState"
        )
        write_envelope(path, spec, TravelerState(), (), sync=False)
        inline = {
            "file": None,  # the host reads the file
            "inline": base64.b64encode(path.read_bytes()).decode(),
            "garbage": "not base64!",
            "huge": "A" * (INLINE_MAX * 2),
        }[message.args["how"]]
        link = self.context.link  # type: ignore[attr-defined]
        return link.call(
            "transfer.send",
            transfer_id=spec.transfer_id,
            kind="dispatch",
            target=message.args["target"],
            envelope=str(path),
            agent_id=message.args["victim"],
            ticket=None,
            body=inline,
        )


@pytest.mark.parametrize(
    ("how", "refusal"),
    [
        ("file", "may only send itself"),
        ("inline", "may only send itself"),
        ("garbage", "must be base64"),
        ("huge", "at most 65536 bytes"),
    ],
)
async def test_a_paglet_cannot_make_its_host_send_another_paglet(
    make_host: Callable[..., Awaitable[Host]], how: str, refusal: str
) -> None:
    a = await make_host(name="a", allow_modules=("tests",), **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "joined")
    async with AsyncHostClient(a.url) as client:
        victim = await client.create(TRAVELER)
        forger = await client.create("tests.test_movement:Forger")
        args = {
            "victim": victim.agent_id,
            "target": "b",
            "spool": str(a.supervisor.spool_dir),
            "how": how,
        }
        with pytest.raises(RequestError, match=refusal):
            await forger.send("forge", args)
        assert await victim.send("where") == "a"
        assert b.supervisor.list() == []
        assert not any(a.supervisor.spool_dir.glob("*.out"))


async def test_a_registered_file_gone_before_the_dispatch_fails_it_cleanly(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    a, b = await _mesh(make_host, "a", "b")
    doomed = tmp_path / "doomed.txt"
    doomed.write_text("here for now")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(FREE_TRAVELER)
        await traveler.dispatch("b")  # made b's spool (and a's, earlier)
        await traveler.dispatch("a")
        assert await traveler.send("carry", {"path": str(doomed)}) == "doomed.txt"
        doomed.unlink()
        with pytest.raises(TransferError, match=r"registered file .*doomed\.txt is gone"):
            await traveler.dispatch("b")
        assert await traveler.send("where") == "a", "it stays where it was"
    assert not any(a.supervisor.spool_dir.glob("*")), "no envelope left behind"
    assert b.supervisor.list() == []


async def test_a_move_its_host_cannot_journal_fails_cleanly(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await _mesh(make_host, "a", "b")

    async def disk_full(_self: AsyncStore, _row: TransferRecord) -> None:
        raise StorageError("could not journal the transfer: no space left on the disk")

    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("increment")
        monkeypatch.setattr(AsyncStore, "begin_source", disk_full)
        with pytest.raises(TransferError, match=r"cannot journal .*no space left"):
            await traveler.dispatch("b")
        assert await traveler.send("where") == "a", "it stays where it was"
        assert await traveler.send("increment") == 2, "and goes on from its own state"
    # an envelope left in the spool would be taken, at the next start, for the
    # paglet's latest state, and would replace the state it has since
    assert not any(a.supervisor.spool_dir.glob("*.out")), "no envelope left behind"
    assert b.supervisor.list() == []


def _transfer_headers(transfer_id: str) -> dict[str, str]:
    """The headers of a transfer a test posts by hand, to a host of mesh version ``dev``."""
    return {"Content-Type": MEDIA_TYPE, TRANSFER_HEADER: transfer_id, MESH_HEADER: "dev"}


async def _post_transfer(url: str, body: bytes, transfer_id: str) -> tuple[int, dict[str, Any]]:
    headers = _transfer_headers(transfer_id)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/transfers", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_repeated_transfer_is_answered_as_before_and_never_runs_twice(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a, b = await _mesh(make_host, "a", "b")
    state = json.dumps({"count": 7}).encode()
    body = _forged("examples.travel:Traveler", "examples.travel:TravelerState", state, "r" * 32)
    first = await _post_transfer(b.url, body, "r" * 32)
    assert first[0] == 200
    assert first[1]["agent_id"] == "f" * 32
    again = await _post_transfer(b.url, body, "r" * 32)  # the paglet runs here now
    assert again[0] == 200
    assert again[1]["agent_id"] == "f" * 32
    async with AsyncHostClient(b.url) as client:
        traveler = client.proxy("f" * 32)
        assert await traveler.send("increment") == 8
        await traveler.dispatch("a")
        assert await traveler.send("where") == "a"
    late = await _post_transfer(b.url, body, "r" * 32)  # after it left again
    assert late[0] == 200
    assert late[1]["agent_id"] == "f" * 32
    assert [r.agent_id for r in b.supervisor.list()] == []
    assert [r.agent_id for r in a.supervisor.list()] == ["f" * 32]
    async with aiohttp.ClientSession() as session:
        abort = {"agent_id": "f" * 32, "source": "evil"}
        async with session.post(f"{b.url}/v1/transfers/{'s' * 32}/abort", json=abort) as resp:
            assert (await resp.json())["phase"] == "aborted"
    aborted = _forged("examples.travel:Traveler", "examples.travel:TravelerState", state, "s" * 32)
    status, refused = await _post_transfer(b.url, aborted, "s" * 32)
    assert status == 409
    assert "aborted by its source" in refused["error"]["message"]
    assert [r.agent_id for r in a.supervisor.list()] == ["f" * 32]


async def test_a_transfer_repeated_while_its_paglet_starts_leaves_its_envelope(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    _a, b = await _mesh(make_host, "a", "b")
    state = json.dumps({"start_delay": 0.5}).encode()
    body = _forged(
        "pagletstest.testing:SlowStarter", "pagletstest.testing:SlowStartState", state, "w" * 32
    )
    first = await _post_transfer(b.url, body, "w" * 32)
    assert first[0] == 200
    assert first[1]["started"] is False, "answered at the commit, starting meanwhile"
    again = await _post_transfer(b.url, body, "w" * 32)  # refused by the id, found as seen
    assert again == first
    async with AsyncHostClient(b.url) as client:
        assert await client.proxy("f" * 32).send("ping") == ["arrived", "ping"]


# -- a large envelope, sent while its paglet's process still writes it --------------

BULK = 8 * 1024 * 1024  # over SEND_WHILE_WRITING: sent while it is written
SLOW_FILE = 128 * 1024 * 1024  # sparse; hashing and copying it keeps the writer busy


async def _writing(host: Host, timeout: float = 20.0) -> str:
    """The id of the first transfer ``host`` sends while its paglet writes the envelope."""
    await wait_for(lambda: bool(host.transfers._growing), timeout, "a growing envelope")
    return next(iter(host.transfers._growing))


async def _busy_traveler(client: AsyncHostClient, slow: Path) -> AsyncPagletProxy:
    traveler = await client.create(FREE_TRAVELER)
    await traveler.send("increment")
    assert await traveler.send("payload", {"size": BULK}) == BULK
    with slow.open("wb") as f:
        f.truncate(SLOW_FILE)
    await traveler.send("carry", {"path": str(slow)})
    return traveler


async def test_a_large_envelope_is_sent_while_written_and_arrives_whole(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await _mesh(make_host, "a", "b")
    followed: list[str] = []
    real = TransferService._send_growing

    async def noted(self: TransferService, agent_id: str, envelope: Path, args: Any) -> Any:
        followed.append(str(args["transfer_id"]))
        return await real(self, agent_id, envelope, args)

    monkeypatch.setattr(TransferService, "_send_growing", noted)
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("payload", {"size": BULK})
        digest = await traveler.send("digest")
        await traveler.dispatch("b")
        assert await traveler.send("where") == "b"
        assert await traveler.send("digest") == digest
    [transfer_id] = followed
    row = await b.transfers.store().get_transfer(transfer_id, TransferRole.TARGET)
    assert row is not None
    assert row.phase in (TransferPhase.COMMITTED, TransferPhase.STARTED)
    assert not a.transfers._growing


async def test_an_envelope_that_fails_while_being_sent_leaves_the_paglet_here(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    a, b = await _mesh(make_host, "a", "b")
    slow = tmp_path / "slow.bin"
    async with AsyncHostClient(a.url) as client:
        traveler = await _busy_traveler(client, slow)
        digest = await traveler.send("digest")
        moving = asyncio.ensure_future(traveler.dispatch("b"))
        await _writing(a)
        with slow.open("ab") as f:  # it changes while the paglet packs it
            f.write(b"!")
        with pytest.raises(PagletError, match="changed while it was being packed"):
            await moving
        assert await traveler.send("where") == "a", "it stays where it was"
        assert await traveler.send("digest") == digest
        assert await traveler.send("increment") == 2, "and goes on from its own state"
    assert not list(a.supervisor.spool_dir.iterdir()), "no envelope left behind"
    assert await a.transfers.store().transfers(TransferRole.SOURCE) == [], "nor journaled"
    assert b.supervisor.list() == []


async def test_a_paglet_that_dies_while_its_envelope_is_sent_is_not_sent(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    a, b = await _mesh(make_host, "a", "b")
    async with AsyncHostClient(a.url) as client:
        traveler = await _busy_traveler(client, tmp_path / "slow.bin")
        pid = a.supervisor.get(traveler.agent_id).handle.pid  # type: ignore[union-attr]
        moving = asyncio.ensure_future(traveler.dispatch("b"))
        await _writing(a)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(PagletError):
            await moving
        # a crash like any other (restarted, or not, by its policy), and only here
        assert a.supervisor.get(traveler.agent_id).status is PagletStatus.CRASHED
    await wait_for(lambda: not a.transfers._growing, 10, "the send given up")
    assert not list(a.supervisor.spool_dir.iterdir()), "no envelope left behind"
    assert await a.transfers.store().transfers(TransferRole.SOURCE) == [], "nor journaled"
    assert b.supervisor.list() == []


class GrowingForger(Paglet[PagletState]):
    """Announces a growing envelope its host must refuse (tests only)."""

    State = PagletState

    def handle_message(self, message: Message) -> Any:
        spool = Path(message.args["spool"])
        spool.mkdir(parents=True, exist_ok=True)
        transfer_id = "g" * 32
        envelope = spool / f"{transfer_id}.out"
        tmp = spool / f".{transfer_id}.out.0123.tmp"
        spec = _forged_spec(
            message.args.get("carries", self.context.agent_id),
            "tests.test_movement:GrowingForger",
            "paglets.core.state:PagletState",
            transfer_id,
        )
        write_envelope(tmp, spec, PagletState(), (), sync=False)
        size = tmp.stat().st_size
        link = self.context.link  # type: ignore[attr-defined]
        sending = link.begin(
            "transfer.send",
            transfer_id=transfer_id,
            kind="dispatch",
            target=message.args["target"],
            envelope=str(envelope),
            agent_id=self.context.agent_id,
            ticket=None,
            growing=str(message.args.get("tmp", tmp)),
            size=message.args.get("size", size),
        )
        tmp.rename(envelope)
        link.call("transfer.written", transfer_id=transfer_id)
        return link.wait(sending, "transfer.send")


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        ({"carries": "someone-else"}, "may only send itself"),
        ({"size": 12345}, "not the 12345 it said"),
        ({"size": "big"}, "with its whole size"),
        ({"tmp": "precious"}, "temporary file of the envelope it names"),
    ],
)
async def test_a_growing_envelope_is_checked_like_any_other(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path, args: dict[str, Any], refusal: str
) -> None:
    precious = tmp_path / "precious.txt"  # a file that is not the paglet's to send
    precious.write_text("keep me")
    if "tmp" in args:
        args = {"tmp": str(precious)}
    a = await make_host(name="a", allow_modules=("tests",), **FAST)
    b = await make_host(name="b", peers=(a.url,), allow_modules=("tests",), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "joined")
    async with AsyncHostClient(a.url) as client:
        forger = await client.create("tests.test_movement:GrowingForger")
        message = {"target": "b", "spool": str(a.supervisor.spool_dir), **args}
        with pytest.raises(RequestError, match=refusal):
            await forger.send("forge", message)
        assert not list(a.supervisor.spool_dir.iterdir()), "no envelope left behind"
        assert b.supervisor.list() == []
    assert precious.read_text() == "keep me", "neither sent nor removed"
