"""What every host allows by default touches no file and no process beyond its own.

``paglets`` and ``examples`` are always on the module allow-list and ship in the
wheel, so anyone allowed to create paglets can create every paglet class found
there. The paglets that misbehave on request (dump their environment, exit, hang,
eat memory, write a chosen path) live in ``tests/pagletstest``; the example
`Traveler` writes and carries only files of its own work directory.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pagletstest
from paglets import AsyncHostClient, MessageNotHandledError, Paglet, PagletError
from paglets.wire.modules import DEFAULT_ALLOWED_PREFIXES, ModulePolicy
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import ModuleType

    from paglets import AsyncPagletProxy, Host

ROOT = Path(__file__).resolve().parents[1]
FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
TRAVELER = "examples.travel:Traveler"
# What the test paglets do on request and no default-allowed paglet may: read the
# environment, name its pid, call any URL with the host's key, end or stall its
# process, eat memory. Cheap and revealing ones first: a class that handles one
# fails there, before a costly one runs.
TEST_ONLY_KINDS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("env", {}),
    ("pid", {}),
    ("forward", {"to": "x", "kind": "get"}),
    ("unserializable", {}),
    ("gate", {"count": 0}),
    ("exit", {"code": 3}),
    ("os_exit", {"code": 4}),
    ("eat_memory", {"chunks": 1}),
    ("hang", {}),
)


def _modules_under(prefix: str) -> list[ModuleType]:
    package = importlib.import_module(prefix)
    walked = pkgutil.walk_packages(package.__path__, f"{prefix}.")
    return [package, *(importlib.import_module(info.name) for info in walked)]


def _paglet_classes(
    modules: list[ModuleType], *, defined_here: bool = False
) -> dict[str, type[Paglet[Any]]]:
    """The paglet classes the modules hold, by the class path that creates them.

    A class a module imports counts too (its path there creates it), unless
    ``defined_here``.
    """
    found: dict[str, type[Paglet[Any]]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if not (inspect.isclass(value) and issubclass(value, Paglet)) or value is Paglet:
                continue
            if not defined_here or value.__module__ == module.__name__:
                found[f"{module.__name__}:{name}"] = value
    return found


DEFAULT_CLASSES = _paglet_classes(
    [m for prefix in DEFAULT_ALLOWED_PREFIXES for m in _modules_under(prefix)]
)
TEST_CLASSES = _paglet_classes(_modules_under(pagletstest.PREFIX), defined_here=True)


def test_the_default_allow_list_holds_no_test_paglet() -> None:
    assert DEFAULT_CLASSES, "the walk found the example paglets"
    assert "examples.travel:Traveler" in DEFAULT_CLASSES
    for path, cls in DEFAULT_CLASSES.items():
        for test_path, test_cls in TEST_CLASSES.items():
            assert not issubclass(cls, test_cls), f"{path} is (a kind of) {test_path}"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("examples.testing")
    assert not ModulePolicy().allows(pagletstest.PREFIX), "test paglets are never allowed"


def test_the_wheel_ships_no_test_paglet() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    shipped = [*wheel["packages"], *wheel.get("force-include", {})]
    assert not [p for p in shipped if p.split("/")[0] == "tests"], shipped
    assert set(wheel["packages"]) <= set(DEFAULT_ALLOWED_PREFIXES)


@pytest.mark.parametrize("class_path", sorted(DEFAULT_CLASSES))
async def test_no_default_allowed_paglet_does_what_only_test_paglets_may(
    host: Host, class_path: str
) -> None:
    async with AsyncHostClient(host.url) as client:
        paglet = await client.create(class_path)
        for kind, args in TEST_ONLY_KINDS:
            with pytest.raises(PagletError) as caught:
                await paglet.send(kind, args, timeout=10)
            assert isinstance(caught.value, MessageNotHandledError), (
                f"{class_path} answers {kind!r}: {type(caught.value).__name__}: {caught.value}"
            )


# -- the example Traveler stays in its work directory -----------------------------------


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("untouched")
    return victim


async def _refused(traveler: AsyncPagletProxy, kind: str, args: dict[str, Any]) -> str:
    with pytest.raises(PagletError) as caught:
        await traveler.send(kind, args)
    return str(caught.value)


async def test_the_traveler_refuses_a_path_out_of_its_work_directory(
    host: Host, tmp_path: Path
) -> None:
    victim = _victim(tmp_path)
    up = "../" * 40 + str(victim).lstrip("/")
    async with AsyncHostClient(host.url) as client:
        traveler = await client.create(TRAVELER)
        work = host.supervisor.work_root / traveler.agent_id
        work.mkdir(parents=True, exist_ok=True)
        (work / "link").symlink_to(victim)
        (work / "away").symlink_to(victim.parent, target_is_directory=True)
        for name, why in [
            (str(victim), "absolute"),
            (up, "'..'"),
            ("link", "leads out of"),
            ("away/victim.txt", "leads out of"),
        ]:
            # `path` too: whatever key a caller tries, the file stays out of reach
            args = {"name": name, "path": str(victim), "text": "overwritten"}
            assert why in await _refused(traveler, "write", args)
            for mode in ("copy", "move"):
                assert why in await _refused(traveler, "carry", {**args, "mode": mode})
        assert await traveler.send("files") == {}, "nothing outside was registered"
        assert await traveler.send("write", {"name": "own.txt", "text": "mine"}) == "own.txt"
        assert (work / "own.txt").read_text() == "mine", "its own directory is its to use"
        await traveler.dispose()
    assert victim.read_text() == "untouched"
    assert [p.name for p in victim.parent.iterdir()] == ["victim.txt"]


async def test_the_traveler_carries_its_own_files_to_the_next_host(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "a sees b")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("write", {"name": "notes/kept.txt", "text": "a copy stays"})
        await traveler.send("write", {"name": "moved.txt", "text": "only travels"})
        assert await traveler.send("carry", {"name": "notes/kept.txt"}) == "kept.txt"
        assert await traveler.send("carry", {"name": "moved.txt", "mode": "move"}) == "moved.txt"
        await traveler.dispatch("b")
        assert await traveler.send("where") == "b"
        files = await traveler.send("files")
        assert files == {"kept.txt": "a copy stays", "moved.txt": "only travels"}
    work = a.supervisor.work_root / traveler.agent_id
    assert not (work / "moved.txt").exists(), "move mode deletes the source after the dispatch"
    assert b.supervisor.list(), "it runs on b"
