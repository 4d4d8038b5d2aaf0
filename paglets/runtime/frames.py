"""Length-prefixed frames on the host-to-child channel.

A frame is a 5-byte header (kind: u8, length: u32, network order) and a body.
``JSON`` frames carry one control record; ``BINARY`` frames carry raw bytes.
Both ends use the same codec, so it imports nothing beyond the stdlib.
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


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_json(record: dict[str, Any]) -> bytes:
    """One JSON frame holding ``record``, strict JSON.

    A string with a lone surrogate (which UTF-8 cannot hold) is written as its
    ``\\udxxx`` escape, so the other end reads back the same string.

    Raises:
        TypeError: ``record`` holds a value that is not JSON.
        ValueError: it holds NaN or an infinity.
    """
    try:
        body = _dumps(record).encode()
    except UnicodeEncodeError:
        body = _dumps_ascii(record).encode()
    return HEADER.pack(FrameKind.JSON, len(body)) + body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


class FrameDecoder:
    """Splits a byte stream into decoded frames.

    ``feed`` returns the complete frames seen so far: dicts for JSON frames and
    ``bytes`` for binary frames. A frame over ``max_frame`` bytes, an unknown
    kind or a body that is not a JSON object raises `ProtocolError`.
    """

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any] | bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[dict[str, Any] | bytes] = []
        offset = 0
        size = len(buffer)
        while size - offset >= HEADER.size:
            kind, length = HEADER.unpack_from(buffer, offset)
            if length > self._max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds {self._max_frame}")
            end = offset + HEADER.size + length
            if end > size:
                break
            body = bytes(buffer[offset + HEADER.size : end])
            offset = end
            if kind == FrameKind.JSON:
                try:
                    record = json.loads(body, parse_constant=_no_constant)
                except ValueError as exc:
                    raise ProtocolError(f"malformed JSON frame: {exc}") from None
                if not isinstance(record, dict):
                    raise ProtocolError("a JSON frame must hold an object")
                frames.append(record)
            elif kind == FrameKind.BINARY:
                frames.append(body)
            else:
                raise ProtocolError(f"unknown frame kind {kind}")
        if offset:
            del buffer[:offset]
        return frames
