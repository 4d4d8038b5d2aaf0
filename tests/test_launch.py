"""launch.toml: the bundled default, the user's copy, ``--config``, and the errors
that name the file, the line and the fix."""

from __future__ import annotations

import signal
import subprocess
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paglets import HostClient, HostFullError
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


def test_the_bundled_default_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "launch.toml"
    assert bundled_text() == (ROOT / "launch.toml").read_text()
    path.write_text(bundled_text())
    assert load_launch(path) == LaunchConfig(path=path)


def test_first_load_copies_the_default_and_later_ones_read_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "config" / "paglets" / "launch.toml"
    assert user_config_path() == path
    assert load_launch() == LaunchConfig(path=path)
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
    ("unknown table", "[host]\n\n[services]\nx = 1\n", 3, "[services]", "[host], [limits]"),
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
    with pytest.raises(ConfigurationError, match=r"^f.toml:1: \[host\] must be a table"):
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
