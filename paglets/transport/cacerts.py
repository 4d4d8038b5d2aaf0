"""Import aiohttp without its CA certificates; load them when a TLS connection needs them.

::

    import_aiohttp()                  # at once: aiohttp's import without the CA bundle
    ...                               # the host starts and serves
    session = aiohttp.ClientSession(connector=connector(ssl=True))
    await session.get("https://...")  # the first TLS connection loads them, then connects

aiohttp makes its two default client TLS contexts (`aiohttp.connector`) as it is
imported, and each loads the system's CA bundle on the importing thread with the
GIL held: on a small machine 60-90 ms, about 40 % of a host's start before ready
(430 M of the 1,420 M instructions callgrind counts).

`import_aiohttp` imports it with OpenSSL's default CA file hidden (its
environment variable pointed at an empty file for the import only), so the
contexts are made empty in 2 ms. The certificates are loaded only when a
connection is to use them: the first TLS connection made through a
`connector` (every client session of a host's own: gossip, moves, calls to
other hosts, the relay session) awaits `certificates_loaded`, which loads that
same file, on a thread (`ssl.SSLContext.load_verify_locations` parses it
without the GIL), into the context that verifies (``ssl=True``, the default).
That context ends as aiohttp's import would have made it: the same
certificates, the same directory of hashed certificates looked up on demand.
The other (``ssl=False``) verifies nothing and is left without them. A host
that makes no TLS connection (a loopback host, a mesh over HTTP) never loads
them: about 240 M instructions, on a thread beside its start before, that no
longer take a core from it.

A process that imported aiohttp already (an in-process `Host`, a script) is
left as it is, and its connectors wait for nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

__all__ = ["certificates_loaded", "connector", "import_aiohttp"]

log = logging.getLogger(__name__)

EXIT_WAIT = 10.0
"""Seconds a process exiting waits, at most, for a loading under way to end."""

_deferred: tuple[list[ssl.SSLContext], str] | None = None  # what import_aiohttp left to load
_loading: concurrent.futures.Future[int] | None = None  # their loading, once started
_start_lock = threading.Lock()
_connector_class: type[aiohttp.TCPConnector] | None = None


def import_aiohttp() -> bool:
    """Import aiohttp with its client contexts' CA certificates left for later.

    Returns:
        Whether they were left for later: ``False`` when aiohttp was imported
        already (its contexts are as its import made them).
    """
    global _deferred  # noqa: PLW0603 - one aiohttp per process
    if "aiohttp" in sys.modules:
        return _deferred is not None
    paths = ssl.get_default_verify_paths()
    variable = paths.openssl_cafile_env
    previous = os.environ.get(variable)
    # the file OpenSSL's default paths load: the variable's, else the built-in one
    cafile = paths.openssl_cafile if previous is None else previous
    os.environ[variable] = os.devnull
    try:
        from aiohttp import connector as module  # noqa: PLC0415 - the point of this module
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous
    contexts = [  # a context that verifies nothing needs no certificates
        value
        for value in vars(module).values()
        if isinstance(value, ssl.SSLContext) and value.verify_mode != ssl.CERT_NONE
    ]
    _deferred = (contexts, cafile)
    return True


def start_loading() -> concurrent.futures.Future[int] | None:
    """Start loading the certificates `import_aiohttp` left (once); the loading.

    Its result is how many contexts it filled; ``None`` when nothing was left.
    """
    global _loading  # noqa: PLW0603 - see _deferred
    with _start_lock:
        if _loading is None and _deferred is not None:
            _loading = concurrent.futures.Future()
            threading.Thread(
                target=_load, args=(_loading, *_deferred), name="paglets-cacerts", daemon=True
            ).start()
            atexit.register(_finish, _loading)
        return _loading


def _finish(loading: concurrent.futures.Future[int]) -> None:
    """At exit: let a loading under way end (an interpreter that finalizes under it crashes)."""
    with contextlib.suppress(Exception):
        loading.result(EXIT_WAIT)


def _load(
    done: concurrent.futures.Future[int], contexts: list[ssl.SSLContext], cafile: str
) -> None:
    """Load ``cafile`` into each context, as OpenSSL's default paths would have."""
    try:
        for context in contexts:
            if cafile:
                try:
                    context.load_verify_locations(cafile=cafile)
                except (OSError, ssl.SSLError) as exc:  # ignored by the default paths too
                    log.debug("CA file %s not loaded: %s", cafile, exc)
    except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the loading
        done.set_exception(exc)
    else:
        done.set_result(len(contexts))


async def certificates_loaded() -> None:
    """Return once the certificates `import_aiohttp` left are in aiohttp's contexts.

    Starts loading them if nothing did yet; returns at once if none were left.
    """
    loading = start_loading()
    if loading is not None and not loading.done():
        log.debug("waiting for the CA certificates of the default client contexts")
        await asyncio.wrap_future(loading)


def connector(tls: ssl.SSLContext | bool) -> aiohttp.TCPConnector:
    """An `aiohttp.TCPConnector` whose TLS connections wait for `certificates_loaded`.

    ``tls`` is aiohttp's ``ssl``: ``True`` (the default context, the one whose
    certificates may wait), ``False``, or a context of the caller's (which
    never waits).
    """
    global _connector_class  # noqa: PLW0603 - made once aiohttp is imported
    if _connector_class is None:
        _connector_class = _make_connector_class()
    return _connector_class(ssl=tls)


def _make_connector_class() -> type[aiohttp.TCPConnector]:
    import aiohttp  # noqa: PLC0415 - imported by import_aiohttp first, in a host

    class LoadingConnector(aiohttp.TCPConnector):
        """Waits for the default context's certificates before its first TLS connection."""

        def __init__(self, *, ssl: Any) -> None:
            super().__init__(ssl=ssl)
            self._waits = ssl is True and _deferred is not None

        async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
            if self._waits and req.is_ssl() and (_loading is None or not _loading.done()):
                await certificates_loaded()
            return await super().connect(req, traces, timeout)

    return LoadingConnector
