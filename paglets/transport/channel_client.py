"""The client end of the proxy channel (``GET /v1/channel``, `paglets.transport.channel`).

`Channel` keeps one WebSocket to one host and multiplexes calls over it: each
call gets a number, its answer is matched by that number, and many calls can be
in flight at once. A channel that breaks fails the calls still waiting with
`ChannelLost`; the client sends them again over HTTP with the same message ids,
which the host never delivers twice. The calls made in one turn of the event
loop go out as one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING, Any, Final, Self

import aiohttp

from paglets.core.errors import ProtocolError
from paglets.wire.channel import CHANNEL_ROUTE, HEARTBEAT, Answer, Call, encode_frame

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Channel", "ChannelLost"]

CALL_CHUNK: Final = 64
"""Calls a frame holds at most: the host starts on the first while the next go out."""
_UNOFFERED: Final = frozenset({400, 404, 405, 426, 501})  # a host without the channel


class ChannelLost(Exception):  # noqa: N818 - a signal to fall back to HTTP, not an error
    """The channel closed before the answer came: send the call again another way."""


class Channel:
    """One WebSocket to one host, with the calls waiting for their answers."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        self.url = url
        self._ws = ws
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._outbox: list[tuple[int, str]] = []  # calls of this turn of the loop
        self._writer: asyncio.Task[None] | None = None
        self._reader = asyncio.create_task(self._read(), name=f"channel-{url}")

    def __repr__(self) -> str:
        return f"<Channel {self.url} waiting={len(self._waiting)}>"

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        url: str,
        headers: Mapping[str, str],
        max_frame: int,
    ) -> Self | None:
        """A channel to the host at ``url``, or ``None`` if it offers none.

        Raises:
            aiohttp.ClientError: the host cannot be reached, or refused otherwise
                (the caller's HTTP request then says why).
        """
        try:
            ws = await session.ws_connect(
                f"{url}{CHANNEL_ROUTE}",
                headers=headers,
                heartbeat=HEARTBEAT,
                max_msg_size=max_frame,
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in _UNOFFERED:
                return None
            raise
        return cls(ws, url)

    @property
    def closed(self) -> bool:
        return self._ws.closed or self._reader.done()

    async def call(
        self, op: str, agent_id: str, body: dict[str, Any], timeout: float | None
    ) -> Answer:
        """Send one call and wait for its answer (at most ``timeout`` seconds).

        Raises:
            ChannelLost: the channel closed before the answer came.
            TimeoutError: no answer within ``timeout``.
        """
        if self.closed:
            raise ChannelLost(f"the channel to {self.url} is closed")
        call_id = next(self._ids)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = answer
        try:
            self._queue(call_id, Call(call_id, op, agent_id, body).encode())
            if timeout is None:
                return await answer
            async with asyncio.timeout(timeout):
                return await answer
        finally:
            self._waiting.pop(call_id, None)

    def _queue(self, call_id: int, text: str) -> None:
        """Send with the other calls of this turn of the loop, as one frame at its end.

        One task writes the calls: started by the first call of a turn, it runs
        right after that turn and takes every call queued by then.
        """
        self._outbox.append((call_id, text))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._outbox:
                items = self._outbox[:CALL_CHUNK]
                del self._outbox[:CALL_CHUNK]
                await self._send(items)
        finally:
            self._writer = None

    async def _send(self, items: list[tuple[int, str]]) -> None:
        try:
            await self._ws.send_str(encode_frame([text for _, text in items]))
        except (ConnectionError, RuntimeError) as exc:  # closing under us
            lost = ChannelLost(f"the channel to {self.url} closed: {exc}")
            for call_id, _ in items:
                waiting = self._waiting.get(call_id)
                if waiting is not None and not waiting.done():
                    waiting.set_exception(lost)

    async def _read(self) -> None:
        why = "closed by the host"
        try:
            async for frame in self._ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    why = f"the host sent a {frame.type.name} frame"
                    break
                for answer in Answer.decode_frame(frame.data):
                    waiting = self._waiting.get(answer.id)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer)
        except ProtocolError as exc:
            why = str(exc)
        finally:
            lost = ChannelLost(f"the channel to {self.url} closed: {why}")
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(lost)
            await self._ws.close()

    async def close(self) -> None:
        """Close the WebSocket; calls still waiting fail with `ChannelLost`."""
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
