"""Bearer API-key authentication, compared in constant time."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from paglets.core.errors import AuthenticationError
from paglets.wire.records import API_PREFIX
from paglets.wire.relay import HOSTS_PREFIX

if TYPE_CHECKING:
    from aiohttp import web

OPEN_PATHS = frozenset({"/health", f"{API_PREFIX}/mesh/hello"})
"""Paths served without the key: the health check, and the mesh hello, by which a
peer proves it holds the key before anyone sends it (`paglets.mesh.hello`)."""


def is_open(path: str) -> bool:
    """Whether ``path`` is served without the key: an `OPEN_PATHS` path, of this host or of
    a host a hub relays for (``/v1/relay/hosts/<name>/v1/mesh/hello``)."""
    if path in OPEN_PATHS:
        return True
    if not path.startswith(HOSTS_PREFIX):
        return False
    _, _, tail = path[len(HOSTS_PREFIX) :].partition("/")
    return f"/{tail}" in OPEN_PATHS


def check_key(request: web.Request, expected: bytes) -> None:
    """Require ``Authorization: Bearer <key>`` with the key ``expected``, in constant time.

    Raises:
        AuthenticationError: the header is missing, of another scheme, or the wrong key.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
        raise AuthenticationError(
            "missing or wrong API key: send 'Authorization: Bearer <key>' "
            "(clients read PAGLETS_API_KEY)"
        )
