"""How every command finds its host: ``--url URL|NAME``, ``$PAGLETS_URL``, ``--json``.

A command talks to the local host (``$PAGLETS_URL``, else
``http://127.0.0.1:8765``) unless ``--url`` names another, by URL or by host
name; a name is resolved through the local host's mesh. The API key comes from
``$PAGLETS_API_KEY`` (or ``$PAGLETS_API_KEY_FILE``), as for every client. When
no host answers, the error says which URL was tried and how to start a host.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Final

import click

from paglets.core.errors import HostUnavailableError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from paglets.transport.client import AsyncHostClient

URL_ENV: Final = "PAGLETS_URL"
DEFAULT_URL: Final = "http://127.0.0.1:8765"

url_option: Final = click.option(
    "--url",
    metavar="URL|NAME",
    help=f"The host to ask, by URL or by host name.  [default: ${URL_ENV} or {DEFAULT_URL}]",
)
json_option: Final = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)


def local_url() -> str:
    """The local host's URL: ``$PAGLETS_URL``, else the default port on loopback."""
    return (os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def is_url(target: str) -> bool:
    """Whether ``target`` is a URL rather than a host name."""
    return target.startswith(("http://", "https://"))


def no_host(url: str, exc: BaseException, why: str = "") -> HostUnavailableError:
    """The error for a URL where no host answers: what was tried, and what to do."""
    cause = exc.__context__  # the connection error, under `from None`
    error = getattr(cause, "os_error", cause)
    if isinstance(error, OSError) and error.errno and error.errno > 0:
        reason = os.strerror(error.errno).lower()
    elif isinstance(error, OSError) and error.strerror:  # a name lookup (gaierror)
        reason = error.strerror.lower()
    else:
        reason = str(exc).removeprefix(f"cannot reach host {url}: ")
    port = url.rpartition(":")[2].strip("/")
    start = f"paglets-host --port {port}" if port.isdigit() else "paglets-host"
    return HostUnavailableError(
        f"no paglets host answers at {url}{why} ({reason}); start one with '{start}', "
        f"or point --url or ${URL_ENV} at a running host"
    )


async def _reachable(client: AsyncHostClient, why: str = "") -> AsyncHostClient:
    try:
        await client.health()
    except HostUnavailableError as exc:
        raise no_host(client.url, exc, why) from None
    return client


async def resolve_target(target: str | None) -> str:
    """The URL of ``target``: itself if a URL, else the local host's URL for a name."""
    from paglets.transport.client import AsyncHostClient  # noqa: PLC0415 - aiohttp is heavy

    if target is None:
        return local_url()
    if is_url(target):
        return target.rstrip("/")
    async with AsyncHostClient(local_url()) as local:
        await _reachable(local, f", the local host that finds host {target!r}")
        return await local.resolve(target)


@contextlib.asynccontextmanager
async def connect(target: str | None) -> AsyncIterator[AsyncHostClient]:
    """A client for ``target`` (``--url``), checked to answer before it is used.

    Raises:
        HostUnavailableError: no host answers there; the message names the URL
            tried and how to start a host.
        HostNotFoundError: ``target`` is a name the local host's mesh does not know.
    """
    from paglets.transport.client import AsyncHostClient  # noqa: PLC0415

    url = await resolve_target(target)
    async with AsyncHostClient(url) as client:
        yield await _reachable(client)
