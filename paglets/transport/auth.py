"""Bearer API-key authentication, compared in constant time."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from paglets.core.errors import AuthenticationError

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

OPEN_PATHS = frozenset({"/health"})


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
