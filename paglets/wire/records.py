"""JSON control records of the HTTP API (``/v1``).

Records are dataclasses on `paglets.wire.record.Record`: typed, strict about
unknown fields, a few µs to decode. `SendRequest` is checked by hand, since its
rules (positive finite timeout, well-formed ids) go beyond types. Identifiers in
a record (an agent id to create, a message id, a sender) are checked with
`paglets.core.ids.check_id` as the record is parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from paglets.core.errors import RequestError
from paglets.core.events import ContextEvent, EventKind
from paglets.core.ids import IdKind, check_id, is_valid_id
from paglets.wire.record import Record
from paglets.wire.services import check_kind

PROTOCOL_VERSION = 1
API_PREFIX = "/v1"


@dataclass
class CreateRequest(Record):
    """``POST /v1/paglets``: which class to start, with what initial state."""

    class_path: str
    state: dict[str, Any] | None = None
    agent_id: str | None = None
    restart_policy: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Decode ``data``; a chosen ``agent_id`` must be a valid agent id (`check_id`)."""
        req = super().parse(data)
        if req.agent_id is not None:
            check_id(req.agent_id, IdKind.AGENT)
        return req


@dataclass
class PagletInfo(Record):
    """What ``GET /v1/paglets/{id}`` and the list return for one paglet."""

    agent_id: str
    class_path: str
    host: str
    host_url: str
    status: str
    created_at: float
    pid: int | None = None
    pending: int = 0
    exit_reason: str | None = None
    exit_detail: str | None = None


@dataclass
class HostInfo(Record):
    """What ``GET /v1/host`` returns."""

    name: str
    url: str
    version: str
    protocol_version: int
    mesh_version: str
    pid: int
    status: str
    started_at: float
    paglets: int
    peers: list[str] = field(default_factory=list)


@dataclass
class ErrorBody(Record):
    """The body of every error response: a stable type name, a message, a traceback."""

    type: str
    message: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class SendRequest:
    """``POST /v1/paglets/{id}/messages``."""

    kind: str
    args: dict[str, Any]
    priority: int = 0
    message_id: str | None = None
    sender: str | None = None
    mode: str = "sync"
    timeout: float | None = None
    no_delay: bool = False

    _FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"kind", "args", "priority", "message_id", "sender", "mode", "timeout", "no_delay"}
    )
    _MODES: ClassVar[frozenset[str]] = frozenset({"sync", "oneway", "future"})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "args": self.args,
            "priority": self.priority,
            "message_id": self.message_id,
            "sender": self.sender,
            "mode": self.mode,
            "timeout": self.timeout,
            "no_delay": self.no_delay,
        }

    @classmethod
    def parse(cls, data: Any) -> SendRequest:  # noqa: C901 - one check per field
        if not isinstance(data, dict):
            raise RequestError("a message must be a JSON object")
        if not data.keys() <= cls._FIELDS:
            unknown = data.keys() - cls._FIELDS
            raise RequestError(f"unknown message fields: {sorted(unknown)}")
        get = data.get
        kind = get("kind")
        args = get("args", {})
        priority = get("priority", 0)
        mode = get("mode", "sync")
        timeout = get("timeout")
        no_delay = get("no_delay", False)
        message_id = get("message_id")
        sender = get("sender")
        if not isinstance(kind, str) or not kind:
            raise RequestError("message 'kind' must be a non-empty string")
        check_kind(kind)
        if not isinstance(args, dict):
            raise RequestError("message 'args' must be a JSON object")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise RequestError("message 'priority' must be an integer")
        if type(mode) is not str or mode not in cls._MODES:
            raise RequestError(f"message 'mode' must be one of {sorted(cls._MODES)}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise RequestError("message 'timeout' must be a positive number of seconds")
        if not isinstance(no_delay, bool):
            raise RequestError("message 'no_delay' must be true or false")
        # the sender is the agent id of the sending paglet (`Message.sender`)
        if message_id is not None and not is_valid_id(message_id, IdKind.MESSAGE):
            _bad_id("message_id", message_id, IdKind.MESSAGE)
        if sender is not None and not is_valid_id(sender, IdKind.AGENT):
            _bad_id("sender", sender, IdKind.AGENT)
        return cls(
            kind,
            args,
            priority,
            message_id,
            sender,
            mode,
            None if timeout is None else float(timeout),
            no_delay,
        )


def _bad_id(name: str, value: object, kind: IdKind) -> None:
    try:
        check_id(value, kind)
    except RequestError as exc:
        raise RequestError(f"message {name!r}: {exc.message}") from None


def event_to_dict(event: ContextEvent) -> dict[str, Any]:
    """The JSON form of a context event."""
    return {
        "cursor": event.cursor,
        "timestamp": event.timestamp,
        "kind": event.kind.value,
        "host": event.host,
        "agent_id": event.agent_id,
        "detail": event.detail,
        "data": event.data,
    }


def event_from_dict(data: dict[str, Any]) -> ContextEvent:
    """A context event from its JSON form."""
    try:
        return ContextEvent(
            cursor=int(data["cursor"]),
            timestamp=float(data["timestamp"]),
            kind=EventKind(data["kind"]),
            host=str(data["host"]),
            agent_id=data.get("agent_id"),
            detail=str(data.get("detail", "")),
            data=dict(data.get("data") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestError(f"invalid context event: {exc}") from None
