"""Sending a class's code to a host: ``PUT /v1/code/{sha256}`` from a client or a host."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

from paglets.core.errors import HostUnavailableError, ProtocolError, error_from_wire
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from paglets.byvalue.refs import CodeRef

__all__ = ["ship_code"]


async def ship_code(
    session: aiohttp.ClientSession,
    url: str,
    ref: CodeRef,
    code: bytes,
    headers: dict[str, str] | None = None,
) -> bool:
    """Send ``code`` (the class ``ref`` names) to the host at ``url``; whether it was new there.

    Raises:
        CodeNotTrustedError: that host does not trust code by value.
        PagletError: any other refusal, by the name the host gave it.
        HostUnavailableError: the host cannot be reached.
    """
    try:
        async with session.put(
            f"{url}{API_PREFIX}/code/{ref.sha256}",
            data=code,
            headers={**(headers or {}), "Content-Type": "application/octet-stream"},
        ) as resp:
            try:
                payload = await resp.json(content_type=None)
            except ValueError:
                payload = None
            status = resp.status
    except aiohttp.ClientError as exc:
        raise HostUnavailableError(f"cannot reach host {url}: {exc}") from None
    if status < 400:  # noqa: PLR2004
        return isinstance(payload, dict) and payload.get("stored") is True
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        raise error_from_wire(error["type"], str(error.get("message", "")))
    raise ProtocolError(f"host {url} answered HTTP {status} to the code of {ref.class_path}")
