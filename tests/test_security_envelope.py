"""What an arriving movement envelope may do: forged envelopes against real hosts.

An envelope is written by hand here, as an attacker holding the mesh key would,
and posted to ``/v1/transfers``. Its header may not name a path for an id, its
files land only in the paglet's own files directory, it may not register host
files, its header is bounded and parsed off the event loop, and an envelope that
could never start is refused before it is committed, so its source keeps it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from paglets import AsyncHostClient, Message, Paglet, PagletState
from tests.conftest import wait_for
from tests.test_movement import _forged_spec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets import Host

FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
KEEPER = "tests.test_security_envelope:Keeper"
KEEPER_STATE = "tests.test_security_envelope:KeeperState"


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
        if message.kind == "go":
            self.dispatch(message.args["to"])
            return None
        if message.kind == "notes":
            return self.state.notes
        return message.not_handled()


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
    headers = {
        "Content-Type": "application/vnd.paglets.envelope",
        "X-Paglets-Transfer": transfer_id,
        "X-Paglets-Mesh-Version": "dev",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{host.url}/v1/transfers", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def _tree(root: Path, *, skip: Path | None = None) -> set[Path]:
    """Every path under ``root`` (outside ``skip``)."""
    return {p for p in root.rglob("*") if skip is None or not p.is_relative_to(skip)}


def _nothing_kept(host: Host) -> None:
    assert host.supervisor.list() == []
    inbox = host.transfers.receiver.inbox
    assert not inbox.exists() or not any(inbox.iterdir()), "nothing in the inbox"


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
