"""``GET /v1/user-info`` and the calls paglets notify with; see `UserInfoService`.

Who gets what:

- a caller with the key (or any caller of a host that has none, bound to
  loopback): the host's notices, filtered, with a bounded long poll;
- a caller without the key, a stranger: 401, as for every route;
- a paglet: ``user.notify`` and ``user.lines`` over its link to its own host
  (``self.context.notify``, ``self.context.stream``); the host stamps the
  paglet's id on them, so a paglet cannot speak for another. A paglet reads
  them as any key holder does, over HTTP.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import RequestError
from paglets.core.ids import IdKind, check_id
from paglets.transport.body import json_response
from paglets.userinfo.contract import USER_INFO, NoticeList, NoticeRecord
from paglets.userinfo.journal import NoticeLog
from paglets.userinfo.model import MAX_MESSAGE, NoticeKind, Severity, parse_fields
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from aiohttp import web

    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.services.registry import ServiceRegistry

MAX_WAIT: Final = 30.0
"""Seconds a ``follow`` request may wait for a new notice."""
MAX_LIMIT: Final = 10_000
"""Notices one answer holds at most."""
MAX_LINES: Final = 1000
"""Lines one ``user.lines`` call may append."""
_QUERY: Final = frozenset({"after", "severity", "job", "since", "limit", "wait"})


class UserInfoService:
    """A host's notices: the journal, the route that serves it and the paglets' calls."""

    def __init__(self, config: HostConfig, calls: HostCalls, services: ServiceRegistry) -> None:
        self.log = NoticeLog(config.home / "user-info" / "notices.jsonl", config.name)
        calls.register("user.notify", self._notify)
        calls.register("user.lines", self._lines)
        services.serve_here(USER_INFO, self.answer)

    def __repr__(self) -> str:
        return f"<UserInfoService {self.log!r}>"

    def install(self, app: web.Application) -> None:
        """Read the journal back, and add the route to the host's application."""
        self.log.open()
        app.router.add_get(f"{API_PREFIX}/user-info", self._list)
        app.on_cleanup.append(self._close)

    async def _close(self, _app: web.Application) -> None:
        self.log.close()

    async def _notify(self, agent_id: str, args: dict[str, Any]) -> int:
        """``self.context.notify(...)``: one notice; answers its ``seq``."""
        unknown = args.keys() - {"title", "message", "severity", "job"}
        if unknown:
            raise RequestError(f"user.notify takes no {sorted(unknown)}")
        fields = parse_fields(
            args.get("title"),
            args.get("message", ""),
            args.get("severity", "info"),
            args.get("job"),
            None,
        )
        return self.log.append(agent_id, NoticeKind.NOTICE, fields).seq

    async def _lines(self, agent_id: str, args: dict[str, Any]) -> int:
        """``self.context.stream(name).write(...)``: lines of a stream; answers the last seq."""
        unknown = args.keys() - {"stream", "lines", "job"}
        if unknown:
            raise RequestError(f"user.lines takes no {sorted(unknown)}")
        stream = check_id(args.get("stream"), IdKind.STREAM)
        lines = args.get("lines")
        if not isinstance(lines, list) or not 0 < len(lines) <= MAX_LINES:
            raise RequestError(f"user.lines takes a list of 1 to {MAX_LINES} lines")
        checked = [parse_fields(stream, line, "info", args.get("job"), stream) for line in lines]
        seq = self.log.last_seq
        for fields in checked:
            seq = self.log.append(agent_id, NoticeKind.LINE, fields).seq
        return seq

    async def answer(self, op: str, request: Any) -> NoticeList:
        """``user-info.v1``: its one operation, ``list`` (`NoticeQuery`), without a wait."""
        del op  # the contract has one operation
        query = parse_query(
            {k: str(v) for k, v in dataclasses.asdict(request).items() if v is not None}
        )
        found = self.log.query(
            **{k: query[k] for k in ("after", "severity", "job", "since", "limit")}
        )
        return NoticeList(
            host=self.log.host,
            last=self.log.last_seq,
            notices=[NoticeRecord(**n.to_dict()) for n in found],
        )

    async def _list(self, request: web.Request) -> web.Response:
        """``GET /v1/user-info``: this host's notices, oldest first.

        Query: ``after`` (a seq: only those after it), ``severity`` (the lowest
        shown), ``job``, ``since`` (Unix time), ``limit`` (at most `MAX_LIMIT`),
        ``wait`` (seconds, at most `MAX_WAIT`: with ``after``, wait that long for
        one that passes the filters). Answers ``{"host", "last", "notices"}``;
        ``last`` is the newest seq, to ask ``after`` next time.
        """
        query = parse_query(request.query)
        deadline = time.monotonic() + query["wait"]
        filters = {k: query[k] for k in ("severity", "job", "since", "limit")}
        while True:
            last = self.log.last_seq
            found = self.log.query(after=query["after"], **filters)
            left = deadline - time.monotonic()
            if found or left <= 0:
                break
            await self.log.wait(last, left)
            query["after"] = last
        return json_response(
            {"host": self.log.host, "last": last, "notices": [n.to_dict() for n in found]}
        )


def parse_query(query: Any) -> dict[str, Any]:
    """The checked query of ``GET /v1/user-info``.

    Raises:
        RequestError: an unknown parameter, or one out of its range.
    """
    unknown = set(query) - _QUERY
    if unknown:
        raise RequestError(f"unknown query parameter(s) {sorted(unknown)}; known: {sorted(_QUERY)}")
    job = query.get("job")
    return {
        "after": _number(query, "after", kind=int, low=0, high=2**62),
        "severity": Severity.parse(query.get("severity", "debug")),
        "job": None if job is None else check_id(job, IdKind.JOB),
        "since": _number(query, "since", kind=float, low=0, high=1e11, default=None),
        "limit": _number(query, "limit", kind=int, low=1, high=MAX_LIMIT, default=1000),
        "wait": _number(query, "wait", kind=float, low=0, high=MAX_WAIT, default=0.0),
    }


def _number(
    query: Any, name: str, *, kind: type[Any], low: float, high: float, default: Any = 0
) -> Any:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise RequestError(f"query parameter {name!r} must be a number") from None
    if not low <= value <= high:
        raise RequestError(f"query parameter {name!r} must be between {low:g} and {high:g}")
    return value


__all__ = ["MAX_LIMIT", "MAX_LINES", "MAX_MESSAGE", "MAX_WAIT", "UserInfoService", "parse_query"]
