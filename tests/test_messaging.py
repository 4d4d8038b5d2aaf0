"""Messages to paglets: reply forms, errors, futures, fan-in, ordering, concurrency, dedupe.

Every test talks to a real host over loopback HTTP; each paglet is a real child process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from conftest import wait_for

from paglets import (
    AsyncReplySet,
    HandlerError,
    HostClient,
    Message,
    MessageNotHandledError,
    PagletCrashedError,
    PagletError,
    Priority,
    ReplySet,
)

if TYPE_CHECKING:
    from paglets import AsyncHostClient, AsyncPagletProxy, Host

PROBE = "pagletstest.testing:Probe"
COUNTER = "examples.counter:Counter"


@pytest.fixture
async def probe(client: AsyncHostClient) -> AsyncPagletProxy:
    return await client.create(PROBE)


async def _log(proxy: AsyncPagletProxy) -> list[str]:
    state = await proxy.state()
    return list(state["log"])


# -- reply forms ------------------------------------------------------------------


async def test_sync_send_returns_the_reply(probe: AsyncPagletProxy) -> None:
    assert await probe.send("echo", {"a": 1, "b": [1, "two", None]}) == {
        "a": 1,
        "b": [1, "two", None],
    }


async def test_send_takes_a_message_or_a_kind_with_args(probe: AsyncPagletProxy) -> None:
    assert await probe.send(Message("echo", {"form": "message"})) == {"form": "message"}
    assert await probe.send("echo", {"form": "kind"}) == {"form": "kind"}
    assert await probe.send("echo") == {}
    with pytest.raises(TypeError, match="inside the Message"):
        await probe.send(Message("echo"), {"x": 1})


async def test_not_handled_raises_message_not_handled(probe: AsyncPagletProxy) -> None:
    with pytest.raises(MessageNotHandledError, match="no-such-kind"):
        await probe.send("no-such-kind")
    # the paglet is unharmed
    assert await probe.send("echo", {"ok": True}) == {"ok": True}


async def test_handler_exception_becomes_handler_error(probe: AsyncPagletProxy) -> None:
    with pytest.raises(HandlerError) as caught:
        await probe.send("raise", {"text": "bad input 42"})
    assert "ValueError" in str(caught.value)
    assert "bad input 42" in str(caught.value)
    # the paglet's traceback stays in the host unless it runs with debug_errors
    # (tests/test_security_input.py shows it there)
    assert caught.value.remote_traceback is None
    assert await probe.send("echo", {"still": "alive"}) == {"still": "alive"}


async def test_unserializable_reply_becomes_handler_error(probe: AsyncPagletProxy) -> None:
    with pytest.raises(HandlerError, match="JSON"):
        await probe.send("unserializable")
    assert await probe.send("echo", {"n": 1}) == {"n": 1}


async def test_oneway_send_is_handled(probe: AsyncPagletProxy) -> None:
    assert await probe.send_oneway("record", {"tag": "one-way"}) is None

    async def recorded() -> bool:
        return await _log(probe) == ["one-way"]

    await wait_for(recorded, what="the one-way message to be handled")


async def test_send_future_result_and_done(probe: AsyncPagletProxy) -> None:
    fut = await probe.send_future("echo", {"x": 1})
    assert await fut.result(timeout=10) == {"x": 1}
    assert await fut.done()
    # a slow one is not done at first, then is
    slow = await probe.send_future("sleep", {"seconds": 0.3})
    assert not await slow.done()
    assert await slow.result(timeout=10) == "slept"
    assert await slow.done()


async def test_send_future_carries_handler_errors(probe: AsyncPagletProxy) -> None:
    fut = await probe.send_future("raise", {"text": "later"})
    with pytest.raises(HandlerError, match="ValueError: later"):
        await fut.result(timeout=10)


async def test_async_reply_set_fans_in_across_paglets(client: AsyncHostClient) -> None:
    proxies = await asyncio.gather(*(client.create(PROBE) for _ in range(3)))
    delays = [0.3, 0.0, 0.15]
    futures = [
        await p.send_future("sleep", {"seconds": d}) for p, d in zip(proxies, delays, strict=True)
    ]
    replies = AsyncReplySet(futures)
    assert len(replies) == 3
    assert await replies.gather(timeout=10) == ["slept", "slept", "slept"]

    by_tag = AsyncReplySet()
    for i, p in enumerate(proxies):
        by_tag.add(await p.send_future("echo", {"i": i}))
    seen = [reply async for _fut, reply in by_tag.as_completed(timeout=10)]
    assert sorted(r["i"] for r in seen) == [0, 1, 2]


async def test_sync_reply_set_fans_in_across_paglets(host: Host) -> None:
    def work() -> tuple[list[object], list[object]]:
        with HostClient(host.url) as client:
            proxies = [client.create(PROBE) for _ in range(3)]
            futures = [p.send_future("echo", {"i": i}) for i, p in enumerate(proxies)]
            in_order = ReplySet(futures).results(timeout=10)
            again = ReplySet(p.send_future("pid") for p in proxies)
            completed = [reply for _fut, reply in again.as_completed(timeout=10)]
            return in_order, completed

    in_order, completed = await asyncio.to_thread(work)
    assert in_order == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert len(set(completed)) == 3  # three different child processes


# -- ordering -----------------------------------------------------------------------


async def test_priority_order_then_fifo_within_a_priority(probe: AsyncPagletProxy) -> None:
    priorities = [0, 10, -10, 100, 0, 10, -10, 0, 100, 5, Priority.LOW, Priority.HIGH, 0]
    tags = [f"p{p}-{i}" for i, p in enumerate(priorities)]
    # The gate outranks every record, so it is handled first even if the records
    # reach the mailbox before it is taken; it then holds the mailbox until all
    # the records are queued behind it.
    gate = await probe.send_future("gate", {"count": len(priorities)}, priority=Priority.URGENT + 1)
    for tag, priority in zip(tags, priorities, strict=True):
        await probe.send_oneway("record", {"tag": tag}, priority=priority)
    assert await gate.result(timeout=10) is None

    async def all_handled() -> bool:
        return len(await _log(probe)) == len(tags) + 1

    await wait_for(all_handled, what="every record to be handled")
    # by descending priority, then by sending order (sorted() is stable)
    expected = [t for _, t in sorted(zip(priorities, tags, strict=True), key=lambda pt: -pt[0])]
    assert await _log(probe) == ["gate", *expected]


async def test_fifo_for_equal_priorities(probe: AsyncPagletProxy) -> None:
    for i in range(30):
        await probe.send_oneway("record", {"tag": str(i)})
    assert await probe.send("record", {"tag": "last"}) == 31
    assert await _log(probe) == [*map(str, range(30)), "last"]


# -- concurrency ----------------------------------------------------------------------


async def test_fifty_concurrent_callers_each_get_their_reply(probe: AsyncPagletProxy) -> None:
    replies = await asyncio.gather(
        *(probe.send("echo", {"caller": i, "payload": "x" * i}) for i in range(50))
    )
    assert replies == [{"caller": i, "payload": "x" * i} for i in range(50)]
    # handled one at a time: each record sees a distinct log length
    counts = await asyncio.gather(*(probe.send("record", {"tag": str(i)}) for i in range(50)))
    assert sorted(counts) == list(range(1, 51))
    assert sorted(await _log(probe), key=int) == [str(i) for i in range(50)]


async def test_concurrent_sends_to_eight_paglets(client: AsyncHostClient) -> None:
    proxies = await asyncio.gather(*(client.create(PROBE) for _ in range(8)))
    pids = await asyncio.gather(*(p.send("pid") for p in proxies))
    assert len(set(pids)) == 8

    async def chatter(index: int, proxy: AsyncPagletProxy) -> list[object]:
        return list(
            await asyncio.gather(*(proxy.send("echo", {"p": index, "n": n}) for n in range(10)))
        )

    results = await asyncio.gather(*(chatter(i, p) for i, p in enumerate(proxies)))
    for i, replies in enumerate(results):
        assert replies == [{"p": i, "n": n} for n in range(10)]


# -- message ids ----------------------------------------------------------------------


async def test_same_message_id_is_handled_once(probe: AsyncPagletProxy) -> None:
    message = Message("record", {"tag": "once"}, message_id="dedupe-1")
    first = await probe.send(message)
    second = await probe.send(message)
    assert first == second == 1
    assert await _log(probe) == ["once"]
    # a different id is a different delivery
    assert await probe.send(Message("record", {"tag": "twice"}, message_id="dedupe-2")) == 2


async def test_concurrent_duplicates_are_handled_once(probe: AsyncPagletProxy) -> None:
    message = Message("record", {"tag": "dup"}, message_id="dedupe-concurrent")
    replies = await asyncio.gather(*(probe.send(message) for _ in range(10)))
    assert replies == [1] * 10
    assert await _log(probe) == ["dup"]


async def test_oneway_duplicate_is_handled_once(probe: AsyncPagletProxy) -> None:
    message = Message("record", {"tag": "oneway-dup"}, message_id="dedupe-oneway")
    await probe.send_oneway(message)
    await probe.send_oneway(message)
    # a later message is handled after both deliveries were considered
    assert await probe.send("record", {"tag": "after"}) == 2
    assert await _log(probe) == ["oneway-dup", "after"]


# -- handler styles -------------------------------------------------------------------


async def test_async_and_sync_handlers_both_work(client: AsyncHostClient) -> None:
    probe = await client.create(PROBE)  # async def handle_message
    counter = await client.create(COUNTER, {"count": 5})  # plain def handle_message
    assert await probe.send("sleep", {"seconds": 0.01}) == "slept"
    assert await counter.send("increment", {"by": 2}) == {"count": 7}
    assert await counter.send("get") == {"count": 7}
    assert (await counter.state())["count"] == 7
    with pytest.raises(MessageNotHandledError):
        await counter.send("nope")


async def test_message_rejects_bad_fields() -> None:
    with pytest.raises(TypeError):
        Message("")
    with pytest.raises(TypeError):
        Message("k", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Message("k", {}, priority=True)
    assert issubclass(MessageNotHandledError, PagletError)


# -- while a paglet starts ----------------------------------------------------------

SLOW = "pagletstest.testing:SlowStarter"


async def _send_while_starting(
    client: AsyncHostClient, state: dict[str, object]
) -> tuple[asyncio.Task[AsyncPagletProxy], asyncio.Task[object]]:
    """Create a slow-starting paglet, and send it a message while it is starting."""
    creating = asyncio.create_task(client.create(SLOW, state, agent_id="slow"))

    async def starting() -> bool:
        return any(p.agent_id == "slow" and p.status == "starting" for p in await client.list())

    await wait_for(starting, what="the paglet listed as starting")
    sending = asyncio.create_task(client.proxy("slow").send("ping"))
    await asyncio.wait((creating, sending), timeout=10)
    return creating, sending


async def test_a_message_sent_while_its_paglet_starts_is_handled_after_the_start(
    client: AsyncHostClient,
) -> None:
    creating, sending = await _send_while_starting(client, {"start_delay": 0.5})
    await creating
    assert await sending == ["created", "ping"]


async def test_a_message_sent_while_its_paglet_fails_to_start_gets_an_error(
    client: AsyncHostClient,
) -> None:
    creating, sending = await _send_while_starting(client, {"start_delay": 0.5, "fail_start": True})
    with pytest.raises(PagletError, match="told to fail its start"):
        await creating
    with pytest.raises(PagletCrashedError, match="slow failed to start"):
        await sending
