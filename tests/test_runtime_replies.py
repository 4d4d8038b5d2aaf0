"""A child's replies to a burst go back together, never long behind a slow message."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from paglets import AsyncHostClient, Host
from paglets.core.errors import ProtocolError
from paglets.runtime.frames import HEADER, FrameDecoder, FrameKind, encode_body, frame_bodies
from paglets.runtime.records import SupervisorLimits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PROBE = "pagletstest.testing:Probe"
BLOCK = 3.0  # seconds the slow message keeps the child busy


def test_records_sent_together_go_as_one_batch_frame_and_come_back_in_order() -> None:
    records = [{"op": "reply", "id": n, "value": "\ud800" if n == 2 else n} for n in range(5)]
    data = frame_bodies([encode_body(r) for r in records])
    assert data[0] == FrameKind.JSON_BATCH, "one frame for all"
    decoder = FrameDecoder()
    assert decoder.feed(data[:9]) == []
    assert decoder.feed(data[9:]) == records
    alone = frame_bodies([encode_body(records[0])])
    assert alone[0] == FrameKind.JSON
    assert FrameDecoder().feed(alone) == records[:1]


def test_a_batch_larger_than_a_frame_is_cut_into_frames() -> None:
    bodies = [encode_body({"op": "reply", "id": n, "value": "x" * 100}) for n in range(10)]
    data = frame_bodies(bodies, max_frame=350)
    decoder = FrameDecoder(max_frame=350)
    assert [r["id"] for r in decoder.feed(data)] == list(range(10))  # type: ignore[index]


@pytest.mark.parametrize("body", [b"[]", b"[1]", b'[{"op": "reply"}, 2]', b"{}", b"[", b"[NaN]"])
def test_a_batch_frame_that_is_not_an_array_of_records_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(HEADER.pack(FrameKind.JSON_BATCH, len(body)) + body)


async def _slow_behind_quick(client: AsyncHostClient, *, seen_quick: bool) -> float:
    """Seconds the reply to a quick message takes with a slow one right behind it.

    Both go in one frame, so they reach the child's mailbox together. With
    ``seen_quick``, the child saw the slow one's kind take no time before.
    """
    probe = await client.create(PROBE)
    await probe.send("echo", {"warm": True})  # "echo" is a kind the child saw take no time
    if seen_quick:
        await probe.send("block", {"seconds": 0})
    start = time.monotonic()
    quick, _ = await asyncio.gather(
        probe.send_future("echo", {"n": 1}), probe.send_oneway("block", {"seconds": BLOCK})
    )
    assert await quick.result(2 * BLOCK) == {"n": 1}
    return time.monotonic() - start


async def test_a_reply_held_for_the_next_ones_goes_before_a_message_of_unknown_length(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    # heartbeats too rare to write it: only the rule for slow kinds does
    host = await make_host(limits=SupervisorLimits(heartbeat_interval=2 * BLOCK))
    async with AsyncHostClient(host.url) as client:
        assert await _slow_behind_quick(client, seen_quick=False) < BLOCK / 2


async def test_a_reply_held_behind_a_kind_that_turned_slow_goes_with_the_next_heartbeat(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(limits=SupervisorLimits(heartbeat_interval=0.2))
    async with AsyncHostClient(host.url) as client:
        assert await _slow_behind_quick(client, seen_quick=True) < BLOCK / 2
