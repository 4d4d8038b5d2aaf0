"""Request bodies read with our own byte caps and read timeouts; compact JSON answers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import StreamReader, web

from paglets.core.errors import HandlerError, PayloadTooLargeError, RequestError
from paglets.wire import strict_json


async def read_capped(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, or ``PayloadTooLargeError`` past ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes exceeds the {limit}-byte limit"
        )
    try:
        if declared is not None:
            # The usual case: a declared length within the cap, most often come
            # whole with the head (then no clock is started for it).
            head = request.content.read_nowait(declared)
            if len(head) == declared:
                return head
            async with asyncio.timeout(timeout):
                return head + await request.content.readexactly(declared - len(head))
        return await _read_chunked(request, limit, timeout)
    except asyncio.IncompleteReadError:
        raise RequestError("the request body ended before its declared length") from None
    except TimeoutError:
        raise RequestError(f"request body not received within {timeout:g} s") from None


async def _read_chunked(request: web.Request, limit: int, timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        return await read_stream(request.content, limit, "request body")


async def read_stream(stream: StreamReader, limit: int, what: str) -> bytes:
    """All of ``stream`` (a request's or a response's body), or `PayloadTooLargeError`
    naming ``what`` once it passes ``limit`` bytes; read in 64 KiB chunks."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"{what} exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int, timeout: float) -> Any:
    """The body decoded as strict JSON (`paglets.wire.strict_json.loads`).

    Raises:
        RequestError: an empty or malformed body, a number that is not finite,
            nesting deeper than `strict_json.MAX_DEPTH`, a lone surrogate.
    """
    body = await read_capped(request, limit, timeout)
    if not body:
        raise RequestError("expected a JSON body, got an empty one")
    return strict_json.loads(body)


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as a compact, strict JSON response.

    Raises:
        HandlerError: ``data`` holds NaN or an infinity (a paglet's reply or
            state, as nothing else does), which strict JSON cannot carry.
    """
    try:
        text = strict_json.dumps(data)
    except ValueError as exc:
        raise HandlerError(
            f"the answer holds a number JSON cannot carry ({exc}); use finite numbers"
        ) from None
    # bytes, not the str: aiohttp wraps a str body in a payload that costs a third of
    # a small answer's making (and JSON is UTF-8 whatever a charset would say)
    return web.Response(body=text.encode(), status=status, content_type="application/json")
