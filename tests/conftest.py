"""Shared fixtures: real hosts on ephemeral ports, and leak checks on every test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest
import trustme

from paglets import AsyncHostClient, Host
from paglets.launch.files import install_default, user_config_path
from pagletstest import PREFIX as TEST_PAGLETS
from tests.hostproc import Pair, RunningHost, host_processes
from tests.relayproc import Relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path


@pytest.fixture(autouse=True, scope="session")
def user_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user config dir of every host the tests start: temporary, never the real home.

    ``paglets-host`` copies its default ``launch.toml`` there on first start.
    """
    path = tmp_path_factory.mktemp("xdg-config")
    os.environ["XDG_CONFIG_HOME"] = str(path)
    install_default(user_config_path())  # so no host of a test says it wrote one
    return path


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves child processes (zygotes, paglets, daemons) behind."""
    before = _descendants()
    yield
    deadline = time.monotonic() + 10
    leaked = _descendants() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = {p for p in leaked if psutil.pid_exists(p) and _alive(p)}
    assert not leaked, f"test leaked processes: {sorted(leaked)}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon-pool threads running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [
            t
            for t in set(threading.enumerate()) - before
            if t.is_alive() and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
        ]
        if not extra:
            return
        time.sleep(0.05)
    pytest.fail(f"test leaked threads: {extra}")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    """A hub and its connect-mode hosts (`tests.relayproc.Relay`), all stopped at teardown."""
    with contextlib.closing(Relay(tmp_path)) as r:
        yield r


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Host]]]:
    """Start real hosts on ephemeral loopback ports; all are stopped at teardown.

    Each also allows the test-only paglets of ``pagletstest``, besides any
    ``allow_modules`` the test gives.
    """
    hosts: list[Host] = []
    counter = iter(range(1000))

    async def factory(**options: Any) -> Host:
        n = next(counter)
        options.setdefault("name", f"h{n}")
        options.setdefault("state_dir", tmp_path / f"state{n}")
        options["allow_modules"] = (*options.get("allow_modules", ()), TEST_PAGLETS)
        host = Host(**options)
        hosts.append(host)
        await host.start()
        return host

    try:
        yield factory
    finally:
        await asyncio.gather(*(h.stop() for h in hosts), return_exceptions=True)


@pytest.fixture
async def host(make_host: Callable[..., Awaitable[Host]]) -> Host:
    return await make_host(name="alpha")


@pytest.fixture
async def client(host: Host) -> AsyncIterator[AsyncHostClient]:
    async with AsyncHostClient(host.url) as c:
        yield c


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``predicate`` until true; fail by name at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[Callable[..., RunningHost]]:
    """Start ``paglets-host`` processes (``--state-dir tmp_path/state``); kill leftovers."""
    with host_processes(tmp_path) as factory:
        yield factory


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Two ``paglets-host`` processes, ``src`` and ``dst``, restartable on their ports."""
    with contextlib.closing(Pair(tmp_path)) as p:
        yield p


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private CA (trustme), one per test module."""
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    """The private CA's certificate (``ca``) and a server certificate for 127.0.0.1
    and localhost (``cert``) with its key (``key``), as PEM files."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return files
