"""Length-prefixed frames on the host-to-child channel.

A frame is a 5-byte header (kind: u8, length: u32, network order) and a body.
``JSON`` frames carry one control record; ``JSON_BATCH`` frames carry a JSON
array of one or more records, what one side had ready at once (a burst of
messages, or the replies to them), so that a burst is decoded in one pass;
``BINARY`` frames carry raw bytes. Both ends use the same codec, so it imports
nothing beyond the stdlib.
"""

from __future__ import annotations

import json
import struct
from enum import IntEnum
from typing import Any, Final

from paglets.core.errors import ProtocolError

HEADER: Final = struct.Struct("!BI")
DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024


class FrameKind(IntEnum):
    """What a frame's body holds."""

    JSON = 1
    BINARY = 2
    JSON_BATCH = 3


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_body(record: dict[str, Any]) -> bytes:
    """The body of a JSON frame holding ``record``, strict JSON.

    A string with a lone surrogate (which UTF-8 cannot hold) is written as its
    ``\\udxxx`` escape, so the other end reads back the same string.

    Raises:
        TypeError: ``record`` holds a value that is not JSON.
        ValueError: it holds NaN or an infinity.
    """
    try:
        return _dumps(record).encode()
    except UnicodeEncodeError:
        return _dumps_ascii(record).encode()


def encode_json(record: dict[str, Any]) -> bytes:
    """One JSON frame holding ``record`` (see `encode_body`)."""
    body = encode_body(record)
    return HEADER.pack(FrameKind.JSON, len(body)) + body


def frame_bodies(bodies: list[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Frames holding the records of ``bodies`` (from `encode_body`), in their order.

    One record goes as a ``JSON`` frame; several as ``JSON_BATCH`` frames of at
    most ``max_frame`` bytes each (a record larger than that alone, as before).
    """
    if len(bodies) == 1:
        body = bodies[0]
        return HEADER.pack(FrameKind.JSON, len(body)) + body
    frames: list[bytes] = []
    batch: list[bytes] = []
    size = 1
    for body in bodies:
        if batch and size + len(body) + 1 > max_frame:
            frames.append(_batch_frame(batch))
            batch, size = [], 1
        batch.append(body)
        size += len(body) + 1
    frames.append(_batch_frame(batch))
    return b"".join(frames)


def _batch_frame(bodies: list[bytes]) -> bytes:
    if len(bodies) == 1:
        return HEADER.pack(FrameKind.JSON, len(bodies[0])) + bodies[0]
    body = b"[" + b",".join(bodies) + b"]"
    return HEADER.pack(FrameKind.JSON_BATCH, len(body)) + body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


_decode: Final = json.JSONDecoder(parse_constant=_no_constant).decode


class FrameDecoder:
    """Splits a byte stream into decoded frames.

    ``feed`` returns the complete frames seen so far: dicts for JSON records (each
    record of a batch in turn) and ``bytes`` for binary frames. A frame over
    ``max_frame`` bytes, an unknown kind, a JSON body that is not an object (or,
    in a batch, an array of objects) raises `ProtocolError`.
    """

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes | memoryview) -> list[dict[str, Any] | bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[dict[str, Any] | bytes] = []
        offset = 0
        size = len(buffer)
        with memoryview(buffer) as view:
            while size - offset >= HEADER.size:
                kind, length = HEADER.unpack_from(buffer, offset)
                if length > self._max_frame:
                    raise ProtocolError(f"frame of {length} bytes exceeds {self._max_frame}")
                start = offset + HEADER.size
                end = start + length
                if end > size:
                    break
                offset = end
                if kind == FrameKind.BINARY:
                    frames.append(bytes(view[start:end]))
                elif kind == FrameKind.JSON:
                    value = _decoded(view, start, end)
                    if type(value) is not dict:
                        raise ProtocolError("a JSON frame must hold an object")
                    frames.append(value)
                elif kind == FrameKind.JSON_BATCH:
                    frames += _records(_decoded(view, start, end))
                else:
                    raise ProtocolError(f"unknown frame kind {kind}")
        if offset:
            del buffer[:offset]
        return frames


def _decoded(view: memoryview, start: int, end: int) -> Any:
    try:
        return _decode(str(view[start:end], "utf-8"))  # the slice is gone once read
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON frame: {exc}") from None


def _records(value: Any) -> list[dict[str, Any]]:
    if type(value) is not list or not value or any(type(item) is not dict for item in value):
        raise ProtocolError("a batch frame must hold a non-empty array of objects")
    return value
