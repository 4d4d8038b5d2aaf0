"""Ask every host of the mesh the same thing at once, each within a timeout.

The local host (``--url``) lists the mesh; each host it knows is then asked in
parallel, each within ``timeout`` seconds. A host the mesh already knows to be
offline is not asked; one that does not answer in time, or refuses the
connection, is reported so. The answer never waits on the slowest host longer
than the timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paglets.core.errors import (
    HostUnavailableError,
    PagletError,
    ServiceNotFoundError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from paglets.transport.client import AsyncHostClient
    from paglets.wire.mesh import HostRecord


@dataclass(frozen=True, slots=True)
class HostAnswer:
    """What one host answered.

    Attributes:
        name: the host's name; url: its URL.
        status: ``ok``; ``offline`` (the mesh says so, or it refused the
            connection); ``timeout`` (no answer within the timeout);
            ``unavailable`` (it has no such service, or cannot run it now);
            ``error`` (it answered with an error, in ``error``).
        data: its answer when ``ok``.
        error: what went wrong, else ``None``.
        seconds: how long the question took.
    """

    name: str
    url: str
    status: str
    data: Any = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The host's part of a ``--json`` answer (without ``data``)."""
        return {
            "name": self.name,
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


async def ask_host(
    client: AsyncHostClient,
    record: HostRecord,
    ask: Callable[[AsyncHostClient], Awaitable[Any]],
    timeout: float,
) -> HostAnswer:
    """Ask one host, within ``timeout``."""
    if not record.online:
        age = max(0.0, time.time() - record.last_seen)
        return HostAnswer(record.name, record.url, "offline", error=f"offline for {age:.0f} s")
    started = time.monotonic()
    other = client.sibling(record.url)
    try:
        async with asyncio.timeout(timeout):
            data = await ask(other)
    except TimeoutError:
        took = time.monotonic() - started
        why = f"no answer within {timeout:g} s"
        return HostAnswer(record.name, record.url, "timeout", error=why, seconds=took)
    except HostUnavailableError as exc:
        took = time.monotonic() - started
        return HostAnswer(record.name, record.url, "offline", error=str(exc), seconds=took)
    except (ServiceNotFoundError, ServiceUnavailableError) as exc:
        took = time.monotonic() - started
        return HostAnswer(record.name, record.url, "unavailable", error=str(exc), seconds=took)
    except PagletError as exc:
        took = time.monotonic() - started
        why = f"{type(exc).__name__}: {exc}"
        return HostAnswer(record.name, record.url, "error", error=why, seconds=took)
    return HostAnswer(record.name, record.url, "ok", data, seconds=time.monotonic() - started)


async def ask_all(
    client: AsyncHostClient,
    ask: Callable[[AsyncHostClient], Awaitable[Any]],
    *,
    timeout: float,
    names: Sequence[str] = (),
) -> list[HostAnswer]:
    """Ask every host of ``client``'s mesh (only ``names``, if given), in parallel."""
    records = await client.hosts()
    if names:
        records = [r for r in records if r.name in names]
    return list(await asyncio.gather(*(ask_host(client, r, ask, timeout) for r in records)))
