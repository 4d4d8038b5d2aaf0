"""Identifiers from outside are checked where they are parsed; paths built from them stay home.

Issue items 1 and 3, against a real host: an agent id that is a path (absolute or with
``..``) or thousands of characters long, a transfer id header that is a path, and ids in
URLs or JSON bodies that are not ids each get a 400 that names the problem, before any
effect; a victim directory and file under ``tmp_path``, outside the host's state
directory, stay untouched; and a well-formed id still works end to end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl
from aiohttp import web

from paglets import AsyncHostClient, Host, PagletError, RequestError
from paglets.config import HostConfig
from paglets.core.errors import ConfigurationError, EnvelopeError
from paglets.transport.app import ROUTE_IDS, check_route_ids
from paglets.wire.envelope import read_header
from tests.test_movement import _forged as forged_envelope
from tests.test_movement import _forged_spec, _transfer_headers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

COUNTER = "examples.counter:Counter"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory outside every host's state directory, with a file to keep."""
    root = tmp_path / "victim"
    root.mkdir()
    (root / "keep.txt").write_text("keep")
    return root


def _untouched(victim: Path) -> bool:
    return sorted(p.name for p in victim.iterdir()) == ["keep.txt"] and (
        (victim / "keep.txt").read_text() == "keep"
    )


async def _raw(
    method: str,
    url: str,
    body: Any = None,
    *,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request, its path sent exactly as given (no normalizing, no re-quoting)."""
    if body is not None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, yarl.URL(url, encoded=True), data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def _refused(status: int, answer: dict[str, Any], *words: str) -> str:
    """The message of a 400 ``RequestError``, which names each of ``words``."""
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "RequestError", error
    for word in words:
        assert word in error["message"], error["message"]
    return str(error["message"])


# -- item 1: agent ids on create --------------------------------------------------------


def _bad_agent_ids(victim: Path) -> list[tuple[str, str]]:
    """(an id, the words its refusal must hold)."""
    return [
        (str(victim), "is not valid"),
        (str(victim / "sub"), "is not valid"),
        ("../x", "is not valid"),
        (f"../../../../../../../../..{victim}", "is not valid"),
        ("a" * 10_000, "the limit is 128"),
        ("..", "is not valid"),
        (".hidden", "is not valid"),
        ("a\x00b", "is not valid"),
    ]


async def test_create_refuses_an_agent_id_that_is_not_an_id(
    host: Host, client: AsyncHostClient, victim: Path
) -> None:
    for bad, words in _bad_agent_ids(victim):
        status, answer = await _raw(
            "POST", f"{host.url}/v1/paglets", {"class_path": COUNTER, "agent_id": bad}
        )
        _refused(status, answer, "agent id", words)
        # disposing it, by URL and inside the host, finds nothing and removes nothing
        if len(bad) < 1000:  # (a longer URL is refused by the HTTP parser itself)
            status, answer = await _raw("DELETE", f"{host.url}/v1/paglets/{quote(bad, safe='')}")
            _refused(status, answer, "agent id")
        with pytest.raises(PagletError):
            await host.supervisor.dispose(bad)
    assert await client.list() == []
    assert _untouched(victim)
    # nothing the attempts made (a work dir, a checkpoint) landed next to the victim
    assert sorted(p.name for p in victim.parent.iterdir()) == ["state0", "victim"]


async def test_the_supervisor_itself_refuses_a_path_for_an_agent_id(
    host: Host, victim: Path
) -> None:
    """Defense in depth: a caller inside the host that skipped the edge gets no further."""
    with pytest.raises(RequestError, match="agent id"):
        await host.supervisor.create(COUNTER, None, str(victim))
    for build in (
        host.supervisor.work_dir,
        host.supervisor.files_dir,
        host.supervisor.checkpoint_path,
    ):
        with pytest.raises(RequestError):
            build(str(victim))
        with pytest.raises(RequestError):
            build("../victim")
    assert host.supervisor.list() == []
    assert _untouched(victim)


async def test_a_well_formed_id_works_end_to_end(host: Host, client: AsyncHostClient) -> None:
    agent_id = "Counter-1.b_2"
    status, answer = await _raw(
        "POST", f"{host.url}/v1/paglets", {"class_path": COUNTER, "agent_id": agent_id}
    )
    assert status == 201, answer
    assert answer["agent_id"] == agent_id
    base = f"{host.url}/v1/paglets/{agent_id}"
    message = {
        "kind": "increment",
        "args": {"by": 2},
        "message_id": "msg-1.a",
        "sender": "some-paglet_9",
        "mode": "future",
    }
    status, answer = await _raw("POST", f"{base}/messages", message)
    assert status == 202, answer
    status, answer = await _raw("GET", f"{base}/messages/msg-1.a?wait=10")
    assert (status, answer) == (200, {"done": True, "reply": {"count": 2}})
    status, answer = await _raw("POST", f"{base}/checkpoint", {})
    assert status == 200, answer
    checkpoint = host.supervisor.checkpoint_path(agent_id)
    assert checkpoint.is_file()
    assert checkpoint.is_relative_to(host.config.home)
    work = host.supervisor.work_dir(agent_id)
    assert work.parent == host.supervisor.work_root
    status, answer = await _raw("DELETE", base)
    assert (status, answer) == (200, {"disposed": True})
    assert not work.exists()
    assert (await client.proxy(agent_id).info()).status == "disposed"


# -- item 3: the transfer id header -----------------------------------------------------


def _forged(transfer_id: str, agent_id: str = "f" * 32) -> bytes:
    """A well-formed envelope of a Counter, written by hand as an attacker would."""
    state = json.dumps({"count": 7, "visits": []}).encode()
    return forged_envelope(COUNTER, "examples.counter:CounterState", state, transfer_id, agent_id)


def _path_from_inbox(host: Host, target: Path) -> str:
    """A relative path from the host's inbox up to ``/`` and down to ``target``."""
    inbox = host.transfers.receiver.inbox
    return "../" * (len(inbox.parts) - 1) + str(target).lstrip("/")


async def test_a_transfer_id_header_that_is_a_path_lands_nothing(
    host: Host, tmp_path: Path
) -> None:
    target = tmp_path / "v"
    landing = tmp_path / "v.in"  # where the envelope would land: f"{transfer_id}.in"
    landing.write_text("keep")
    transfer_id = _path_from_inbox(host, target)
    assert len(transfer_id) < 200, "the old code took ids of up to 200 chars"
    status, answer = await _raw(
        "POST",
        f"{host.url}/v1/transfers",
        data=_forged(transfer_id),
        headers=_transfer_headers(transfer_id),
    )
    _refused(status, answer, "X-Paglets-Transfer", "transfer id", "is not valid")
    assert landing.read_text() == "keep"
    assert host.supervisor.list() == []
    inbox = host.transfers.receiver.inbox
    assert not inbox.exists() or not any(inbox.iterdir())


@pytest.mark.parametrize(
    ("transfer_id", "words"),
    [
        ("../../v", "is not valid"),
        ("/tmp/v", "is not valid"),
        ("..", "is not valid"),
        ("t" * 129, "the limit is 128"),
        ("", "must not be empty"),
    ],
)
async def test_a_bad_transfer_id_header_is_refused_before_the_body_is_read(
    host: Host, transfer_id: str, words: str
) -> None:
    """The 400 comes while the sender still holds back its body: nothing was read first."""
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield _forged("t" * 32)[:10]
        await release.wait()  # the rest never comes while the host decides

    try:
        async with asyncio.timeout(10):
            status, answer = await _raw(
                "POST",
                f"{host.url}/v1/transfers",
                data=body(),
                headers=_transfer_headers(transfer_id),
            )
    finally:
        release.set()
    _refused(status, answer, "X-Paglets-Transfer", words)
    assert host.supervisor.list() == []


# -- ids in URLs --------------------------------------------------------------------------


BAD_URLS = [
    # (method, path after the host URL, words of the refusal): each path matches a
    # route, so the id check answers, before the handler
    ("GET", "/v1/paglets/..%2F..%2Fvictim", "agent id '../../victim' is not valid"),
    ("DELETE", "/v1/paglets/..%2Fvictim", "agent id '../victim' is not valid"),
    ("DELETE", "/v1/paglets/%2Fvictim", "agent id '/victim' is not valid"),
    ("GET", "/v1/paglets/%2E%2E", "agent id '..' is not valid"),
    ("GET", "/v1/paglets/.hidden/state", "agent id '.hidden' is not valid"),
    ("DELETE", "/v1/paglets/-rf", "agent id '-rf' is not valid"),
    ("GET", "/v1/paglets/a%20b", "agent id 'a b' is not valid"),
    ("GET", "/v1/paglets/a%00b", "is not valid"),
    ("GET", "/v1/paglets/" + "a" * 129, "the limit is 128"),
    ("POST", "/v1/paglets/..%2Fx/messages", "agent id"),
    ("GET", "/v1/paglets/LIVE/messages/..%2Fm", "message id '../m' is not valid"),
    ("POST", "/v1/paglets/..%2Fx/move", "agent id"),
    ("POST", "/v1/paglets/..%2Fx/checkpoint", "agent id"),
    ("POST", "/v1/paglets/..%2Fx/deactivate", "agent id"),
    ("POST", "/v1/paglets/..%2Fx/activate", "agent id"),
    ("POST", "/v1/paglets/..%2Fx/monitors", "agent id"),
    ("POST", "/v1/transfers/..%2F..%2Fv/abort", "transfer id '../../v' is not valid"),
]


async def test_bad_ids_in_urls_answer_400_without_effect(host: Host, victim: Path) -> None:
    live = (await _raw("POST", f"{host.url}/v1/paglets", {"class_path": COUNTER}))[1]
    for method, path, words in BAD_URLS:
        body = {} if method == "POST" else None
        status, answer = await _raw(method, host.url + path.replace("LIVE", live["agent_id"]), body)
        _refused(status, answer, words)
    # a path the router itself cannot match is a 404, as any unknown URL
    status, answer = await _raw("GET", f"{host.url}/v1/paglets/a/b/c/d")
    assert status == 404, answer
    assert [r.agent_id for r in host.supervisor.list()] == [live["agent_id"]]
    assert host.supervisor.get(live["agent_id"]).status.value == "active"
    assert _untouched(victim)


async def test_every_route_says_which_kind_of_id_it_takes(host: Host) -> None:
    runner = host._runner  # the real application of a real host
    assert runner is not None
    taken: set[str] = set()
    for resource in runner.app.router.resources():
        pattern = resource.get_info().get("pattern")
        if pattern is not None:
            taken |= set(pattern.groupindex)
    assert taken == set(ROUTE_IDS)


async def test_a_route_with_an_unknown_id_stops_the_host_starting() -> None:
    app = web.Application()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/things/{thing_id}", handler)
    with pytest.raises(TypeError, match=r"thing_id.*ROUTE_IDS"):
        await check_route_ids(app)


# -- ids in JSON bodies and queries -------------------------------------------------------


async def test_bad_ids_in_bodies_and_queries_answer_400(
    host: Host, client: AsyncHostClient, victim: Path
) -> None:
    live = (await client.create(COUNTER)).agent_id
    url = host.url
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/v1/retract", {"agent_id": "../x", "host": "nowhere"}, "agent id"),
        ("POST", "/v1/retract", {"agent_id": str(victim), "host": "nowhere"}, "agent id"),
        ("POST", "/v1/transfers/t1/abort", {"agent_id": "../x", "source": "s"}, "agent id"),
        (
            "POST",
            f"/v1/paglets/{live}/messages",
            {"kind": "get", "message_id": "../m"},
            "'message_id'",
        ),
        (
            "POST",
            f"/v1/paglets/{live}/messages",
            {"kind": "get", "sender": str(victim)},
            "'sender'",
        ),
        (
            "POST",
            f"/v1/paglets/{live}/messages",
            {"kind": "get", "message_id": "m" * 201},
            "limit is 200",
        ),
        (
            "POST",
            f"/v1/paglets/{live}/monitors",
            {"watcher": "../w", "watcher_url": "http://127.0.0.1:1"},
            "agent id",
        ),
        (
            "POST",
            "/v1/monitors/down",
            {"watcher": "../w", "agent_id": live, "host": "h", "reason": "r", "detail": ""},
            "agent id",
        ),
        (
            "POST",
            "/v1/monitors/down",
            {"watcher": live, "agent_id": "/x", "host": "h", "reason": "r", "detail": ""},
            "agent id",
        ),
        (
            "POST",
            "/v1/monitors/down",
            {"watcher": live, "agent_id": live, "host": "../h", "reason": "r", "detail": ""},
            "host name",
        ),
        ("GET", "/v1/events?agent_id=..%2Fx", None, "agent id"),
    ]
    for method, path, body, words in cases:
        status, answer = await _raw(method, url + path, body)
        _refused(status, answer, words)
    assert host.supervisor.get(live).status.value == "active"
    assert await client.proxy(live).send("get") == {"count": 0}
    assert _untouched(victim)


async def test_the_client_refuses_a_bad_id_before_it_builds_a_url(
    client: AsyncHostClient,
) -> None:
    with pytest.raises(RequestError, match="agent id"):
        client.proxy("../../v1/host")


@pytest.mark.parametrize("name", ["a b", "../x", "a/b", "-x", "h" * 65, "é"])
def test_a_host_name_that_is_not_an_id_stops_the_host(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"host name .* is not valid"):
        HostConfig(name=name, state_dir=tmp_path)


@pytest.mark.parametrize("field", ["origin", "source"])
def test_an_envelope_naming_a_host_that_is_not_a_name_is_refused(field: str) -> None:
    spec = _forged_spec("a1", COUNTER, "examples.counter:CounterState")
    header = {
        **dataclasses.asdict(spec),
        field: "../../x",
        "state_len": 0,
        "blobs": [],
        "files": [],
    }
    text = json.dumps(header).encode()
    with pytest.raises(EnvelopeError, match=f"header.{field}: host name"):
        read_header(struct.pack(">4sHI", b"PGLE", 1, len(text)) + text)
