"""Bearer API-key authentication, compared in constant time."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from paglets.core.errors import AuthenticationError
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

OPEN_PATHS = frozenset({"/health", f"{API_PREFIX}/mesh/hello"})
"""Paths served without the key: the health check, and the mesh hello, by which a
peer proves it holds the key before anyone sends it (`paglets.mesh.hello`)."""


def auth_middleware(api_key: str) -> web.middleware:  # type: ignore[valid-type]
    """A middleware that requires ``Authorization: Bearer <api_key>``."""
    expected = api_key.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
                raise AuthenticationError(
                    "missing or wrong API key: send 'Authorization: Bearer <key>' "
                    "(clients read PAGLETS_API_KEY)"
                )
        return await handler(request)

    return check
