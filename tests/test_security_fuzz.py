"""Fuzzing from the outside: hostile bytes get a 4xx, cost bounded memory and write nothing
outside the state directory.

One real ``paglets-host`` process takes generated requests on every JSON route and on the
envelope route; the envelope parser is fuzzed directly too. After the run the host must
still serve, its memory must not have grown without bound, and the directory around its
state directory must hold nothing but what the test put there.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import math
import struct
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.counter import CounterState
from paglets.core.errors import PagletError
from paglets.wire.envelope import read_header
from paglets.wire.state_json import state_to_json
from tests.test_movement import _transfer_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.hostproc import RunningHost

pytestmark = pytest.mark.timeout(300)

EXAMPLES = 150
GROWTH_BOUND = 200 * 1024 * 1024  # the host's RSS may not grow by more than this
PREFIX = struct.Struct(">4sHI")
ID_ROUTES = ("", "/state", "/messages", "/move", "/deactivate", "/activate", "/checkpoint")

# -- strategies ------------------------------------------------------------------------

_weird_numbers = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e20", "-1", "0", "1e-400", "2e9"]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _hostile_ids(victim: Path) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [str(victim), f"../../{victim.name}", "..", ".", "a/b", "-x", "x" * 5000, "\ud800"]
        ),
        st.text(max_size=60),
    )


def _field_bodies(victim: Path) -> st.SearchStrategy[str]:
    """JSON bodies with the routes' own field names and hostile values, as raw text."""
    names = st.sampled_from(
        [
            "class_path", "state", "agent_id", "restart_policy", "kind", "args", "priority",
            "message_id", "sender", "mode", "timeout", "no_delay", "target", "ticket", "host",
            "until", "duration", "max_restarts", "window", "backoff", "retries", "phase",
            "source", "watcher", "url", "records",
        ]
    )  # fmt: skip
    raw_value = st.one_of(
        _weird_numbers,
        _hostile_ids(victim).map(json.dumps),
        _json_values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.just('"\\ud800"'),
        st.just('{"max_restarts": 1e400, "window": NaN, "backoff": NaN}'),
    )
    return st.dictionaries(names, raw_value, max_size=6).map(
        lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
    )


def _bodies(victim: Path) -> st.SearchStrategy[bytes]:
    return st.one_of(
        _field_bodies(victim).map(str.encode),
        _json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(min_value=1, max_value=200_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.binary(max_size=200),
    )


def _envelopes(victim: Path) -> st.SearchStrategy[bytes]:
    """An envelope prefix, a header of real field names with hostile values, junk after."""
    file_entry = st.fixed_dictionaries(
        {
            "name": st.one_of(
                st.sampled_from([str(victim), "../x", "a/" * 400 + "b", "x" * 3000]),
                st.text(max_size=30),
            ),
            "size": st.one_of(st.integers(min_value=-1, max_value=2**45), _scalars),
            "mode": st.sampled_from(["copy", "move", "", None]),
            "sha256": st.one_of(st.just("0" * 64), st.text(max_size=70)),
        }
    )
    header = st.fixed_dictionaries(
        {
            "agent_id": _hostile_ids(victim),
            "class_path": st.sampled_from(
                ["examples.counter:Counter", "os:system", "examples.counter:CounterState", "x"]
            ),
            "state_class_path": st.sampled_from(
                ["examples.counter:CounterState", "builtins:dict", "os:system"]
            ),
            "transfer_id": _hostile_ids(victim),
            "kind": st.sampled_from(["dispatch", "clone", "retract", "checkpoint", "x"]),
            "hops": st.integers(min_value=-1, max_value=2**40),
            "origin": st.text(max_size=10),
            "origin_url": st.text(max_size=30),
            "source": st.text(max_size=10),
            "created": st.floats(allow_nan=True, allow_infinity=True),
            "ticket": _json_values,
            "meta": st.one_of(
                _json_values,
                st.just({"files": [{"path": str(victim), "name": "v", "mode": "move"}]}),
            ),
            "state_len": st.integers(min_value=-1, max_value=2**42),
            "blobs": st.lists(st.integers(min_value=-1, max_value=2**42), max_size=3),
            "files": st.lists(file_entry, max_size=4),
        }
    )

    def pack(h: dict[str, Any], tail: bytes) -> bytes:
        text = json.dumps(h, allow_nan=True).encode()
        return PREFIX.pack(b"PGLE", 1, len(text)) + text + tail

    return st.builds(pack, header, st.binary(max_size=300))


def _whole_envelope(
    agent_id: str, transfer_id: str, files: dict[str, bytes], meta: dict[str, Any]
) -> bytes:
    """A well-formed envelope of a Counter: right sizes and digests, hostile names."""
    state = json.dumps(state_to_json(CounterState()), separators=(",", ":")).encode()
    header = {
        "agent_id": agent_id,
        "class_path": "examples.counter:Counter",
        "state_class_path": "examples.counter:CounterState",
        "transfer_id": transfer_id,
        "kind": "dispatch",
        "hops": 0,
        "origin": "a",
        "origin_url": "http://127.0.0.1:1",
        "source": "a",
        "created": 0.0,
        "ticket": {},
        "meta": meta,
        "state_len": len(state),
        "blobs": [],
        "files": [
            {"name": n, "size": len(c), "mode": "copy", "sha256": hashlib.sha256(c).hexdigest()}
            for n, c in files.items()
        ],
    }
    text = json.dumps(header).encode()
    return PREFIX.pack(b"PGLE", 1, len(text)) + text + state + b"".join(files.values())


def _whole_envelopes(victim: Path) -> st.SearchStrategy[tuple[bytes, str]]:
    """Envelopes that parse, with a hostile id, file name or registration; and their id."""
    names = st.one_of(
        st.sampled_from([str(victim / "x"), f"../../{victim.name}/x", "../x", "a/../../x"]),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    )
    meta = st.sampled_from(
        [
            {},
            {"files": [{"path": str(victim / "keep.txt"), "name": "keep.txt", "mode": "move"}]},
            {"files": {"keep.txt": str(victim / "keep.txt")}},
        ]
    )

    def build(
        agent: str, transfer: str, files: dict[str, bytes], m: dict[str, Any]
    ) -> tuple[bytes, str]:
        return _whole_envelope(agent, transfer, files, m), transfer

    return st.builds(
        build,
        _hostile_ids(victim),
        st.one_of(_hostile_ids(victim), st.uuids().map(lambda u: u.hex)),
        st.dictionaries(names, st.binary(max_size=20), max_size=3),
        meta,
    )


# -- the host and requests -------------------------------------------------------------


class Raw:
    """One keep-alive connection that sends exactly the bytes it is given."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            return response.status, response.read()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()  # the host may close a connection it refused; reconnect
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def _post_envelope(raw: Raw, envelope: bytes, transfer: str) -> None:
    """Post ``envelope`` as transfer ``transfer`` (quoted, cut to 300 bytes); only a 4xx."""
    quoted = quote(transfer.encode("utf-8", "surrogatepass"), safe="")[:300]
    status, answer = raw.request("POST", "/v1/transfers", envelope, _transfer_headers(quoted))
    _check_answer(status, answer, f"envelope {envelope[:300]!r}")


def _check_answer(status: int, body: bytes, what: str) -> None:
    assert status < 500, f"{what} got {status}: {body[:500]!r}"
    if status >= 400:
        error = json.loads(body)["error"]
        assert error["message"], what
        assert not error.get("traceback"), f"{what}: a traceback left the host"


def _files_outside(root: Path, allowed: set[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.relative_to(root).parts[0] not in allowed)


@pytest.fixture
def fuzz_host(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> Iterator[tuple[RunningHost, Raw, Path]]:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    host = start_host()
    raw = Raw(host.url)
    try:
        yield host, raw, victim
    finally:
        raw.close()


def _after_run(host: RunningHost, raw: Raw, tmp_path: Path, rss_before: int) -> None:
    status, body = raw.request("GET", "/health")
    assert status == 200, body
    status, body = raw.request(
        "POST", "/v1/paglets", json.dumps({"class_path": "examples.counter:Counter"}).encode()
    )
    assert status == 201, body
    grown = psutil.Process(host.process.pid).memory_info().rss - rss_before
    assert grown < GROWTH_BOUND, f"the host grew by {grown / 2**20:.0f} MiB"
    assert (tmp_path / "victim" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "victim").iterdir()) == ["keep.txt"]
    made_by_test = {"state", "victim", host.ready_file.name, host.log_file.name}
    assert _files_outside(tmp_path, made_by_test) == []


def test_json_routes_answer_hostile_bodies_with_4xx(
    fuzz_host: tuple[RunningHost, Raw, Path], tmp_path: Path
) -> None:
    host, raw, victim = fuzz_host
    status, body = raw.request(
        "POST", "/v1/paglets", json.dumps({"class_path": "examples.counter:Counter"}).encode()
    )
    assert status == 201, body
    live = json.loads(body)["agent_id"]
    rss_before = psutil.Process(host.process.pid).memory_info().rss
    routes = [
        "/v1/paglets",
        "/v1/retract",
        "/v1/monitors/down",
        "/v1/mesh/gossip",
        "/v1/transfers/t1/abort",
        *(f"/v1/paglets/{live}{r}" for r in ID_ROUTES if r not in {"", "/state"}),
        f"/v1/paglets/{live}/monitors",
    ]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(route=st.sampled_from(routes), body=_bodies(victim))
    def run(route: str, body: bytes) -> None:
        status, answer = raw.request("POST", route, body, {"Content-Type": "application/json"})
        _check_answer(status, answer, f"POST {route} {body[:200]!r}")

    run()
    _after_run(host, raw, tmp_path, rss_before)


def test_ids_in_urls_answer_with_4xx(
    fuzz_host: tuple[RunningHost, Raw, Path], tmp_path: Path
) -> None:
    host, raw, victim = fuzz_host
    rss_before = psutil.Process(host.process.pid).memory_info().rss

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(
        agent_id=_hostile_ids(victim),
        route=st.sampled_from(ID_ROUTES),
        method=st.sampled_from(["GET", "POST", "DELETE"]),
    )
    def run(agent_id: str, route: str, method: str) -> None:
        path = f"/v1/paglets/{quote(agent_id.encode('utf-8', 'surrogatepass'), safe='')}{route}"
        body = b"{}" if method == "POST" else None
        status, answer = raw.request(method, path, body, {"Content-Type": "application/json"})
        _check_answer(status, answer, f"{method} {path[:200]}")

    run()
    _after_run(host, raw, tmp_path, rss_before)


def test_forged_envelopes_answer_with_4xx(
    fuzz_host: tuple[RunningHost, Raw, Path], tmp_path: Path
) -> None:
    host, raw, victim = fuzz_host
    rss_before = psutil.Process(host.process.pid).memory_info().rss

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(
        envelope=_envelopes(victim),
        transfer=st.one_of(_hostile_ids(victim), st.uuids().map(lambda u: u.hex)),
    )
    def run(envelope: bytes, transfer: str) -> None:
        _post_envelope(raw, envelope, transfer)

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(whole=_whole_envelopes(victim))
    def run_whole(whole: tuple[bytes, str]) -> None:
        _post_envelope(raw, *whole)

    run()
    run_whole()
    status, body = raw.request("GET", "/v1/paglets")
    assert status == 200
    arrived = json.loads(body)["paglets"]
    assert all("/" not in p["agent_id"] for p in arrived), arrived
    _after_run(host, raw, tmp_path, rss_before)


@settings(max_examples=400, deadline=None, database=None)
@given(data=st.binary(max_size=400))
def test_envelope_header_parser_raises_only_its_own_errors_on_junk(data: bytes) -> None:
    for blob in (data, PREFIX.pack(b"PGLE", 1, len(data)) + data):
        with contextlib.suppress(PagletError):
            read_header(blob)


@settings(max_examples=300, deadline=None, database=None)
@given(header=_envelopes(__import__("pathlib").Path("/nonexistent/victim")))
def test_envelope_header_parser_checks_every_field(header: bytes) -> None:
    try:
        parsed, _ = read_header(header)
    except PagletError:
        return
    assert "/" not in parsed.agent_id
    assert parsed.agent_id not in {".", ".."}
    assert all(not f.name.startswith("/") and ".." not in f.name.split("/") for f in parsed.files)
    assert math.isfinite(parsed.created)
