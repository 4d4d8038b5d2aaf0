"""A host loads its CA certificates when a TLS connection needs them (`paglets.transport.cacerts`).

The CA file is a named pipe here: whoever opens it to read waits until the test
writes it, which shows who reads it and when.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paglets
from paglets import HostClient
from tests.hostproc import HOST_CMD, env_without_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.hostproc import RunningHost

KEY = "cacerts-test-key-0123456789"
TIMEOUT = 60.0

# imports aiohttp as paglets-host does, says so, then loads the certificates
IMPORT = """
import json, os, ssl
from paglets.transport import cacerts

assert cacerts.import_aiohttp()
assert cacerts._loading is None, "nothing loads them until asked"
print("imported", flush=True)
count = cacerts.start_loading().result()
from aiohttp import connector
stats = [connector._SSL_CONTEXT_VERIFIED.cert_store_stats(),
         connector._SSL_CONTEXT_UNVERIFIED.cert_store_stats()]
print(json.dumps({"count": count, "stats": stats, "env": os.environ["SSL_CERT_FILE"]}))
"""


def feed(fifo: Path, data: bytes, until: Callable[[], bool]) -> None:
    """Write ``data`` to whoever opens ``fifo`` to read, until ``until()``.

    Between writes it leaves the pipe without a writer a while: a reader reads
    to its end only then.
    """
    deadline = time.monotonic() + TIMEOUT
    while not until():
        assert time.monotonic() < deadline, "fed the CA file too long"
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader now
                raise
        else:
            try:
                os.set_blocking(fd, True)
                os.write(fd, data)
            finally:
                os.close(fd)
        time.sleep(0.02)


def readline(process: subprocess.Popen[str]) -> str:
    """The next line of ``process``'s output, failing the test after TIMEOUT."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], TIMEOUT)
    assert readable, "no output"
    return process.stdout.readline().strip()


def test_aiohttp_is_imported_before_its_ca_file_is_read(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    fifo = tmp_path / "ca.fifo"
    os.mkfifo(fifo)
    with subprocess.Popen(
        [sys.executable, "-c", IMPORT],
        env=env_without_key(SSL_CERT_FILE=str(fifo)),
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            # before the CA file was written: its import did not read it
            assert readline(process) == "imported"
            feed(fifo, pki["ca"].read_bytes(), lambda: process.poll() is not None)
            seen = json.loads(readline(process))
        finally:
            process.kill()
    assert seen["count"] == 1, "aiohttp's context that verifies"
    # it holds the CA of the file OpenSSL's variable names, as aiohttp's import makes it
    verified, unverified = seen["stats"]
    assert verified == {"x509": 1, "crl": 0, "x509_ca": 1}
    assert unverified == {"x509": 0, "crl": 0, "x509_ca": 0}, "verifies nothing: left empty"
    assert seen["env"] == str(fifo), "the variable is the user's again"


def test_a_host_joins_over_tls_only_once_its_ca_certificates_are_loaded(
    start_host: Callable[..., RunningHost], pki: dict[str, Path], tmp_path: Path
) -> None:
    env = env_without_key(PAGLETS_API_KEY=KEY)
    peer = start_host("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), env=env)
    fifo = tmp_path / "ca.fifo"
    os.mkfifo(fifo)
    # trusting the peer's CA through OpenSSL's default CA file (no --ca-file): aiohttp's
    # default context, which the host's start fills on a thread
    ready, log = tmp_path / "b.ready", tmp_path / "b.log"
    argv = [*HOST_CMD, "--name", "b", "--port", "0", "--peer", peer.url, "--ready-file", str(ready)]
    argv += ["--state-dir", str(tmp_path / "b"), "--log-level", "debug"]
    with (
        log.open("wb") as out,
        subprocess.Popen(
            argv, env={**env, "SSL_CERT_FILE": str(fifo)}, stdout=out, stderr=out
        ) as process,
    ):
        try:
            deadline = time.monotonic() + TIMEOUT
            while "waiting for the CA certificates" not in log.read_text():
                assert not ready.exists(), "ready (and joined) without its CA certificates"
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.01)
            feed(fifo, pki["ca"].read_bytes(), ready.exists)
            url = json.loads(ready.read_text())["url"]
            with HostClient(url, KEY) as client:  # joined at its start, not a round later
                assert {h.name for h in client.hosts()} == {"b", peer.name}
        finally:
            process.terminate()
            process.wait(TIMEOUT)


# Connectors that make no TLS connection of their own, so need no certificates.
NO_TLS_CONNECTORS = frozenset({"MemoryConnector"})


def _made_by(function: ast.AST) -> dict[str, str]:
    """The names ``function`` binds to a call, with what each call called."""
    made = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    made[target.id] = ast.unparse(node.value.func)
    return made


def _sessions_without_connector(root: Path) -> list[str]:
    """Every ``ClientSession(...)`` under ``root`` whose connector is not `cacerts.connector`
    (or one that makes no TLS connection), as ``file:line (what it was given)``."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            made = _made_by(function)
            for call in ast.walk(function):
                if not (isinstance(call, ast.Call) and ast.unparse(call.func).endswith("Session")):
                    continue
                given = {k.arg: k.value for k in call.keywords}.get("connector")
                if isinstance(given, ast.Call):
                    maker = ast.unparse(given.func)
                elif isinstance(given, ast.Name):
                    maker = made.get(given.id, given.id)
                else:
                    maker = "no connector"
                if maker != "connector" and maker not in NO_TLS_CONNECTORS:
                    wrong.append(f"{path.relative_to(root)}:{call.lineno} ({maker})")
    return wrong


def test_every_client_session_of_paglets_waits_for_the_certificates() -> None:
    """In paglets-host, aiohttp's default TLS context gets its CA certificates only
    through `cacerts.connector`: a session made without it would find that context
    empty, and fail to verify every peer it meets over TLS."""
    assert _sessions_without_connector(Path(paglets.__file__).parent) == []


def test_the_session_check_names_each_session_made_without_the_connector(
    tmp_path: Path,
) -> None:
    (tmp_path / "sessions.py").write_text(
        "import aiohttp\n"
        "def named():\n    tcp = connector(True)\n    return aiohttp.ClientSession(connector=tcp)\n"
        "def inline():\n    return aiohttp.ClientSession(connector=connector(False))\n"
        "def memory():\n    return aiohttp.ClientSession(connector=MemoryConnector(f))\n"
        "async def bare():\n    return aiohttp.ClientSession()\n"
        "def plain():\n    tcp = aiohttp.TCPConnector()\n    return ClientSession(connector=tcp)\n"
    )
    assert _sessions_without_connector(tmp_path) == [
        "sessions.py:10 (no connector)",
        "sessions.py:13 (aiohttp.TCPConnector)",
    ]
