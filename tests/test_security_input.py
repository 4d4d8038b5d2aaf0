"""Bad input and unbounded queues (issue 14, items 9 to 11), against real hosts.

- Malformed input is a 4xx that says what was wrong, before it has any effect:
  deep nesting, lone surrogates, numbers that are not finite or out of range, a
  wake-up time ten thousand years ahead, an unknown paglet to activate. Replies
  are strict JSON; error bodies carry no traceback unless the host has
  ``debug_errors``; an unexpected exception is a 500 with an id found in the log.
- Every queued message counts toward the mailbox bound, one-way ones too, and so
  do their bytes: a flood of one-way sends to a busy paglet is refused with 429
  and the host's memory stays bounded.
- A host runs at most ``max_paglets`` paglets and refuses new children while its
  children's memory is over ``max_child_memory``: creates, arrivals and
  activations get 503 ``HostFullError`` naming the flag.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest
from aiohttp import web
from conftest import wait_for

from paglets import AsyncHostClient
from paglets.core.errors import HostFullError, HostNotRunningError, ProtocolError, RequestError
from paglets.core.movement import TransferTicket
from paglets.core.policy import RestartMode, RestartPolicy
from paglets.runtime.admission import UNMEASURED_CHILD, Admission
from paglets.runtime.frames import HEADER, FrameDecoder, FrameKind, encode_json
from paglets.runtime.records import SupervisorLimits
from paglets.transport.app import front_middleware
from paglets.wire import strict_json
from pagletstest import host_env

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets import Host

HOLDER = "pagletstest.limits:Holder"
MiB = 1024 * 1024
HOST_CMD = (sys.executable, "-m", "paglets.cli.host")


class Api:
    """Raw HTTP to one host: bodies exactly as written, answers as status and JSON."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(
        self, method: str, path: str, body: str | bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        async with self.session.request(
            method, self.url + path, data=body, headers=headers
        ) as response:
            text = await response.text()
        # every answer is strict JSON: no NaN, no Infinity
        return response.status, strict_json.loads(text, "response")

    async def post(self, path: str, body: str | bytes | dict[str, Any]) -> tuple[int, Any]:
        raw = json.dumps(body) if isinstance(body, dict) else body
        return await self.call("POST", path, raw)

    async def create(self, class_path: str = HOLDER, **fields: Any) -> str:
        status, answer = await self.post("/v1/paglets", {"class_path": class_path, **fields})
        assert status == 201, answer
        agent_id: str = answer["agent_id"]
        return agent_id

    async def send(self, agent_id: str, kind: str, **fields: Any) -> tuple[int, Any]:
        return await self.post(f"/v1/paglets/{agent_id}/messages", {"kind": kind, **fields})

    async def status_of(self, agent_id: str) -> str:
        status, info = await self.call("GET", f"/v1/paglets/{agent_id}")
        assert status == 200, info
        value: str = info["status"]
        return value


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def api(host: Host, session: aiohttp.ClientSession) -> Api:
    return Api(session, host.url)


def _refused(status: int, answer: Any, *, code: int = 400, says: str = "") -> None:
    assert status == code, answer
    error = answer["error"]
    assert error["traceback"] is None
    assert says.lower() in error["message"].lower(), error["message"]


# -- item 9: malformed input ---------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 100_000])
async def test_deeply_nested_json_is_a_400(api: Api, depth: int) -> None:
    # 100 levels parse in Python but exceed the bound; 100,000 raised RecursionError (a 500)
    for path in ("/v1/paglets", "/v1/paglets/someone/messages", "/v1/paglets/someone/deactivate"):
        status, answer = await api.post(path, "[" * depth + "]" * depth)
        _refused(status, answer, says="nested more than")
    status, answer = await api.post("/v1/paglets", '{"a":' * depth + "1" + "}" * depth)
    _refused(status, answer, says="nested more than")
    assert (await api.call("GET", "/health"))[0] == 200


def _nested(depth: int, sibling: str) -> str:
    text = '"x"'
    for _ in range(depth):
        text = f"[{sibling},{text}]"
    return text


@pytest.mark.parametrize(
    ("sibling", "levels"),
    [
        ("1", 0),
        ('"[[[["', 0),  # brackets inside strings do not count
        ('"\\\\"', 0),  # an escaped backslash before the closing quote
        ('"\\"[{"', 0),  # an escaped quote inside a string
        ('"", "", {"": "]"}', 1),  # empty strings side by side, a bracket in a value
        ('{"k\\\\\\"[": [[[]]]}', 4),  # nesting of its own beside the path
    ],
)
def test_nesting_is_measured_exactly_around_strings_and_escapes(sibling: str, levels: int) -> None:
    deepest = 64 - levels
    strict_json.loads(_nested(deepest, sibling))
    with pytest.raises(RequestError, match="nested more than 64 deep"):
        strict_json.loads(_nested(deepest + 1, sibling))
    assert strict_json.loads(json.dumps([[[sibling]]] * 100)) == [[[sibling]]] * 100


async def test_nesting_within_the_bound_is_accepted(api: Api) -> None:
    agent_id = await api.create()
    args = {"deep": json.loads("[" * 60 + "]" * 60)}
    status, answer = await api.send(agent_id, "count", args=args)
    assert (status, answer) == (200, {"reply": 1})


async def test_lone_surrogate_in_args_is_refused_and_the_paglet_lives(api: Api) -> None:
    agent_id = await api.create()
    for body in (
        '{"kind": "count", "args": {"text": "\\ud800"}}',
        '{"kind": "count", "args": {"\\udfff": 1}}',
        '{"kind": "count", "args": {"list": ["ok", "\\udbff\\u0041"]}}',
    ):
        status, answer = await api.post(f"/v1/paglets/{agent_id}/messages", body)
        _refused(status, answer, says="lone UTF-16 surrogate")
    # a well-formed pair is one character, not a lone half
    status, answer = await api.post(
        f"/v1/paglets/{agent_id}/messages", '{"kind": "count", "args": {"t": "\\ud83d\\ude00"}}'
    )
    assert (status, answer) == (200, {"reply": 1})


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
async def test_non_finite_numbers_in_args_are_refused(api: Api, number: str) -> None:
    agent_id = await api.create()
    body = f'{{"kind": "count", "args": {{"x": {number}}}}}'
    status, answer = await api.post(f"/v1/paglets/{agent_id}/messages", body)
    _refused(status, answer, says="finite")
    assert (await api.send(agent_id, "count")) == (200, {"reply": 1})  # nothing was handled


async def test_a_reply_strict_json_cannot_carry_is_an_error_not_invalid_json(api: Api) -> None:
    agent_id = await api.create()
    # Api.call parses every answer strictly: a NaN in the body would fail it
    status, answer = await api.send(agent_id, "nan")
    assert status == 422, answer
    assert answer["error"]["type"] == "HandlerError"
    assert "JSON" in answer["error"]["message"]
    assert (await api.send(agent_id, "count")) == (200, {"reply": 1})


@pytest.mark.parametrize(
    "body",
    [
        '{"until": 1e20}',
        '{"until": -1}',
        '{"until": "tomorrow"}',
        '{"duration": NaN}',
        '{"duration": Infinity}',
        '{"duration": -5}',
        '{"duration": 1e12}',
        '{"duration": true}',
        '{"until": 1, "duration": 1}',
    ],
)
async def test_deactivate_with_a_bad_time_is_refused_before_anything(api: Api, body: str) -> None:
    agent_id = await api.create()
    status, answer = await api.post(f"/v1/paglets/{agent_id}/deactivate", body)
    _refused(status, answer)
    assert await api.status_of(agent_id) == "active"
    assert (await api.send(agent_id, "count")) == (200, {"reply": 1})


async def test_deactivate_with_a_near_wake_up_time_works(api: Api) -> None:
    agent_id = await api.create()
    status, answer = await api.post(f"/v1/paglets/{agent_id}/deactivate", {"duration": 3600})
    assert status == 200, answer
    assert await api.status_of(agent_id) == "inactive"


@pytest.mark.parametrize(
    "policy",
    [
        '{"mode": "always", "max_restarts": 1e400}',
        '{"mode": "always", "max_restarts": 1' + "0" * 400 + "}",
        '{"mode": "always", "max_restarts": -1}',
        '{"mode": "always", "max_restarts": 2.5}',
        '{"mode": "always", "max_restarts": "3"}',
        '{"mode": "always", "window": NaN}',
        '{"mode": "always", "window": 0}',
        '{"mode": "always", "backoff": Infinity}',
        '{"mode": "always", "max_backoff": 1e300}',
        '{"mode": ["always"]}',
    ],
)
async def test_a_bad_restart_policy_is_refused_and_nothing_is_created(
    api: Api, policy: str
) -> None:
    body = f'{{"class_path": "{HOLDER}", "restart_policy": {policy}}}'
    status, answer = await api.post("/v1/paglets", body)
    _refused(status, answer)
    status, listing = await api.call("GET", "/v1/paglets")
    assert listing["paglets"] == []


@pytest.mark.parametrize(
    "ticket",
    [
        '{"retries": 1e400}',
        '{"retries": 1' + "0" * 400 + "}",
        '{"retries": 1000}',
        '{"timeout": NaN}',
        '{"timeout": Infinity}',
        '{"timeout": 0}',
        '{"timeout": 1e9}',
    ],
)
async def test_a_bad_ticket_is_refused_and_nothing_moves(api: Api, ticket: str) -> None:
    agent_id = await api.create()
    body = f'{{"kind": "clone", "ticket": {ticket}}}'
    status, answer = await api.post(f"/v1/paglets/{agent_id}/move", body)
    _refused(status, answer)
    status, listing = await api.call("GET", "/v1/paglets")
    assert [p["agent_id"] for p in listing["paglets"]] == [agent_id]


def test_policy_and_ticket_refuse_what_an_envelope_header_could_hold() -> None:
    # An envelope header is JSON read by the envelope codec, not by read_json:
    # the records themselves refuse NaN and infinities.
    nan, inf = float("nan"), float("inf")
    for data in ({"timeout": nan}, {"timeout": inf}, {"retries": inf}, {"retries": True}):
        with pytest.raises(RequestError, match="ticket"):
            TransferTicket.from_dict(data)
    for data in ({"window": nan}, {"backoff": inf}, {"max_restarts": inf}, {"max_backoff": -1}):
        with pytest.raises(RequestError):
            RestartPolicy.from_dict(data)
    with pytest.raises(RequestError):
        RestartPolicy(window=nan)
    # the restart delay stays a number however many restarts were counted
    policy = RestartPolicy(
        mode=RestartMode.ALWAYS, max_restarts=1_000_000, backoff=1.0, max_backoff=60.0
    )
    assert policy.delay(999_999) == 60.0


async def test_activating_an_unknown_paglet_is_a_404(api: Api) -> None:
    status, answer = await api.post("/v1/paglets/no-such-paglet/activate", {})
    _refused(status, answer, code=404, says="no paglet no-such-paglet")


async def test_activating_a_disposed_paglet_is_a_410(api: Api) -> None:
    agent_id = await api.create()
    assert (await api.call("DELETE", f"/v1/paglets/{agent_id}"))[0] == 200
    status, answer = await api.post(f"/v1/paglets/{agent_id}/activate", {})
    _refused(status, answer, code=410, says="disposed")


async def test_activating_an_inactive_paglet_answers_its_status(api: Api) -> None:
    agent_id = await api.create()
    assert (await api.post(f"/v1/paglets/{agent_id}/deactivate", {}))[0] == 200
    status, answer = await api.post(f"/v1/paglets/{agent_id}/activate", {})
    assert (status, answer) == (200, {"agent_id": agent_id, "status": "active"})


def test_the_child_channel_carries_a_lone_surrogate_and_refuses_nan() -> None:
    # A string a paglet builds can hold a lone surrogate (UTF-8 cannot): the frame
    # escapes it rather than failing, and the other end reads the same string back.
    frame = encode_json({"op": "reply", "value": "a\ud800b"})
    assert FrameDecoder().feed(frame) == [{"op": "reply", "value": "a\ud800b"}]
    with pytest.raises(ValueError, match="JSON"):
        encode_json({"op": "reply", "value": float("nan")})
    forged = b'{"op": "reply", "value": NaN}'
    with pytest.raises(ProtocolError, match="NaN"):
        FrameDecoder().feed(HEADER.pack(FrameKind.JSON, len(forged)) + forged)


async def test_a_client_reading_an_answer_nested_too_deep_gets_a_protocol_error() -> None:
    # what a host's client (a proxy, a monitor) reads from a URL may be anyone's answer
    async def deep(_request: web.Request) -> web.Response:
        return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/host", deep)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with AsyncHostClient(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(ProtocolError, match="not JSON"):
                await client.request("GET", "/v1/host")
    finally:
        await runner.cleanup()


# -- item 9: no tracebacks unless debug_errors ------------------------------------------------


async def test_error_bodies_and_events_carry_no_traceback_by_default(api: Api) -> None:
    agent_id = await api.create()
    status, answer = await api.send(agent_id, "fail", args={"text": "on purpose"})
    assert status == 422, answer
    assert answer["error"]["type"] == "HandlerError"
    assert "on purpose" in answer["error"]["message"]
    assert answer["error"]["traceback"] is None
    # a failed one-way message becomes an event: without its traceback either
    assert (await api.send(agent_id, "fail", mode="oneway"))[0] == 202

    async def failed_events() -> list[dict[str, Any]]:
        _, page = await api.call("GET", f"/v1/events?agent_id={agent_id}&kind=message.failed")
        events: list[dict[str, Any]] = page["events"]
        return events

    await wait_for(failed_events, what="the message.failed event")
    for event in await failed_events():
        assert "traceback" not in event["data"]


async def test_a_debug_host_shows_tracebacks(
    make_host: Callable[..., Awaitable[Host]], session: aiohttp.ClientSession
) -> None:
    host = await make_host(debug_errors=True)
    api = Api(session, host.url)
    agent_id = await api.create()
    status, answer = await api.send(agent_id, "fail", args={"text": "on purpose"})
    assert status == 422, answer
    assert "ValueError: on purpose" in answer["error"]["traceback"]


@pytest.mark.parametrize("debug", [False, True])
async def test_an_unexpected_exception_is_a_500_with_an_id_in_the_log(
    debug: bool, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug cannot be provoked through a real host's routes (that would be a bug
    # to fix): this serves the host's middleware with a route that has one.
    async def buggy(_request: web.Request) -> web.Response:
        raise KeyError("/opt/install/site-packages/paglets/secret.py")

    app = web.Application(middlewares=[front_middleware(None, None, debug=debug)])
    app.router.add_get("/buggy", buggy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.ERROR, logger="paglets.transport.app"):
            status, answer = await Api(session, f"http://127.0.0.1:{port}").call("GET", "/buggy")
    finally:
        await runner.cleanup()
    assert status == 500
    error = answer["error"]
    assert error["type"] == "HostError"
    error_id = error["message"].split()[2].rstrip(":;")
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged, f"error id {error_id} is not in the log"
    assert logged[0].exc_info is not None  # the log has the traceback
    if debug:
        assert "secret.py" in error["traceback"]
    else:
        assert error["traceback"] is None
        assert "secret.py" not in error["message"]
        assert "KeyError" not in error["message"]


# -- item 10: every queued message counts -------------------------------------------------------


def _rss() -> int:
    """This process's resident memory: the in-process host's, with the test's."""
    return int(psutil.Process().memory_info().rss)


async def test_one_way_messages_count_toward_the_mailbox_bound(
    make_host: Callable[..., Awaitable[Host]], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    host = await make_host(limits=SupervisorLimits(max_mailbox=5, stop_grace=1.0))
    api = Api(session, host.url)
    agent_id = await api.create()
    gate = tmp_path / "gate"
    assert (await api.send(agent_id, "hold", args={"gate": str(gate)}, mode="future"))[0] == 202
    accepted, refused = 0, 0
    for _ in range(50):
        status, answer = await api.send(agent_id, "count", mode="oneway")
        if status == 202:
            accepted += 1
        else:
            _refused(status, answer, code=429, says="messages waiting")
            assert answer["error"]["type"] == "MailboxFullError"
            refused += 1
    # the held message is one of the five
    assert (accepted, refused) == (4, 46)
    # future messages count the same way
    status, answer = await api.send(agent_id, "count", mode="future")
    assert status == 429, answer
    gate.touch()
    # once handled they no longer count: the mailbox takes messages again
    await wait_for(lambda: host.supervisor.get(agent_id).pending == 0, what="an empty mailbox")
    assert (await api.send(agent_id, "count")) == (200, {"reply": 5})


async def test_a_flood_of_one_way_sends_to_a_busy_paglet_leaves_host_memory_bounded(
    make_host: Callable[..., Awaitable[Host]], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # The paglet's handler holds (a plain def: its process reads nothing meanwhile).
    # Each one-way message carries 256 KiB; 400 of them would be 100 MiB in the host's
    # buffer to the child. A bound of 4 MiB of waiting messages refuses all but ~16.
    bound = 4 * MiB
    host = await make_host(
        limits=SupervisorLimits(max_mailbox_bytes=bound, stop_grace=1.0), max_body=2 * MiB
    )
    api = Api(session, host.url)
    agent_id = await api.create()
    gate = tmp_path / "gate"
    assert (await api.send(agent_id, "hold", args={"gate": str(gate)}, mode="future"))[0] == 202
    payload = json.dumps({"kind": "count", "mode": "oneway", "args": {"blob": "x" * (256 * 1024)}})
    path = f"/v1/paglets/{agent_id}/messages"
    await api.post(path, payload)  # the first buffers and connections, before measuring
    before = _rss()
    statuses = [(await api.post(path, payload))[0] for _ in range(400)]
    grown = _rss() - before
    accepted = statuses.count(202)
    print(f"accepted {accepted} of 400; the host grew by {grown / MiB:.1f} MiB")
    assert grown < 40 * MiB, f"the host grew by {grown / MiB:.0f} MiB"
    assert set(statuses) == {202, 429}
    assert accepted <= bound // (256 * 1024) + 1, accepted
    record = host.supervisor.get(agent_id)
    assert record.handle is not None
    assert record.handle.queued_bytes <= bound + 300 * 1024
    gate.touch()
    await wait_for(lambda: host.supervisor.get(agent_id).pending == 0, what="an empty mailbox")
    assert (await api.send(agent_id, "count"))[1] == {"reply": accepted + 2}


# -- item 11: paglets and child memory per host ----------------------------------------------------


def _full(status: int, answer: Any, flag: str) -> None:
    _refused(status, answer, code=503, says=flag)
    assert answer["error"]["type"] == "HostFullError"


async def test_max_paglets_refuses_creates_and_activations(
    make_host: Callable[..., Awaitable[Host]], session: aiohttp.ClientSession
) -> None:
    host = await make_host(limits=SupervisorLimits(max_paglets=2))
    api = Api(session, host.url)
    first, second = await api.create(), await api.create()
    status, answer = await api.post("/v1/paglets", {"class_path": HOLDER})
    _full(status, answer, "--max-paglets 2")
    assert len((await api.call("GET", "/v1/paglets"))[1]["paglets"]) == 2
    # an inactive paglet has no process: it frees its place...
    assert (await api.post(f"/v1/paglets/{first}/deactivate", {}))[0] == 200
    third = await api.create()
    # ...and taking it back is refused while the host is full, by a message too
    status, answer = await api.post(f"/v1/paglets/{first}/activate", {})
    _full(status, answer, "--max-paglets 2")
    status, answer = await api.send(first, "count")
    _full(status, answer, "--max-paglets 2")
    assert await api.status_of(first) == "inactive"
    # a disposal frees a place: the inactive paglet comes back with its state
    assert (await api.call("DELETE", f"/v1/paglets/{third}"))[0] == 200
    assert (await api.send(first, "count")) == (200, {"reply": 1})
    assert await api.status_of(first) == "active"
    assert await api.status_of(second) == "active"


async def test_max_paglets_refuses_an_arrival_which_stays_at_its_source(
    make_host: Callable[..., Awaitable[Host]], session: aiohttp.ClientSession
) -> None:
    full = await make_host(limits=SupervisorLimits(max_paglets=1))
    source = await make_host(peers=(full.url,))
    at_full, at_source = Api(session, full.url), Api(session, source.url)
    await at_full.create()
    traveller = await at_source.create()
    await at_source.send(traveller, "count")
    status, answer = await at_source.post(
        f"/v1/paglets/{traveller}/move", {"kind": "dispatch", "target": full.url}
    )
    _refused(status, answer, code=409, says="--max-paglets 1")
    assert answer["error"]["type"] == "TransferError"
    assert await at_source.status_of(traveller) == "active"
    assert (await at_source.send(traveller, "count")) == (200, {"reply": 2})
    assert len((await at_full.call("GET", "/v1/paglets"))[1]["paglets"]) == 1
    # a clone is an arrival too
    only = (await at_full.call("GET", "/v1/paglets"))[1]["paglets"][0]["agent_id"]
    status, answer = await at_full.post(f"/v1/paglets/{only}/move", {"kind": "clone"})
    _refused(status, answer, code=409, says="--max-paglets 1")


async def test_max_child_memory_refuses_new_children(
    make_host: Callable[..., Awaitable[Host]], session: aiohttp.ClientSession
) -> None:
    # A budget far below one child's memory: once the sweep has measured the first
    # child, no second one starts.
    host = await make_host(limits=SupervisorLimits(max_child_memory=MiB, heartbeat_interval=0.1))
    api = Api(session, host.url)
    agent_id = await api.create()
    await wait_for(lambda: host.supervisor.admission.measured >= 1, what="a memory sweep")
    status, answer = await api.post("/v1/paglets", {"class_path": HOLDER})
    _full(status, answer, "--max-child-memory 1 MiB")
    # the per-child limit still holds, and the running paglet is untouched
    assert host.supervisor.limits.memory_limit == SupervisorLimits().memory_limit
    assert (await api.send(agent_id, "count")) == (200, {"reply": 1})
    assert (await api.call("DELETE", f"/v1/paglets/{agent_id}"))[0] == 200
    await wait_for(lambda: host.supervisor.admission.measured == 0, what="a sweep of none")
    await api.create()


def test_a_sweep_of_children_estimates_those_started_since() -> None:
    admission = Admission("h", max_paglets=None, max_child_memory=100 * MiB)
    admission.record([30 * MiB, 10 * MiB])
    assert admission.estimate(2) == 40 * MiB
    assert admission.estimate(5) == 100 * MiB  # three more, at the average of 20 MiB
    admission.check(4, "paglet x")
    with pytest.raises(HostFullError, match="--max-child-memory 100 MiB"):
        admission.check(5, "paglet x")


def test_children_started_before_any_sweep_count_too() -> None:
    admission = Admission("h", max_paglets=None, max_child_memory=50 * MiB)
    assert admission.estimate(0) == 0
    assert admission.estimate(2) == 2 * UNMEASURED_CHILD
    admission.check(2, "paglet x")  # 40 MiB
    with pytest.raises(HostFullError, match="--max-child-memory 50 MiB"):
        admission.check(3, "paglet x")  # 60 MiB, before the first sweep measured any


# -- the flags, on a real paglets-host ----------------------------------------------------------


def test_paglets_host_flags_bound_paglets_and_show_tracebacks(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    log_path = tmp_path / "host.log"
    env = host_env({k: v for k, v in os.environ.items() if k != "PAGLETS_API_KEY"})
    argv = [
        *HOST_CMD,
        "--name",
        "flags",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
        "--ready-file",
        str(ready),
        "--max-paglets",
        "1",
        "--max-child-memory",
        "64GiB",
        "--debug-errors",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        url = json.loads(ready.read_text())["url"]
        status, answer = _http(url, "/v1/paglets", {"class_path": HOLDER})
        assert status == 201, answer
        status, answer = _http(url, f"/v1/paglets/{answer['agent_id']}/messages", {"kind": "fail"})
        assert status == 422, answer
        assert "ValueError" in answer["error"]["traceback"]  # --debug-errors
        status, answer = _http(url, "/v1/paglets", {"class_path": HOLDER})
        assert status == 503, answer
        assert "--max-paglets 1" in answer["error"]["message"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()


def _http(url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, strict_json.loads(response.read(), "response")
    finally:
        conn.close()


async def test_a_create_while_the_host_stops_is_host_not_running(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host()
    await host.stop()
    with pytest.raises(HostNotRunningError, match="stopping") as refused:
        await host.supervisor.create("examples.counter:Counter", None, None)
    assert refused.value.http_status == 503


def test_the_daemon_bounds_its_childrens_memory_by_default() -> None:
    from paglets.cli.host import default_child_memory  # noqa: PLC0415

    assert default_child_memory() == psutil.virtual_memory().total * 3 // 4
    shown = subprocess.run(
        [sys.executable, "-m", "paglets.cli.host", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "3/4 of this machine's memory" in " ".join(shown.split())


def test_an_explicit_zero_child_memory_is_refused_not_taken_for_the_default() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "paglets.cli.host", "--max-child-memory", "0", "--port", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "max_child_memory must be at least 1 MiB" in done.stderr
