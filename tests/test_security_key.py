"""Paglets cannot get the mesh's API key (issue 14, item 6).

- the host process is non-dumpable, so a child of the same (non-root) user
  cannot read ``/proc/<host pid>/environ`` or its memory;
- ``--child-user`` runs children as another user, who cannot read the host's
  ``/proc`` entries or its key file;
- the key comes from a file or systemd credentials as well as the environment;
- the host sends its key only to mesh members, never to a URL a paglet or a
  caller names (checked with a real server that records what it is sent).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from paglets import AsyncHostClient, AuthenticationError, HostClient, HostNotFoundError
from paglets.config import HostConfig
from paglets.core.errors import ConfigurationError
from paglets.runtime.privileges import protect_host
from paglets.transport.apikey import load_api_key
from pagletstest import PATH_ENTRY, PREFIX, host_env
from tests.conftest import wait_for
from tests.hostproc import HOST_CMD, RunningHost
from tests.hostproc import env_without_key as _env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from paglets import Host

STOP_BOUND = 20.0
KEY = "k-" + "7" * 30
THIEF = "pagletstest.keyprobe:KeyThief"
PROBE = "pagletstest.testing:Probe"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
root_only = pytest.mark.skipif(not IS_ROOT, reason="--child-user needs a host run as root")


def _nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def _one_line_error(args: list[str], expected: str) -> None:
    """``paglets-host ARGS`` exits 2 with one line naming ``expected``."""
    result = subprocess.run(
        [*HOST_CMD, "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


# -- the host is not dumpable ---------------------------------------------------------------

_DUMPABLE_SCRIPT = """
import asyncio, ctypes, json, sys
from paglets import Host
prctl = ctypes.CDLL(None).prctl
async def main():
    before = prctl(3, 0, 0, 0, 0)
    async with Host(name="d", state_dir=sys.argv[1]):
        during = prctl(3, 0, 0, 0, 0)
    print(json.dumps([before, during]))
asyncio.run(main())
"""


@linux_only
def test_a_started_host_is_not_dumpable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _DUMPABLE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, during = json.loads(done.stdout)
    assert (before, during) == (1, 0), "PR_GET_DUMPABLE before and while a host runs"


def _read_parent_environ_as_nobody(*, protect: bool) -> str:
    """In a forked process run as nobody (dumpable, as a daemon started as nobody is),
    optionally `protect_host`, then fork a child of the same user that reads the
    parent's ``/proc/<pid>/environ``; returns what the child got."""
    nobody = _nobody()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "host": only os calls and os._exit from here
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            from paglets.runtime.osutil import set_dumpable  # noqa: PLC0415

            set_dumpable(dumpable=True)  # a credential change cleared it; a daemon has it
            if protect:
                protect_host()
            host = os.getpid()
            child = os.fork()
            if child == 0:  # the "paglet", the same user
                try:
                    fd = os.open(f"/proc/{host}/environ", os.O_RDONLY)
                    os.read(fd, 1)
                    os.write(write_end, b"read")
                except PermissionError:
                    os.write(write_end, b"PermissionError")
                os._exit(0)
            os.waitpid(child, 0)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as got:
        answer = got.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer


@linux_only
@root_only
def test_a_child_of_the_same_user_cannot_read_a_protected_host() -> None:
    assert _read_parent_environ_as_nobody(protect=False) == "read", "the control: it can"
    assert _read_parent_environ_as_nobody(protect=True) == "PermissionError"


# -- --child-user -----------------------------------------------------------------------


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another user can search (pytest's tmp_path is closed to it)."""
    path = Path(tempfile.mkdtemp(prefix="paglets-key-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def open_paglets(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ``pagletstest`` another user can read, first on the children's path.

    The checkout itself may sit in a directory the child user cannot enter (a
    clone in ``mktemp -d``, mode 0700); ``paglets`` is imported before the drop
    to that user, but a test paglet's module is read after it.
    """
    lib = open_dir / "lib"
    shutil.copytree(Path(PATH_ENTRY) / PREFIX, lib / PREFIX)
    for path in [lib, *lib.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    monkeypatch.syspath_prepend(str(lib))  # in-process hosts give children their sys.path
    return lib


@root_only
async def test_child_user_runs_paglets_as_that_user(
    make_host: Callable[..., Awaitable[Host]], open_dir: Path, open_paglets: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "host-only.txt"
    secret.write_text("host secret")
    secret.chmod(0o600)
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    host = await make_host(state_dir=open_dir / "state", child_user="nobody", api_key=KEY)
    async with AsyncHostClient(host.url, KEY) as client:
        thief = await client.create(THIEF)
        assert (await thief.send("whoami"))["uid"] == _nobody().pw_uid
        for path in (f"/proc/{os.getpid()}/environ", f"/proc/{os.getpid()}/mem", secret, key_file):
            got = await thief.send("read", {"path": str(path)})
            assert got == {"error": "PermissionError"}, path
        # its state still goes to disk and back: checkpoints are written as that user
        await thief.deactivate()
        assert (await thief.send("whoami"))["uid"] == _nobody().pw_uid
        copy = await thief.clone()
        assert (await copy.send("whoami"))["uid"] == _nobody().pw_uid
    assert secret.read_text() == "host secret"


def test_child_user_must_exist() -> None:
    with pytest.raises(ConfigurationError, match="no such user"):
        HostConfig(child_user="no-such-user-paglets")


@root_only
def test_child_user_needs_a_root_host() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(_nobody().pw_gid)
            os.setuid(_nobody().pw_uid)
            try:
                HostConfig(child_user="nobody")
                os.write(write_end, b"accepted")
            except ConfigurationError as exc:
                os.write(write_end, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as got:
        message = got.read().decode()
    os.waitpid(pid, 0)
    assert "needs the host to run as root" in message


def test_cli_child_user_error_is_one_line(tmp_path: Path) -> None:
    _one_line_error(["--state-dir", str(tmp_path), "--child-user", "no-such-u"], "no such user")


# -- where the key comes from -------------------------------------------------------------


def _key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_file_is_trimmed(tmp_path: Path) -> None:
    found = load_api_key(_key_file(tmp_path / "k", f"  {KEY}\n\n"), environ={})
    assert found is not None
    assert found.value == KEY


@pytest.mark.parametrize(
    ("text", "mode", "error"),
    [
        (KEY, 0o644, "can be read or written by other users"),
        (KEY, 0o602, "can be read or written by other users"),
        (" \n", 0o600, "is empty"),
        (f"{KEY}\nsecond", 0o600, "one line"),
    ],
    ids=["world-readable", "world-writable", "empty", "two-lines"],
)
def test_bad_key_files_are_refused(tmp_path: Path, text: str, mode: int, error: str) -> None:
    path = _key_file(tmp_path / "k", text, mode)
    with pytest.raises(ConfigurationError, match=error):
        load_api_key(path, environ={})
    with pytest.raises(ConfigurationError, match=error):
        load_api_key(environ={"PAGLETS_API_KEY_FILE": str(path)})


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the API key file"):
        load_api_key(tmp_path / "absent", environ={})


def test_key_sources_in_order(tmp_path: Path) -> None:
    given = _key_file(tmp_path / "given", "from-flag")
    named = _key_file(tmp_path / "named", "from-named-file")
    creds = tmp_path / "creds"
    creds.mkdir()
    _key_file(creds / "paglets-api-key", "from-systemd")
    env = {
        "PAGLETS_API_KEY": "from-env",
        "PAGLETS_API_KEY_FILE": str(named),
        "CREDENTIALS_DIRECTORY": str(creds),
    }

    def key(path: Path | None, environ: dict[str, str]) -> str | None:
        found = load_api_key(path, environ=environ)
        return None if found is None else found.value

    assert key(given, env) == "from-flag"
    assert key(None, env) == "from-env"
    del env["PAGLETS_API_KEY"]
    assert key(None, env) == "from-named-file"
    del env["PAGLETS_API_KEY_FILE"]
    assert key(None, env) == "from-systemd"
    assert key(None, {"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) is None
    assert key(None, {}) is None


def test_cli_host_reads_its_key_from_a_file(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    path = _key_file(tmp_path / "key", KEY + "\n")
    host = start_host("--api-key-file", str(path), env=host_env(_env()))
    with HostClient(host.url, api_key="") as client, pytest.raises(AuthenticationError):
        client.host_info()
    with HostClient(host.url, api_key=KEY) as client:
        assert client.host_info().name == host.name
    host.process.send_signal(15)
    assert host.process.wait(STOP_BOUND) == 0, host.log()


def test_cli_host_reads_systemd_credentials(
    start_host: Callable[..., RunningHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    _key_file(creds / "paglets-api-key", KEY)
    host = start_host(env=host_env(_env(CREDENTIALS_DIRECTORY=str(creds))))
    with HostClient(host.url, api_key="") as client, pytest.raises(AuthenticationError):
        client.host_info()
    # and a client finds the key the same way
    monkeypatch.delenv("PAGLETS_API_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with HostClient(host.url) as client:
        probe = client.create(PROBE)
        env = probe.send("env")
        assert "CREDENTIALS_DIRECTORY" not in env, "paglets are not told where the key is"
        assert KEY not in json.dumps(env)


def test_cli_refuses_a_readable_key_file(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "key", KEY, 0o644)
    _one_line_error(
        ["--state-dir", str(tmp_path), "--api-key-file", str(path)],
        "can be read or written by other users",
    )


@root_only
def test_cli_child_user_cannot_read_the_key_or_the_host(
    start_host: Callable[..., RunningHost], tmp_path: Path, open_dir: Path, open_paglets: Path
) -> None:
    path = _key_file(tmp_path / "key", KEY)
    host = start_host(
        "--api-key-file",
        str(path),
        "--child-user",
        "nobody",
        "--state-dir",
        str(open_dir / "state"),
        env=host_env(_env(PYTHONPATH=str(open_paglets))),
    )
    with HostClient(host.url, api_key=KEY) as client:
        thief = client.create(THIEF)
        assert thief.send("whoami")["uid"] == _nobody().pw_uid
        for target in (f"/proc/{host.process.pid}/environ", f"/proc/{host.process.pid}/mem", path):
            assert thief.send("read", {"path": str(target)}) == {"error": "PermissionError"}
    host.process.send_signal(15)
    assert host.process.wait(STOP_BOUND) == 0, host.log()


# -- the key goes to mesh members only -------------------------------------------------------


class Recorder:
    """A real HTTP server on loopback that records every request's Authorization header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Authorization")))
        return web.json_response({"reply": None})


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """A recording server that outlives the test's hosts.

    Tests take it before ``make_host``: a host still calling it while aiohttp stops
    would leave an accepted socket open.
    """
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("call", ["send", "monitor", "retract"])
async def test_a_paglet_cannot_send_the_key_to_a_url_it_names(
    recorder: Recorder, make_host: Callable[..., Awaitable[Host]], call: str
) -> None:
    host = await make_host(api_key=KEY)
    async with AsyncHostClient(host.url, KEY) as client:
        thief = await client.create(THIEF)
        got = await thief.send(call, {"agent_id": "a" * 32, "host": recorder.url + "/"})
    assert got["error"] == "HostNotFoundError", got
    assert "not a host of the mesh" in got["message"]
    assert recorder.seen == [], "nothing at all is sent to a URL outside the mesh"


async def test_a_caller_cannot_have_the_key_sent_to_a_url_it_names(
    recorder: Recorder, make_host: Callable[..., Awaitable[Host]]
) -> None:
    host = await make_host(api_key=KEY)
    async with AsyncHostClient(host.url, KEY) as client:
        probe = await client.create(PROBE)
        with pytest.raises(HostNotFoundError, match="not a host of the mesh"):
            await client.request(
                "POST", "/v1/retract", {"agent_id": "a" * 32, "host": recorder.url}
            )
        with pytest.raises(HostNotFoundError, match="not a host of the mesh"):
            await client.request(
                "POST",
                f"/v1/paglets/{probe.agent_id}/monitors",
                {"watcher": "b" * 32, "watcher_url": recorder.url},
            )
        await probe.dispose()  # would tell the watcher, had it been accepted
    assert recorder.seen == []


async def test_members_are_still_called_with_the_key(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(api_key=KEY)
    b = await make_host(api_key=KEY, peers=(a.url,))
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "a sees b")
    async with AsyncHostClient(b.url, KEY) as client_b, AsyncHostClient(a.url, KEY) as client_a:
        probe = await client_b.create(PROBE)
        thief = await client_a.create(THIEF)
        for host in (b.name, b.url):
            got = await thief.send("send", {"agent_id": probe.agent_id, "host": host})
            assert got == {"reply": {"x": 1}}


async def test_no_key_in_the_host_request_without_membership_either(
    recorder: Recorder, make_host: Callable[..., Awaitable[Host]]
) -> None:
    """An open host (no key) refuses too: it does not call arbitrary URLs for paglets."""
    host = await make_host()
    async with AsyncHostClient(host.url, "") as client:
        thief = await client.create(THIEF)
        got = await thief.send("send", {"agent_id": "a" * 32, "host": recorder.url})
    assert got["error"] == "HostNotFoundError"
    assert recorder.seen == []


@pytest.mark.parametrize("call", ["send", "monitor", "retract"])
async def test_a_configured_peer_gets_the_key_only_once_it_proved_it_holds_it(
    recorder: Recorder, make_host: Callable[..., Awaitable[Host]], call: str
) -> None:
    """A member by configuration (--peer), whose address is answered by someone without
    the key (a host that died, its port taken over), gets hellos and nothing else."""
    host = await make_host(api_key=KEY, peers=(recorder.url,))
    async with AsyncHostClient(host.url, KEY) as client:
        thief = await client.create(THIEF)
        got = await thief.send(call, {"agent_id": "a" * 32, "host": recorder.url})
    assert got["error"] == "HostUnavailableError", got
    assert "did not prove that it holds the mesh key" in got["message"]
    assert recorder.seen, "it was asked to prove itself"
    assert {path for path, _ in recorder.seen} == {"/v1/mesh/hello"}
    assert all(auth is None for _, auth in recorder.seen), "the key never went there"
