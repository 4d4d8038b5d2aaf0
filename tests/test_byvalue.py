"""Paglet classes defined in a script or a notebook, shipped by value (issue 19).

The classes here are made the way a notebook cell makes them: source executed in
a module object that no other process can import. Hosts are real: embedded
`Host` objects, and ``paglets-host`` processes with and without
``--trust-code-by-value``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import pickle
import signal
import subprocess
import types
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import cloudpickle
import pytest

from examples.counter import Counter
from paglets import (
    AsyncHostClient,
    CodeNotTrustedError,
    ConfigurationError,
    Host,
    HostClient,
    Paglet,
    RequestError,
    StorageError,
    TransferError,
)
from paglets.byvalue import store as store_module
from paglets.byvalue.pickling import class_reference, is_importable, load_class
from paglets.byvalue.refs import CodeRef, code_hash, parse_code_ref
from paglets.byvalue.store import CodeStore
from paglets.runtime import ipc
from paglets.runtime.classes import paglet_class
from tests.conftest import wait_for
from tests.hostproc import HOST_CMD, env_without_key
from tests.test_movement import _forged, _transfer_headers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

KEY = "k-" + "5" * 30
FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}

CELL = """
from dataclasses import dataclass, field
from paglets import Message, Paglet, PagletState


@dataclass
class NoteState(PagletState):
    notes: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


class Notebook(Paglet[NoteState]):
    State = NoteState

    def on_creation(self, event):
        self.state.hosts.append(event.host_name)

    def on_arrival(self, event):
        self.state.hosts.append(event.host_name)

    def handle_message(self, message: Message):
        if message.kind == "add":
            self.state.notes.append(message.args["text"])
        if message.kind == "spawn":  # a paglet creating one of a class by value
            worker = self.context.create(Notebook, NoteState(notes=["from a paglet"]))
            return worker.agent_id
        return {"notes": self.state.notes, "hosts": self.state.hosts}
"""


def notebook_cell() -> types.ModuleType:
    """A fresh module holding `CELL`, as a notebook cell defines it: importable by nobody."""
    cell = types.ModuleType(f"cell_{uuid.uuid4().hex[:8]}")
    code = compile(CELL, "<notebook cell>", "exec", dont_inherit=True)  # as a cell: no futures
    exec(code, cell.__dict__)  # noqa: S102 - our own source
    return cell


def _code_files(home: Path) -> list[str]:
    code = home / "code"
    return sorted(p.name for p in code.iterdir()) if code.exists() else []


# -- the reference and the pickled code --------------------------------------------------


def test_an_importable_class_goes_by_path_and_a_cell_class_by_value() -> None:
    assert is_importable(Counter)
    assert class_reference(Counter) == ("examples.counter:Counter", None)
    cell = notebook_cell()
    assert not is_importable(cell.Notebook)
    path, code = class_reference(cell.Notebook)
    assert code is not None
    ref = parse_code_ref(path)
    assert ref == CodeRef(cell.__name__, "Notebook", code_hash(code))
    assert class_reference(cell.Notebook) == (path, code), "pickled once per class"
    assert load_class(ref, code, base=Paglet) is cell.Notebook


def test_code_that_is_not_what_its_reference_says_is_refused() -> None:
    cell = notebook_cell()
    path, code = class_reference(cell.Notebook)
    assert code is not None
    ref = parse_code_ref(path)
    assert ref is not None
    with pytest.raises(RequestError, match="SHA-256"):
        load_class(ref, code + b"x", base=Paglet)
    not_a_class = cloudpickle.dumps(len)
    with pytest.raises(RequestError, match="is a builtin_function_or_method"):
        load_class(CodeRef("m", "C", code_hash(not_a_class)), not_a_class, base=Paglet)
    other = CodeRef("m", "Other", ref.sha256)
    with pytest.raises(RequestError, match=f"holds class {ref.class_path} instead"):
        load_class(other, code, base=Paglet)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("m:C@abc", "not a SHA-256"),
        ("m:C@" + "A" * 64, "not a SHA-256"),
        ("m:@" + "a" * 64, "malformed class path"),
    ],
)
def test_a_malformed_by_value_class_path_is_refused(path: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_code_ref(path)


def test_trusting_code_by_value_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--trust-code-by-value needs an API key"):
        Host(name="a", state_dir=tmp_path, trust_code_by_value=True)
    done = subprocess.run(
        [*HOST_CMD, "--trust-code-by-value", "--state-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_without_key(),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--trust-code-by-value needs an API key" in done.stderr


# -- embedded hosts: the code is this process's own ---------------------------------------


async def test_a_cell_class_runs_on_an_embedded_host_and_survives_deactivation(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="nb", **FAST)
    cell = notebook_cell()
    async with AsyncHostClient(host.url) as client:
        first = await client.create(cell.Notebook, cell.NoteState(notes=["a"]))
        assert await first.send("add", {"text": "b"}) == {"notes": ["a", "b"], "hosts": ["nb"]}
        second = await client.create(cell.Notebook)
        assert await second.send("get") == {"notes": [], "hosts": ["nb"]}
        assert not client._pool.shipped, "nothing went over the network"
        assert len(_code_files(host.config.home)) == 1, "one copy of the code, kept"
        info = await first.info()
        assert info.class_path == class_reference(cell.Notebook)[0]
        await first.checkpoint()
        await first.deactivate()
        assert (await first.info()).status == "inactive"
        assert await first.send("add", {"text": "c"}) == {
            "notes": ["a", "b", "c"],
            "hosts": ["nb"],
        }


async def test_later_children_start_with_the_class_already_rebuilt(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="warm", warm_children=0)
    cell = notebook_cell()
    path, _ = class_reference(cell.Notebook)
    ref = parse_code_ref(path)
    assert ref is not None
    async with AsyncHostClient(host.url) as client:
        probe = await client.create("pagletstest.testing:Probe")
        assert await probe.send("code_built") == []
        await client.create(cell.Notebook)  # its code now goes to the zygote too
        later = await client.create("pagletstest.testing:Probe")
        assert await later.send("code_built") == [ref.sha256], "forked with it built"


async def test_a_cell_class_moves_between_two_embedded_hosts(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "a sees b")
    cell = notebook_cell()
    async with AsyncHostClient(a.url) as client:
        paglet = await client.create(cell.Notebook)
        await paglet.send("add", {"text": "x"})
        await paglet.dispatch("b")
        assert await paglet.send("get") == {"notes": ["x"], "hosts": ["a", "b"]}
        clone = await paglet.clone("a")
        assert (await clone.send("get"))["notes"] == ["x"]
        back = await client.retract(paglet)
        assert (await back.send("get"))["hosts"] == ["a", "b", "a"]
    assert _code_files(b.config.home) == _code_files(a.config.home)


async def test_a_paglet_creates_a_paglet_of_a_cell_class(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="nb", **FAST)
    cell = notebook_cell()
    async with AsyncHostClient(host.url) as client:
        parent = await client.create(cell.Notebook)
        worker = client.proxy(await parent.send("spawn"))
        assert await worker.send("get") == {"notes": ["from a paglet"], "hosts": ["nb"]}


# -- daemons: only with --trust-code-by-value ------------------------------------------


def _keyed(start_host: Callable[..., RunningHost], name: str, *args: str) -> RunningHost:
    return start_host(*args, env=env_without_key(PAGLETS_API_KEY=KEY), name=name)


async def test_a_trusting_daemon_runs_a_cell_class_and_restores_it_after_a_restart(
    start_host: Callable[..., RunningHost],
) -> None:
    host = _keyed(start_host, "trusty", "--trust-code-by-value")
    cell = notebook_cell()
    async with AsyncHostClient(host.url, KEY) as client:
        paglet = await client.create(cell.Notebook)
        await paglet.send("add", {"text": "kept"})
        again = await client.create(cell.Notebook)
        assert len(client._pool.shipped) == 1, "the code went once"
        await again.deactivate()
        assert (await again.send("get"))["hosts"] == ["trusty"], "activated from its checkpoint"
        await paglet.checkpoint()
        [record] = [r for r in await client.hosts() if r.name == "trusty"]
        assert record.trusts_code
    assert len(_code_files(host.ready_file.parent / "state" / "trusty")) == 1
    host.process.send_signal(signal.SIGTERM)
    host.process.wait(30)
    restarted = _keyed(start_host, "trusty", "--trust-code-by-value")
    async with AsyncHostClient(restarted.url, KEY) as client:
        proxy = client.proxy(paglet.agent_id)

        async def restored() -> bool:
            return any(i.agent_id == paglet.agent_id for i in await client.list())

        await wait_for(restored, 20, "the paglet restored")
        assert (await proxy.send("get"))["notes"] == ["kept"]


async def test_a_daemon_that_does_not_trust_code_refuses_it_and_runs_none(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    host = _keyed(start_host, "strict")
    cell = notebook_cell()
    async with AsyncHostClient(host.url, KEY) as client:
        with pytest.raises(CodeNotTrustedError, match="--trust-code-by-value"):
            await client.create(cell.Notebook)
        assert await client.list() == []
    marker = tmp_path / "ran"
    evil = pickle.dumps(_Marker(str(marker)))
    sha = code_hash(evil)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.put(f"{host.url}/v1/code/{sha}", data=evil) as resp:
            assert resp.status == 403
            assert "does not trust code by value" in (await resp.json())["error"]["message"]
        body = {"class_path": f"evil:Cls@{sha}"}
        async with session.post(f"{host.url}/v1/paglets", json=body) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["type"] == "CodeNotTrustedError"
        async with session.put(f"{host.url}/v1/code/not-a-hash", data=evil) as resp:
            assert resp.status == 400
    # a forged envelope naming the same code: refused from its header
    transfer_id = uuid.uuid4().hex
    envelope = _forged(f"evil:Cls@{sha}", "evil:State", b"{}", transfer_id)
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(
            f"{host.url}/v1/transfers", data=envelope, headers=_transfer_headers(transfer_id)
        ) as resp,
    ):
        assert resp.status == 403
        assert "does not trust code by value" in (await resp.json())["error"]["message"]
    await asyncio.sleep(0.5)
    assert not marker.exists(), "the code never ran"
    assert not (host.ready_file.parent / "state" / "strict" / "code").exists()


class _Marker:
    """Unpickled, it would create a file: what a forged code payload would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


async def test_a_cell_class_moves_only_to_a_host_that_trusts_code(
    start_host: Callable[..., RunningHost],
) -> None:
    a = _keyed(start_host, "ta", "--trust-code-by-value", *_fast())
    _keyed(start_host, "tb", "--trust-code-by-value", "--peer", a.url, *_fast())
    c = _keyed(start_host, "tc", "--peer", a.url, *_fast())
    cell = notebook_cell()
    async with AsyncHostClient(a.url, KEY) as client:

        async def meshed() -> bool:
            return sum(1 for r in await client.hosts() if r.online) == 3

        await wait_for(meshed, 20, "the mesh of three")
        paglet = await client.create(cell.Notebook)
        await paglet.send("add", {"text": "n"})
        with pytest.raises(TransferError, match="does not trust code by value") as caught:
            await paglet.dispatch("tc")
        assert "--trust-code-by-value" in str(caught.value)
        assert (await paglet.send("get"))["hosts"] == ["ta"], "it stays where it is"
        await paglet.dispatch("tb")
        assert await paglet.send("get") == {"notes": ["n"], "hosts": ["ta", "tb"]}
        assert (await paglet.info()).host == "tb"
    async with AsyncHostClient(c.url, KEY) as strict:
        assert await strict.list() == []


def _fast() -> tuple[str, ...]:
    return ("--gossip-interval", "0.1", "--offline-after", "1")


def test_code_sent_in_an_init_must_match_its_reference() -> None:
    # what a child does with an Init whose code is not the class's: refuses it
    cell = notebook_cell()
    path, code = class_reference(cell.Notebook)
    assert code is not None
    init = ipc.Init(
        agent_id="x",
        class_path=path,
        state=None,
        host_name="h",
        host_url="http://h",
        work_dir="",
        allowed_prefixes=[],
        heartbeat_interval=1.0,
        code=base64.b64encode(code[:-1]).decode(),
    )
    with pytest.raises(RequestError, match="SHA-256"):
        paglet_class(init)
    with pytest.raises(RequestError, match="its code is missing"):
        paglet_class(dataclasses.replace(init, code=""))


async def test_the_code_a_host_keeps_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_STORED", 100)
    store = CodeStore(tmp_path, "h", trusted=True, fsync=False)
    first, second = b"x" * 60, b"y" * 60
    assert await store.put(code_hash(first), first)
    assert not await store.put(code_hash(first), first), "kept once"
    with pytest.raises(StorageError, match="its limit is 100"):
        await store.put(code_hash(second), second)
    again = CodeStore(tmp_path, "h", trusted=True, fsync=False)  # counts what is on disk
    with pytest.raises(StorageError, match="keeps 60 bytes"):
        await again.put(code_hash(second), second)
    assert [p.name for p in tmp_path.iterdir()] == [f"{code_hash(first)}.pkl"]


def test_the_blocking_client_ships_a_cell_class_too(
    start_host: Callable[..., RunningHost],
) -> None:
    host = _keyed(start_host, "trusting", "--trust-code-by-value")
    cell = notebook_cell()
    with HostClient(host.url, KEY) as client:
        paglet = client.create(cell.Notebook, cell.NoteState(notes=["sync"]))
        assert paglet.send("get") == {"notes": ["sync"], "hosts": ["trusting"]}
