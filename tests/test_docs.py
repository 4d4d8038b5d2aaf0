"""The docs are part of the code: every example runs, the site builds strictly,
and the tables that restate the library (errors, routes, flags) match it."""

from __future__ import annotations

import http
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import click
import psutil
import pytest

import paglets
from paglets.byvalue.routes import add_routes as add_code_routes
from paglets.cli.host import command
from paglets.core.errors import PagletError
from paglets.durability.routes import add_routes as add_durability_routes
from paglets.mesh.routes import add_routes as add_mesh_routes
from paglets.monitors import add_routes as add_monitor_routes
from paglets.movement.routes import add_routes as add_movement_routes
from paglets.services.routes import add_routes as add_service_routes
from paglets.transport.app import ApiContext, build_app
from paglets.wire.records import ErrorBody

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.py"))
PAGES = sorted(DOCS.rglob("*.md"))
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')
MARKER = "PAGLETS_DOCS_EXAMPLE"
# Output that differs from run to run: ports, agent and message ids, pids.
VOLATILE = (
    (re.compile(r"http://127\.0\.0\.1:\d+"), "http://127.0.0.1:PORT"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "ID"),
    (re.compile(r"\bpid \d+"), "pid PID"),
)


def _normalise(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text.strip()


def _example_env(token: str, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PAGLETS_API_KEY", "PAGLETS_ALLOW_MODULES", "PAGLETS_HOME")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # paglets-host lives next to the interpreter in the virtual environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PAGLETS_HOME"] = str(tmp_path / "paglets-home")
    env[MARKER] = token
    return env


def _processes_marked(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == token:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_no_marked_processes(token: str, timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in _processes_marked(token) if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_runs_and_leaves_nothing_behind(example: Path, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    # Files, not pipes: a leaked grandchild holding a pipe open would hide the leak.
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    try:
        with stdout.open("w") as out, stderr.open("w") as err:
            returncode = subprocess.run(
                [sys.executable, str(example)],
                cwd=ROOT,
                env=_example_env(token, tmp_path),
                stdout=out,
                stderr=err,
                timeout=120,
                check=False,
            ).returncode
    finally:
        leaked = _wait_for_no_marked_processes(token)
        for proc in leaked:
            proc.kill()
    printed = stdout.read_text()
    assert returncode == 0, (
        f"{example.name} exited {returncode}\n"
        f"--- stdout\n{printed}\n--- stderr\n{stderr.read_text()}"
    )
    assert not leaked, f"{example.name} left processes behind: {leaked}"
    expected = example.with_suffix(".out")
    if expected.exists():
        assert _normalise(printed) == _normalise(expected.read_text()), (
            f"{example.name} printed something else than {expected.name} shows:\n{printed}"
        )


def test_mkdocs_build_is_strict_and_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    for page in ("index.html", "implementing/index.html", "reference/host/index.html"):
        assert (site / page).is_file(), page
    index = (site / "index.html").read_text()
    assert "examples.counter:Counter" in index  # the quickstart was included


def _code_blocks(page: Path) -> list[tuple[str, list[str]]]:
    blocks, current, lang = [], None, ""
    for line in page.read_text().splitlines():
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            current, lang = [], stripped.removeprefix("```").strip()
        elif current is not None and stripped == "```":
            blocks.append((lang, current))
            current = None
        elif current is not None:
            current.append(stripped)
    assert current is None, f"{page}: unclosed code block"
    return blocks


def _snippet_path(name: str) -> Path | None:
    name = name.partition(":")[0]  # "file.py:section" includes a marked section of the file
    for base in (EXAMPLES, ROOT):
        if (base / name).is_file():
            return base / name
    return None


def test_every_python_example_is_an_included_file() -> None:
    included: set[Path] = set()
    for page in PAGES:
        for lang, lines in _code_blocks(page):
            matches = [SNIPPET.match(line) for line in lines if line]
            if lang == "python":
                assert matches, f"{page.name}: empty python block"
                assert all(matches), (
                    f"{page.name}: a python block must include a file under docs/examples/ "
                    f'(--8<-- "name.py"), not inline code: {lines}'
                )
            for match in filter(None, matches):
                path = _snippet_path(match.group(1))
                assert path is not None, f"{page.name}: no file {match.group(1)}"
                included.add(path)
    orphans = [p.name for p in EXAMPLE_FILES if p not in included]
    assert not orphans, f"examples no page shows: {orphans}"


def test_error_body_example_is_a_real_error_body() -> None:
    data = json.loads((EXAMPLES / "error_body.json").read_text())
    body = ErrorBody.parse(data["error"])
    assert issubclass(getattr(paglets, body.type), PagletError)


def _error_classes() -> dict[str, type[PagletError]]:
    found: dict[str, type[PagletError]] = {}
    pending: list[type[PagletError]] = [PagletError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def test_error_tree_matches_the_errors_module_docstring() -> None:
    doc = inspect.getdoc(sys.modules[PagletError.__module__]) or ""
    lines = doc.splitlines()
    start = lines.index("    PagletError")
    tree = []
    for line in lines[start:]:
        if not line.strip():
            break
        tree.append(line)
    text = (DOCS / "errors.md").read_text()
    assert textwrap.dedent("\n".join(tree)) in text


def test_error_status_table_matches_the_classes() -> None:
    text = (DOCS / "errors.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d{3}) ", text, flags=re.MULTILINE))
    classes = _error_classes()
    assert sorted(rows) == sorted(classes)
    for name, status in rows.items():
        assert int(status) == int(classes[name].http_status), name
        assert http.HTTPStatus(int(status))


def test_every_http_route_is_documented() -> None:
    ctx = ApiContext(
        supervisor=None,
        events=None,
        host_info=dict,
        status=dict,
        api_key=None,
        max_body=1024,
        read_timeout=1.0,
    )
    app = build_app(ctx)
    for add in (
        add_mesh_routes,
        add_movement_routes,
        add_durability_routes,
        add_monitor_routes,
        add_service_routes,
    ):
        add(app, None)
    add_code_routes(app, None, 1.0)
    text = (DOCS / "operations.md").read_text()
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert routes
    missing = [r for r in sorted(routes) if f"| `{r[0]}` | `{r[1]}` |" not in text]
    assert not missing, f"routes missing from docs/operations.md: {missing}"


def test_every_host_flag_is_documented() -> None:
    text = (DOCS / "operations.md").read_text()
    options = [
        opt
        for param in command.get_params(click.Context(command))
        for opt in param.opts
        if opt.startswith("-")
    ]
    assert "--ready-file" in options
    missing = [opt for opt in options if f"`{opt}" not in text]
    assert not missing, f"paglets-host flags missing from docs/operations.md: {missing}"
