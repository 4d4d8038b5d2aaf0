"""Import aiohttp with its CA certificates loaded on a thread, beside a host's start.

::

    loading = import_aiohttp()        # at once: aiohttp's import without the CA bundle
    ...                               # the rest of the start, on this thread
    await certificates_loaded()       # before the first outgoing connection

aiohttp makes its two default client TLS contexts (`aiohttp.connector`) as it is
imported, and each loads the system's CA bundle on the importing thread with the
GIL held: on a small machine 60-90 ms, about 40 % of a host's start before ready
(430 M of the 1,420 M instructions callgrind counts).

`import_aiohttp` imports it with OpenSSL's default CA file hidden (its
environment variable pointed at an empty file for the import only), so the
contexts are made empty in 2 ms; then a thread loads that same file into the
context that verifies (``ssl=True``, the default) with
`ssl.SSLContext.load_verify_locations`, which parses it without the GIL, while
the host imports and starts. That context ends as aiohttp's import would have
made it: the same certificates, the same directory of hashed certificates
looked up on demand. The other (``ssl=False``) verifies nothing and is left
without them (half the work saved). `certificates_loaded` returns once the
thread is done; ``paglets-host`` awaits it before it binds (before any outgoing
connection: joins, relay sessions, moves).

A process that imported aiohttp already (an in-process `Host`, a script) is
left as it is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import ssl
import sys
import threading

__all__ = ["certificates_loaded", "import_aiohttp"]

log = logging.getLogger(__name__)

_loading: concurrent.futures.Future[int] | None = None


def import_aiohttp() -> concurrent.futures.Future[int] | None:
    """Import aiohttp, its client contexts' CA certificates loading on a thread.

    Returns:
        The loading (its result: how many contexts it filled), or ``None`` when
        aiohttp was imported already and nothing was deferred.
    """
    global _loading  # noqa: PLW0603 - one aiohttp per process
    if "aiohttp" in sys.modules:
        return _loading
    paths = ssl.get_default_verify_paths()
    variable = paths.openssl_cafile_env
    previous = os.environ.get(variable)
    # the file OpenSSL's default paths load: the variable's, else the built-in one
    cafile = paths.openssl_cafile if previous is None else previous
    os.environ[variable] = os.devnull
    try:
        from aiohttp import connector  # noqa: PLC0415 - the point of this module
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous
    contexts = [  # a context that verifies nothing needs no certificates
        value
        for value in vars(connector).values()
        if isinstance(value, ssl.SSLContext) and value.verify_mode != ssl.CERT_NONE
    ]
    _loading = concurrent.futures.Future()
    threading.Thread(
        target=_load, args=(_loading, contexts, cafile), name="paglets-cacerts", daemon=True
    ).start()
    return _loading


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
    """Return once the certificates `import_aiohttp` deferred are in aiohttp's contexts."""
    if _loading is not None and not _loading.done():
        log.debug("waiting for the CA certificates of the default client contexts")
        await asyncio.wrap_future(_loading)
