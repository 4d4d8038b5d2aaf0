"""``PUT /v1/code/{sha256}``: send a host the pickled code of a class shipped by value.

The body is the code, as `paglets.byvalue.pickling.class_reference` made it
(``application/octet-stream``, at most `MAX_CODE` bytes); its SHA-256 must be
the one in the URL. The answer is ``{"sha256", "stored"}``: ``stored`` is false
when the host had it already. Nothing is run or unpickled here.

Who gets what:

- a caller with the key: the code is kept when the host trusts code by value
  (``--trust-code-by-value``), or is already known to it (code registered in its
  own process); otherwise ``403 CodeNotTrustedError``, naming the flag;
- a caller without the key, a stranger on the LAN: ``401``, like every route
  but ``/health`` and the mesh hello;
- a paglet: it holds no key, so the same ``401``; a paglet creates paglets through
  its host (``self.context.create``), under the same trust rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from paglets.byvalue.refs import MAX_CODE
from paglets.transport.body import json_response, read_capped
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from paglets.byvalue.store import CodeStore

__all__ = ["CODE_ROUTE", "add_routes"]

CODE_ROUTE = f"{API_PREFIX}/code/{{code_id}}"

_STORE: web.AppKey[CodeStore] = web.AppKey("paglets.byvalue.routes.STORE")
_READ_TIMEOUT: web.AppKey[float] = web.AppKey("paglets.byvalue.routes.READ_TIMEOUT")


async def put_code(request: web.Request) -> web.Response:
    store = request.app[_STORE]
    sha256 = request.match_info["code_id"]
    store.check_accepts(sha256)  # before a byte of the body is read
    code = await read_capped(request, MAX_CODE, request.app[_READ_TIMEOUT])
    stored = await store.put(sha256, code)
    return json_response({"sha256": sha256, "stored": stored}, status=201 if stored else 200)


def add_routes(app: web.Application, store: CodeStore, read_timeout: float) -> None:
    """Serve the code route of ``store`` in ``app``."""
    app[_STORE] = store
    app[_READ_TIMEOUT] = read_timeout
    app.router.add_put(CODE_ROUTE, put_code)
