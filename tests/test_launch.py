"""launch.toml: the bundled default, the user's copy, ``--config``, and the errors
that name the file, the line and the fix."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paglets import HostClient, HostFullError
from paglets.cli.host import command as host_command
from paglets.core.errors import ConfigurationError
from paglets.launch.files import bundled_text, load_launch, user_config_path
from paglets.launch.lines import KeyLines
from paglets.launch.model import LaunchConfig
from paglets.launch.parse import parse_launch
from tests.hostproc import HOST_CMD, env_without_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.hostproc import RunningHost

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "launch.toml"
STOP_BOUND = 30


# -- parsing ------------------------------------------------------------------------------


def test_the_docs_example_parses_to_typed_values() -> None:
    launch = load_launch(EXAMPLE)
    assert launch.host.name == "alpha"
    assert launch.host.tags == ("gpu", "lab")
    assert launch.host.properties == {"room": "b12", "owner": "ana"}
    assert launch.limits.max_paglets == 200
    assert launch.limits.max_child_memory == 2 << 30
    assert launch.modules.allow == ("examples",)
    (visits,) = launch.paglets
    assert (visits.agent_id, visits.class_path, visits.state) == (
        "visits",
        "examples.counter:Counter",
        {"count": 10},
    )
    assert visits.origin == f"{EXAMPLE}:16"
    assert launch.options() == {
        "name": "alpha",
        "tags": ("gpu", "lab"),
        "properties": ["room=b12", "owner=ana"],
        "allow_modules": ("examples",),
        "max_paglets": 200,
        "max_child_memory": 2 << 30,
    }


def _but_builtins(config: LaunchConfig) -> LaunchConfig:
    """``config`` without the built-in services every default declares."""
    assert [s.contract for s in config.services] == ["server-info.v1", "compute-slots.v1"]
    builtin = ("paglets.builtins.", "paglets.services.compute.")
    assert all(s.class_path.startswith(builtin) for s in config.services)
    return dataclasses.replace(config, services=())


def test_the_bundled_default_sets_nothing_but_the_builtin_services(tmp_path: Path) -> None:
    path = tmp_path / "launch.toml"
    assert bundled_text() == (ROOT / "launch.toml").read_text()
    path.write_text(bundled_text())
    assert _but_builtins(load_launch(path)) == LaunchConfig(path=path)


def test_first_load_copies_the_default_and_later_ones_read_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "config" / "paglets" / "launch.toml"
    assert user_config_path() == path
    assert _but_builtins(load_launch()) == LaunchConfig(path=path)
    assert path.read_text() == bundled_text()
    path.write_text('[host]\ntags = ["mine"]\n')
    assert load_launch().host.tags == ("mine",), "the user's file is read, never replaced"
    assert list(path.parent.iterdir()) == [path], "no temporary file is left"


BAD = [
    (
        "wrong type",
        '[limits]\nmax_paglets = "ten"\n',
        2,
        "limits.max_paglets",
        "max_paglets = 1000",
    ),
    ("unknown key", "[host]\nname = 'a'\ncolour = 'red'\n", 3, "host.colour", "name, mesh_version"),
    ("unknown table", "[host]\n\n[servics]\nx = 1\n", 3, "[servics]", "[host], [limits]"),
    (
        "bad class path",
        "# startup\n[[paglets]]\nid = 'a'\n\nclass = 'examples.counter.Counter'\n",
        5,
        "paglets[0].class",
        'class = "examples.counter:Counter"',
    ),
    (
        "duplicate id",
        "[[paglets]]\nid = 'a'\nclass = 'x:A'\n[[paglets]]\nid = 'a'\nclass = 'x:B'\n",
        5,
        "paglets[1].id",
        "its own id",
    ),
    ("missing class", "[[paglets]]\nid = 'a'\n", 1, "paglets[0]", "add class ="),
    (
        "after a multi-line string",
        '[host]\nmesh_version = """\nname = "x"\n"""\nname = 3\n',
        5,
        "host.name",
        'name = "alpha"',
    ),
    ("too small", '[limits]\nmax_child_memory = "1KiB"\n', 2, "at least 1MiB", "8GiB"),
    ("not toml", "[limits]\nmax_paglets = = 3\n", 2, "not valid TOML", "toml.io"),
    (
        "a date in state",
        "[[paglets]]\nid='a'\nclass='a:B'\nstate={d=2020-01-01}\n",
        4,
        "state",
        "{",
    ),
]


def test_an_unwritable_config_dir_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").write_text("a file where the directory should be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with pytest.raises(ConfigurationError, match="fix: pass --config PATH, or set XDG_CONFIG_HOME"):
        load_launch()


def test_every_key_of_the_file_is_the_option_of_the_same_meaning(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        """
[host]
name = "every"
mesh_version = "v7"
tags = ["a", "b"]
properties = { k = "v=w" }
peers = ["http://127.0.0.1:9/"]
file_roots = ["/srv/data"]

[limits]
header_timeout = 3
idle_timeout = 4.5
max_connections = 5
max_envelope_size = "2MiB"
max_transfers = 6
transfer_min_rate = 1000
max_paglets = 7
max_child_memory = "1GiB"

[modules]
allow = ["myapp", "other.pkg"]
preload = ["myapp.agents"]
""",
    )
    ctx = host_command.make_context("paglets-host", ["--config", str(path)])
    params = ctx.params
    expected = {
        "name": "every",
        "mesh_version": "v7",
        "tags": ("a", "b"),
        "properties": {"k": "v=w"},
        "peers": ("http://127.0.0.1:9",),
        "file_roots": (Path("/srv/data"),),
        "header_timeout": 3.0,
        "idle_timeout": 4.5,
        "max_connections": 5,
        "max_envelope_size": 2 << 20,
        "max_transfers": 6,
        "transfer_min_rate": 1000,
        "max_paglets": 7,
        "max_child_memory": 1 << 30,
        "allow_modules": ("myapp", "other.pkg"),
        "preload": ("myapp.agents",),
    }
    assert {k: params[k] for k in expected} == expected
    assert set(load_launch(path).options()) == set(expected), "no key is left unmapped"
    overridden = host_command.make_context(
        "paglets-host", ["--config", str(path), "--max-paglets", "9", "--tag", "c"]
    ).params
    assert (overridden["max_paglets"], overridden["tags"]) == (9, ("c",))


@pytest.mark.parametrize(
    ("text", "line", "names", "fix"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_entry_names_the_file_the_line_and_the_fix(
    tmp_path: Path, text: str, line: int, names: str, fix: str
) -> None:
    path = tmp_path / "launch.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        load_launch(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert names in message
    assert "; fix: " in message
    assert fix in message


def test_key_lines_skip_multi_line_strings_and_arrays() -> None:
    text = (
        '[a]\nx = """\ny = 1\n"""\nz = [\n  [1],\n  [2]\n]\n'  # lines 1-8
        '[[b]]\n[[b]]\nw = { v = 1 }\n"q.r" = 2\n[b.c]\nd = 1\n'  # lines 9-14
    )
    lines = KeyLines(text)
    assert lines.line(("a", "x")) == 2
    assert lines.line(("a", "y")) == 1, "inside a string: not a key; falls back to [a]"
    assert lines.line(("a", "z")) == 5
    assert lines.line(("2",)) == 1, "inside an array: not a table header"
    assert lines.line(("b", 1)) == 10
    assert lines.line(("b", 1, "w", "v")) == 11
    assert lines.line(("b", 1, "q.r")) == 12
    assert lines.line(("b", 1, "c", "d")) == 14, "a sub-table of the latest [[b]] entry"
    assert lines.line(("nowhere",)) == 1


def test_a_value_nobody_can_place_is_still_reported() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"^f.toml:1: \[host\] must be a table; fix: write it as a \[host\] table$",
    ):
        parse_launch("host = 3\n", Path("f.toml"))


# -- the wheel ----------------------------------------------------------------------------


def test_the_wheel_ships_the_bundled_default(tmp_path: Path) -> None:
    uv = subprocess.run(["uv", "--version"], capture_output=True, check=False, timeout=30)
    if uv.returncode != 0:
        pytest.skip("uv is not installed")
    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("paglets-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("paglets/launch.toml").decode() == bundled_text()
        assert "paglets/launch/files.py" in archive.namelist()
        archive.extractall(tmp_path / "installed")
    # Installed, the default is read from the package, not from a checkout.
    (tmp_path / "installed" / "paglets" / "launch.toml").write_text("# from the wheel\n")
    code = "from paglets.launch.files import bundled_text; print(bundled_text(), end='')"
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "installed")},
    )
    assert found.stdout == "# from the wheel\n"


# -- paglets-host -------------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "launch.toml"
    path.write_text(text)
    return path


def test_a_host_takes_tags_properties_and_startup_paglets_from_its_file(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    host = start_host("--config", str(EXAMPLE), "--tag", "cli")
    with HostClient(host.url) as client:
        (record,) = client.hosts()
        assert record.name == host.name, "--name on the command line overrides the file"
        assert record.tags == ["cli"], "--tag on the command line replaces the file's tags"
        assert record.properties == {"room": "b12", "owner": "ana"}
        visits = client.proxy("visits")
        assert visits.state()["count"] == 10
        assert visits.send("increment")["count"] == 11
    host.process.send_signal(signal.SIGTERM)
    assert host.process.wait(STOP_BOUND) == 0, host.log()

    again = start_host("--config", str(EXAMPLE), name=host.name)
    with HostClient(again.url) as client:
        assert [p.agent_id for p in client.list()] == ["visits"], "not created twice"
        assert client.proxy("visits").send("increment")["count"] == 12, "the same paglet"
    assert "started startup paglet" not in again.log()


def test_a_limit_from_the_file_is_in_effect_and_a_flag_overrides_it(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        "[limits]\nmax_paglets = 1\n\n"
        "[[paglets]]\nid = 'one'\nclass = 'examples.counter:Counter'\n",
    )
    host = start_host("--config", str(config))
    with HostClient(host.url) as client, pytest.raises(HostFullError, match="--max-paglets"):
        client.create("examples.counter:Counter")
    roomier = start_host("--config", str(config), "--max-paglets", "2")
    with HostClient(roomier.url) as client:
        client.create("examples.counter:Counter")
        assert len(client.list()) == 2


def test_a_host_takes_its_name_mesh_version_and_peers_from_its_file(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    first = start_host("--mesh-version", "v7", "--gossip-interval", "0.1", "--offline-after", "1")
    config = _config(
        tmp_path,
        f'[host]\nname = "from-file"\nmesh_version = "v7"\npeers = ["{first.url}"]\n',
    )
    ready = tmp_path / "from-file.ready"
    argv = [*HOST_CMD, "--config", str(config), "--port", "0", "--ready-file", str(ready)]
    argv += ["--state-dir", str(tmp_path / "state"), "--gossip-interval", "0.1"]
    argv += ["--offline-after", "1"]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_without_key()
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, "the host exited"
            assert time.monotonic() < deadline, "the host was not ready"
            time.sleep(0.02)
        with HostClient(first.url) as client:
            while "from-file" not in {h.name for h in client.hosts()}:
                assert time.monotonic() < deadline, "the host never joined its peer"
                time.sleep(0.05)
            record = next(h for h in client.hosts() if h.name == "from-file")
        assert record.mesh_version == "v7"
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_BOUND) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_host_without_config_copies_the_default_on_first_start(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    home = tmp_path / "xdg"
    host = start_host(env=env_without_key(XDG_CONFIG_HOME=str(home)))
    copied = home / "paglets" / "launch.toml"
    assert copied.read_text() == bundled_text()
    assert host.log().startswith(f"wrote the default launch config to {copied}; edit it")


def _refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*HOST_CMD, "--port", "0", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env_without_key(),
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    return result


@pytest.mark.parametrize(
    ("text", "line", "names", "fix"), [b[1:] for b in BAD[:4]], ids=[b[0] for b in BAD[:4]]
)
def test_paglets_host_refuses_a_bad_file_with_one_line(
    tmp_path: Path, text: str, line: int, names: str, fix: str
) -> None:
    config = _config(tmp_path, text)
    result = _refused(tmp_path, "--config", str(config))
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith(f"error: {config}:{line}: {names} ")
    assert fix in message


def test_a_startup_paglet_that_cannot_start_stops_the_host(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "[host]\nname = 'h'\n\n[[paglets]]\nid = 'ghost'\nclass = 'examples.nothere:Ghost'\n",
    )
    result = _refused(tmp_path, "--config", str(config))
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {config}:4: startup paglet ghost (examples.nothere:Ghost) ")
    assert "not importable" in last
    assert "fix: correct or remove this [[paglets]] entry" in last


def test_a_startup_paglet_from_a_module_not_allowed_names_the_flag(tmp_path: Path) -> None:
    config = _config(tmp_path, "[[paglets]]\nid = 'x'\nclass = 'myapp.agents:Agent'\n")
    result = _refused(tmp_path, "--config", str(config))
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {config}:1: startup paglet x ")
    assert "--allow-module" in last


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = _refused(tmp_path, "--config", str(tmp_path / "nope.toml"))
    assert result.stderr.strip() == (
        f"error: cannot read launch config {tmp_path / 'nope.toml'}: No such file or directory; "
        "fix: check --config"
    )
