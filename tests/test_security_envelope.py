"""What an arriving movement envelope may do: forged envelopes against real hosts.

An envelope is written by hand here, as an attacker holding the mesh key would,
and posted to ``/v1/transfers``. Its header may not name a path for an id, its
files land only in the paglet's own files directory, it may not register host
files, its header is bounded and parsed off the event loop, and an envelope that
could never start is refused before it is committed, so its source keeps it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from paglets import AsyncHostClient, Message, Paglet, PagletState, TransferError
from paglets.persistence.records import TransferRole
from paglets.wire.envelope import MAX_FILE_DEPTH, MAX_FILE_NAME, MAX_FILES, PARSE_OFF_LOOP
from paglets.wire.envelope_write import write_envelope
from tests.conftest import wait_for
from tests.test_movement import _forged_spec, _post_transfer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from paglets import Host

FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
KEEPER = "tests.test_security_envelope:Keeper"
KEEPER_STATE = "tests.test_security_envelope:KeeperState"
FORGER = "tests.test_security_envelope:SelfForger"
OTHER_STATE = "tests.test_security_envelope:OtherState"


@dataclass
class KeeperState(PagletState):
    notes: list[str] = field(default_factory=list)


class Keeper(Paglet[KeeperState]):
    """Says which files it holds and what is in them; moves on when asked (tests only)."""

    State = KeeperState

    def handle_message(self, message: Message) -> Any:
        if message.kind == "files":
            return {
                name: [str(path), path.read_text() if path.is_file() else None]
                for name, path in self.context.files.items()
            }
        if message.kind == "count":
            return len(self.context.files)
        if message.kind == "go":
            self.dispatch(message.args["to"])
            return None
        if message.kind == "notes":
            return self.state.notes
        return message.not_handled()


@dataclass
class OtherState(PagletState):
    count: int = 0


@dataclass
class PickyState(PagletState):
    count: int = 0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise RuntimeError("count must not be negative")  # not a ValueError


class Picky(Paglet[PickyState]):
    """Its state refuses a negative count when built (tests only)."""

    State = PickyState


class SelfForger(Paglet[KeeperState]):
    """Has its host send an envelope of itself that can never start (tests only)."""

    State = KeeperState

    def handle_message(self, message: Message) -> Any:
        if message.kind == "notes":
            return self.state.notes
        spool = Path(message.args["spool"])
        spool.mkdir(parents=True, exist_ok=True)
        transfer_id = uuid.uuid4().hex
        path = spool / f"{transfer_id}.out"
        # the header names a state class that is not the class's State
        spec = _forged_spec(self.context.agent_id, FORGER, OTHER_STATE, transfer_id)
        write_envelope(path, spec, OtherState(), (), sync=False)
        link = self.context.link  # type: ignore[attr-defined]
        return link.call(
            "transfer.send",
            transfer_id=transfer_id,
            kind="dispatch",
            target=message.args["target"],
            envelope=str(path),
            agent_id=self.context.agent_id,
            ticket=None,
            body=None,
        )


def _envelope(
    agent_id: str = "forged-1",
    *,
    class_path: str = KEEPER,
    state_class_path: str = KEEPER_STATE,
    state: bytes = b'{"notes": ["forged"]}',
    files: dict[str, bytes] | None = None,
    transfer_id: str = "e" * 32,
    **fields: Any,
) -> bytes:
    """An envelope written by hand: ``fields`` replace header fields as they are."""
    files = files or {}
    spec = _forged_spec(agent_id, class_path, state_class_path, transfer_id)
    header = dataclasses.asdict(spec) | {
        "state_len": len(state),
        "blobs": [],
        "files": [
            {
                "name": name,
                "size": len(data),
                "mode": "move",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for name, data in files.items()
        ],
    }
    raw = json.dumps(header | fields).encode()
    return b"PGLE" + struct.pack(">HI", 1, len(raw)) + raw + state + b"".join(files.values())


async def _post(host: Host, body: bytes, transfer_id: str = "e" * 32) -> tuple[int, Any]:
    return await _post_transfer(host.url, body, transfer_id)


def _tree(root: Path, *, skip: Path | None = None) -> set[Path]:
    """Every path under ``root`` (outside ``skip``)."""
    return {p for p in root.rglob("*") if skip is None or not p.is_relative_to(skip)}


def _nothing_kept(host: Host) -> None:
    assert host.supervisor.list() == []
    inbox = host.transfers.receiver.inbox
    assert not inbox.exists() or not any(inbox.iterdir()), "nothing in the inbox"


async def _nothing_committed(host: Host) -> None:
    _nothing_kept(host)
    assert await host.transfers.store().transfers(TransferRole.TARGET) == [], "nothing journaled"


# -- item 2: the header's ids are not paths ------------------------------------------------


@pytest.mark.parametrize("how", ["absolute", "climbing", "dot-dot"])
async def test_an_envelope_whose_agent_id_is_a_path_writes_nothing_outside(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path, how: str
) -> None:
    state_dir = tmp_path / "state"
    host = await make_host(name="b", state_dir=state_dir, allow_modules=("tests",), **FAST)
    outside = tmp_path / "outside"
    agent_id = {"absolute": str(outside), "climbing": "../../../outside", "dot-dot": ".."}[how]
    before = _tree(tmp_path, skip=state_dir)
    body = _envelope(agent_id, files={"pwn.py": b"import os\n"})
    status, answer = await _post(host, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "EnvelopeError"
    assert "agent id" in answer["error"]["message"]
    assert _tree(tmp_path, skip=state_dir) == before, "nothing written outside the state dir"
    _nothing_kept(host)


async def test_an_envelope_whose_transfer_id_is_a_path_is_refused(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    host = await make_host(name="b", state_dir=state_dir, allow_modules=("tests",), **FAST)
    before = _tree(tmp_path, skip=state_dir)
    status, answer = await _post(host, _envelope(transfer_id="../../../v"), "../../../v")
    assert status == 400, answer
    assert "transfer id" in answer["error"]["message"]
    assert _tree(tmp_path, skip=state_dir) == before
    _nothing_kept(host)


# -- item 4: registrations of host files never come over the wire -----------------------


async def test_an_envelope_may_not_register_a_host_file(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    host = await make_host(name="b", allow_modules=("tests",), **FAST)
    victim = tmp_path / "victim.txt"
    victim.write_text("secret")
    meta = {"files": [{"name": "loot", "path": str(victim), "mode": "move"}]}
    status, answer = await _post(host, _envelope(meta=meta))
    assert status == 400, answer
    assert "meta.files" in answer["error"]["message"]
    _nothing_kept(host)
    assert victim.read_text() == "secret"


async def test_an_arriving_paglet_holds_only_the_files_it_carried(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    b = await make_host(name="b", allow_modules=("tests",), **FAST)
    c = await make_host(name="c", peers=(b.url,), allow_modules=("tests",), **FAST)
    await wait_for(lambda: len(b.mesh.hosts(online=True)) == 2, 10, "joined")
    status, answer = await _post(b, _envelope(files={"sub/carried.txt": b"mine"}))
    assert status == 200, answer
    async with AsyncHostClient(b.url) as client:
        keeper = client.proxy("forged-1")
        held = await keeper.send("files")
        assert held == {
            "sub/carried.txt": [
                str(b.supervisor.files_root / "forged-1" / "sub/carried.txt"),
                "mine",
            ]
        }
        await keeper.send("go", {"to": "c"})
    async with AsyncHostClient(c.url) as client:
        held = await client.proxy("forged-1").send("files")
    assert held == {
        "sub/carried.txt": [str(c.supervisor.files_root / "forged-1" / "sub/carried.txt"), "mine"]
    }


# -- item 14: the header is bounded, and a long one is parsed off the loop ------------------


@pytest.mark.parametrize(
    ("files", "refusal"),
    [
        ({f"f{i}": b"" for i in range(MAX_FILES + 1)}, f"at most {MAX_FILES} file entries"),
        ({"/".join("d" * MAX_FILE_DEPTH) + "/f": b""}, f"at most {MAX_FILE_DEPTH} parts"),
        ({"n" * (MAX_FILE_NAME + 1): b""}, f"{MAX_FILE_NAME} characters"),
        ({"d/" + "n" * 201: b""}, "each part at most 200 bytes"),
    ],
    ids=["count", "depth", "length", "part"],
)
async def test_a_manifest_over_the_caps_is_refused_before_anything_is_written(
    make_host: Callable[..., Awaitable[Host]], files: dict[str, bytes], refusal: str
) -> None:
    host = await make_host(name="b", allow_modules=("tests",), **FAST)
    status, answer = await _post(host, _envelope(files=files))
    assert status == 400, answer
    assert answer["error"]["type"] == "EnvelopeError"
    assert refusal in answer["error"]["message"]
    _nothing_kept(host)
    assert not host.supervisor.files_root.exists() or not any(host.supervisor.files_root.iterdir())


async def test_a_manifest_at_the_caps_arrives(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="b", allow_modules=("tests",), **FAST)
    deep = "/".join(["d" * 44] * (MAX_FILE_DEPTH - 1))  # 7 parts, 314 characters
    files = {f"{deep}/{i:0{MAX_FILE_NAME - len(deep) - 1}}": b"x" for i in range(MAX_FILES)}
    assert {len(name) for name in files} == {MAX_FILE_NAME}
    status, answer = await _post(host, _envelope(files=files))
    assert status == 200, answer
    async with AsyncHostClient(host.url) as client:
        keeper = client.proxy("forged-1")
        assert await keeper.send("count") == MAX_FILES
        await keeper.deactivate()  # a checkpoint naming every file still fits
        assert await keeper.send("count") == MAX_FILES


async def test_a_huge_header_does_not_stall_the_host(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    """A header of ~1 MiB of deep file names: once ~6 s of the loop here, now refused."""
    host = await make_host(name="b", allow_modules=("tests",), **FAST)
    deep = "/".join(["a"] * 1020)
    files = {f"{deep}/{i}": b"" for i in range(480)}
    body = _envelope(files=files)
    assert len(body) > PARSE_OFF_LOOP * 15
    latencies: list[float] = []
    posted = asyncio.Event()

    async def poll_health(session: aiohttp.ClientSession) -> None:
        while not posted.is_set():
            began = time.monotonic()
            async with session.get(f"{host.url}/health") as resp:
                assert resp.status == 200
            latencies.append(time.monotonic() - began)

    async with aiohttp.ClientSession() as session:
        polling = asyncio.create_task(poll_health(session))
        await wait_for(lambda: len(latencies) >= 3, 10, "/health answering")
        try:
            status, answer = await _post(host, body)
        finally:
            posted.set()
            await polling
    assert status == 400, answer
    assert f"at most {MAX_FILE_DEPTH} parts" in answer["error"]["message"]
    # /health kept answering while the header was read: no request waited on a stalled loop
    # (generous: the old parse held the loop for over 6 s on this machine)
    assert max(latencies) < 2.0, latencies


# -- item 15: an envelope that could never start is refused before it is committed ---------

_SHA_OF_NOTHING = hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("forged", "status", "refusal"),
    [
        ({"class_path": KEEPER_STATE}, 400, "not a subclass of paglets.core.paglet.Paglet"),
        ({"class_path": "tests.test_security_envelope:Nowhere"}, 400, "has no attribute Nowhere"),
        ({"state_class_path": OTHER_STATE}, 400, "holds state of class"),
        ({"state": b'{"notes": 5}'}, 400, "notes"),
        ({"state": b"[1, 2]"}, 400, "must be a JSON object"),
        ({"state": b"{not json"}, 400, "not UTF-8 JSON"),
        ({"files": {"f.txt": b"x"}, "sha256": _SHA_OF_NOTHING}, 400, "fails its SHA-256"),
        (
            {
                "class_path": "tests.test_security_envelope:Picky",
                "state_class_path": "tests.test_security_envelope:PickyState",
                "state": b'{"count": -1}',
            },
            409,
            "count must not be negative",
        ),
    ],
    ids=[
        "not-a-paglet",
        "no-class",
        "other-state",
        "bad-state",
        "not-object",
        "not-json",
        "sha",
        "state-raises",
    ],
)
async def test_an_envelope_that_cannot_start_is_refused_before_the_commit(
    make_host: Callable[..., Awaitable[Host]],
    forged: dict[str, Any],
    status: int,
    refusal: str,
) -> None:
    host = await make_host(name="b", allow_modules=("tests",), **FAST)
    sha256 = forged.pop("sha256", None)
    body = _envelope(**forged)
    if sha256 is not None:  # the manifest's digest of f.txt, replaced
        body = body.replace(hashlib.sha256(b"x").hexdigest().encode(), sha256.encode())
    got, answer = await _post(host, body)
    assert got == status, answer
    assert refusal in answer["error"]["message"]
    assert "cannot start the paglet" in answer["error"]["message"]
    assert answer["error"]["traceback"] is None
    await _nothing_committed(host)


async def test_the_source_keeps_a_paglet_its_target_cannot_start(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", allow_modules=("tests",), **FAST)
    b = await make_host(name="b", peers=(a.url,), allow_modules=("tests",), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "joined")
    async with AsyncHostClient(a.url) as client:
        forger = await client.create(FORGER, {"notes": ["mine"]})
        args = {"target": "b", "spool": str(a.supervisor.spool_dir)}
        with pytest.raises(TransferError, match="holds state of class"):
            await forger.send("forge", args)
        assert await forger.send("notes") == ["mine"], "alive and well where it was"
    assert [r.agent_id for r in a.supervisor.list()] == [forger.agent_id]
    await _nothing_committed(b)
