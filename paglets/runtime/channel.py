"""``HostChannel``: the host's end of one child's socketpair, as an asyncio protocol.

Spawners open it as soon as a child exists, so a pre-started child's channel
is ready before any paglet is assigned to it. Records received before a sink
is attached are kept and handed over when it is.

Records sent in one turn of the event loop go to the child in one write, at the
end of that turn, as one batch frame (`paglets.runtime.frames`): a burst of
messages to one paglet costs one system call and one decoding pass, not one
each. A message to a child with nothing else to do goes at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from paglets.core.errors import ProtocolError
from paglets.runtime import ipc
from paglets.runtime.frames import HEADER, FrameDecoder, FrameKind, encode_body, frame_bodies

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

log = logging.getLogger(__name__)


def _as_record(frame: dict[str, Any] | bytes) -> ipc.Record:
    if not isinstance(frame, dict):
        raise ProtocolError("unexpected binary frame from a child")
    return ipc.decode(frame)


class HostChannel(asyncio.Protocol):
    """Frames in and out of one child; see the module docstring."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._transport: asyncio.WriteTransport | None = None
        self._sink: Callable[[ipc.Record], None] | None = None
        self._on_error: Callable[[ProtocolError], None] | None = None
        self._early: list[ipc.Record] = []
        self._outbox: list[bytes] = []  # records of this turn of the loop, not written yet
        self._outbox_size = 0

    def __repr__(self) -> str:
        return f"<HostChannel {'open' if self._transport else 'closed'}>"

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def attach(
        self, sink: Callable[[ipc.Record], None], on_error: Callable[[ProtocolError], None]
    ) -> None:
        """Send received records to ``sink``; malformed input to ``on_error``."""
        self._sink, self._on_error = sink, on_error
        early, self._early = self._early, []
        for record in early:
            sink(record)

    def send(self, record: ipc.Record, *, alone: bool = False) -> int:
        """Queue ``record`` for the child: the bytes queued, 0 if the channel is closed.

        With ``alone`` (the child has nothing else to do: no burst to gather),
        it is written at once when nothing is queued before it.
        """
        if self._transport is None:
            return 0
        body = encode_body(record.to_wire())
        if not self._outbox:
            if alone:
                self._transport.write(HEADER.pack(FrameKind.JSON, len(body)) + body)
                return len(body)
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(body)
        self._outbox_size += len(body)
        return len(body)

    def _flush(self) -> None:
        bodies, self._outbox = self._outbox, []
        self._outbox_size = 0
        if self._transport is not None and bodies:
            self._transport.write(frame_bodies(bodies))

    @property
    def buffered(self) -> int:
        """Bytes sent to the channel that the child has not read yet."""
        if self._transport is None:
            return 0
        return self._outbox_size + self._transport.get_write_buffer_size()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()  # what was sent goes first, as with an unbuffered write
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # noqa: S101 - stream transport
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self._decoder.feed(data):
                record = _as_record(frame)
                if self._sink is None:
                    self._early.append(record)
                else:
                    self._sink(record)
        except ProtocolError as exc:
            if self._on_error is None:
                log.exception("a child sent a malformed frame before it was assigned")
                self.close()
            else:
                self._on_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        del exc  # the child's exit code, reported by the spawner, says why
        self._transport = None


async def open_channel(sock: socket.socket) -> HostChannel:
    """Wrap the host's end of a child's socketpair in a `HostChannel`."""
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_unix_connection(HostChannel, sock=sock)
    return channel
