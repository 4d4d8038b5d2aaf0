"""The log of the host's HTTP server: a malformed request is a 400, not a traceback.

aiohttp logs every request it cannot parse (a request line over its limit, a bad
chunked body, ...) as ``ERROR Error handling request`` with a traceback. Such a
request is an ordinary client error, answered ``400``, and anyone who can connect,
key or no key, can send any number of them: logged that way, they fill the host's
log with tracebacks. `server_logger` is the logger the host gives aiohttp instead:
a malformed request is one line at debug level (dropped unless debug logging is
on); every other record passes as aiohttp made it.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["server_logger"]

_SHOWN: Final = 200


class _MalformedRequests(logging.Filter):
    """Turns a record of an unparseable request into one debug line, or drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not server_logger.isEnabledFor(logging.DEBUG):
            return False
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {str(exc)[:_SHOWN]!r}"
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


server_logger: Final = logging.getLogger("paglets.transport.http")
server_logger.addFilter(_MalformedRequests())
