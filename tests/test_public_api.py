"""The public API is deliberate, and the layers import one way only.

Import checks run in fresh interpreters, so what one test imported cannot hide
what another module loads.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from importlib import import_module

import pytest

import paglets

EXPECTED_ALL = [
    "NOT_HANDLED",
    "ArrivalMode",
    "AsyncHostClient",
    "AsyncPagletFuture",
    "AsyncPagletProxy",
    "AsyncReplySet",
    "AuthenticationError",
    "ClassNotAllowedError",
    "ClassNotFoundError",
    "CodeNotFoundError",
    "CodeNotTrustedError",
    "ConfigurationError",
    "ContextEvent",
    "EventKind",
    "ExitReason",
    "HandlerError",
    "Host",
    "HostClient",
    "HostConfig",
    "HostError",
    "HostFullError",
    "HostInfo",
    "HostNotFoundError",
    "HostNotRunningError",
    "HostRecord",
    "HostStatus",
    "HostUnavailableError",
    "InvalidStateError",
    "Itinerary",
    "ItineraryStop",
    "LifecycleEvent",
    "LifecycleKind",
    "MailboxFullError",
    "MeshHost",
    "Message",
    "MessageNotHandledError",
    "Paglet",
    "PagletContext",
    "PagletCrashedError",
    "PagletDeadError",
    "PagletDisposedError",
    "PagletError",
    "PagletFuture",
    "PagletInactiveError",
    "PagletInfo",
    "PagletLink",
    "PagletMovedError",
    "PagletNotFoundError",
    "PagletProxy",
    "PagletRef",
    "PagletState",
    "PagletStatus",
    "PagletTimeoutError",
    "PayloadTooLargeError",
    "Priority",
    "ProtocolError",
    "RelayQueueFullError",
    "ReplySet",
    "RequestError",
    "RestartMode",
    "RestartPolicy",
    "StorageError",
    "TransferError",
    "TransferTicket",
    "__version__",
]

# What a layer must not load, from ARCHITECTURE.md "Layers" (imports flow downward:
# no lower layer may load the host, the CLI, or anything it depends on).
_TOP = (
    "paglets.host",
    "paglets.calls",
    "paglets.movement",
    "paglets.cli",
    "paglets.services",
    "paglets.update",
    "click",
    "rich",
)
FORBIDDEN = {
    "paglets.core": (
        "paglets.wire",
        "paglets.runtime",
        "paglets.persistence",
        "paglets.transport",
        "paglets.mesh",
        "aiohttp",
        *_TOP,
    ),
    "paglets.wire": ("paglets.runtime", "paglets.transport", "paglets.mesh", "aiohttp", *_TOP),
    "paglets.runtime": ("paglets.transport", "paglets.mesh", "aiohttp", *_TOP),
    "paglets.persistence": ("paglets.transport", "paglets.mesh", *_TOP),
}


def _modules_of(package: str) -> list[str]:
    pkg = import_module(package)
    names = [package]
    names += [info.name for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    return sorted(names)


LAYER_MODULES = [(layer, module) for layer in FORBIDDEN for module in _modules_of(layer)]


def _loaded_after_import(*modules: str) -> set[str]:
    """The names in ``sys.modules`` after a fresh interpreter imports ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def _hits(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in loaded for bad in forbidden if name == bad or name.startswith(bad + ".")
    )


def test_all_is_exactly_the_expected_names() -> None:
    assert paglets.__all__ == EXPECTED_ALL
    assert paglets.__all__ == sorted(paglets.__all__, key=lambda n: (not n.isupper(), n))
    assert len(set(paglets.__all__)) == len(paglets.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_exported_name_resolves(name: str) -> None:
    value = getattr(paglets, name)
    assert value is not None
    if isinstance(value, type):
        assert value.__name__ == name


def test_internal_names_are_not_exported() -> None:
    for name in ("Supervisor", "EventLog", "ChildHandle", "ApiContext"):
        with pytest.raises(AttributeError, match="no attribute"):
            getattr(paglets, name)


def test_every_exported_error_is_a_paglet_error() -> None:
    errors = [
        getattr(paglets, n)
        for n in EXPECTED_ALL
        if isinstance(getattr(paglets, n), type) and issubclass(getattr(paglets, n), BaseException)
    ]
    assert len(errors) == 29
    for error in errors:
        assert issubclass(error, paglets.PagletError), error


def test_errors_also_inherit_the_builtin_callers_expect() -> None:
    assert issubclass(paglets.PagletTimeoutError, TimeoutError)
    assert issubclass(paglets.PagletNotFoundError, LookupError)
    assert issubclass(paglets.HostUnavailableError, ConnectionError)
    assert issubclass(paglets.ClassNotAllowedError, PermissionError)
    assert issubclass(paglets.ClassNotFoundError, ImportError)
    assert issubclass(paglets.CodeNotFoundError, paglets.ClassNotFoundError)
    assert issubclass(paglets.CodeNotTrustedError, PermissionError)
    assert issubclass(paglets.ConfigurationError, ValueError)
    assert issubclass(paglets.PagletCrashedError, paglets.PagletDeadError)
    assert issubclass(paglets.PagletDisposedError, paglets.PagletDeadError)


def test_child_side_imports_stay_light() -> None:
    loaded = _loaded_after_import("paglets.runtime.child", "examples.counter", "examples.travel")
    assert "paglets.runtime.child" in loaded
    assert "examples.counter" in loaded
    heavy = ("aiohttp", "click", "rich", "paglets.host", "paglets.transport", "paglets.config")
    assert _hits(loaded, heavy) == []


def test_importing_paglets_alone_stays_light() -> None:
    loaded = _loaded_after_import("paglets")
    assert _hits(loaded, ("aiohttp", "click", "rich", "paglets.host", "paglets.runtime")) == []


@pytest.mark.parametrize(("layer", "module"), LAYER_MODULES, ids=[m for _, m in LAYER_MODULES])
def test_layer_imports_flow_downward(layer: str, module: str) -> None:
    loaded = _loaded_after_import(module)
    assert module in loaded
    assert _hits(loaded, FORBIDDEN[layer]) == []
