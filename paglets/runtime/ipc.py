"""Typed control records exchanged between a host and a paglet's child process.

Each record is a small frozen dataclass with an ``OP`` tag. ``to_wire`` gives
the JSON object sent in a frame; `decode` turns a received object back
into its record and fails loudly on an unknown op or unknown fields.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from paglets.core.errors import (
    HandlerError,
    PagletError,
    ProtocolError,
    error_from_wire,
)


class Op(StrEnum):
    """Record tags on the host-to-child channel."""

    INIT = "init"
    MESSAGE = "msg"
    GET_STATE = "state"
    STOP = "stop"
    READY = "ready"
    INIT_FAILED = "init_failed"
    REPLY = "reply"
    HEARTBEAT = "hb"
    NOTE = "note"
    MOVE = "move"
    PERSIST = "persist"
    CALL = "call"
    CALL_RESULT = "result"


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """An error as it crosses a process boundary: by name, never pickled."""

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorRecord:
        """Describe ``exc``; exceptions outside the tree become ``HandlerError``."""
        tb = "".join(traceback.format_exception(exc))
        if isinstance(exc, PagletError):
            return cls(type(exc).__name__, exc.message, tb)
        return cls(HandlerError.__name__, f"{type(exc).__name__}: {exc}", tb)

    def to_exception(self) -> PagletError:
        """The matching error of the ``PagletError`` tree."""
        return error_from_wire(self.type, self.message, self.traceback)

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_wire(cls, data: Any) -> ErrorRecord:
        if not isinstance(data, dict) or set(data) != {"type", "message", "traceback"}:
            raise ProtocolError(f"malformed error record: {data!r:.200}")
        return cls(str(data["type"]), str(data["message"]), data["traceback"])


@dataclass(frozen=True, slots=True)
class _Record:
    OP: ClassVar[Op]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.OP.value}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            out[name] = value.to_wire() if isinstance(value, ErrorRecord) else value
        return out


@dataclass(frozen=True, slots=True)
class Init(_Record):
    """First record to a new child: which paglet to become."""

    OP: ClassVar[Op] = Op.INIT
    agent_id: str
    class_path: str
    state: dict[str, Any] | None
    host_name: str
    host_url: str
    work_dir: str
    allowed_prefixes: list[str]
    heartbeat_interval: float
    arrival: str = "creation"
    envelope: str | None = None
    spool_dir: str = ""
    files_dir: str = ""
    checkpoint: str = ""
    fsync: bool = True
    generation: int = 0  # of this start: its checkpoints are numbered after it
    code: str = ""  # a class shipped by value: its pickled code, base64 (paglets.byvalue)
    file_roots: list[str] = field(
        default_factory=list
    )  # where file-moving paglets may read and write


@dataclass(frozen=True, slots=True)
class Deliver(_Record):
    """A message for the paglet's mailbox; ``reply`` is false for one-way sends."""

    OP: ClassVar[Op] = Op.MESSAGE
    id: int
    kind: str
    args: dict[str, Any]
    priority: int
    message_id: str | None
    sender: str | None
    reply: bool = True

    def to_wire(self) -> dict[str, Any]:  # the generic one, spelt out: one a message
        return {
            "op": "msg",
            "id": self.id,
            "kind": self.kind,
            "args": self.args,
            "priority": self.priority,
            "message_id": self.message_id,
            "sender": self.sender,
            "reply": self.reply,
        }


@dataclass(frozen=True, slots=True)
class GetState(_Record):
    """Ask for the JSON projection of the state, between two messages."""

    OP: ClassVar[Op] = Op.GET_STATE
    id: int


@dataclass(frozen=True, slots=True)
class Move(_Record):
    """Between two messages: dispatch, retract or clone the paglet to ``target``."""

    OP: ClassVar[Op] = Op.MOVE
    id: int
    kind: str
    target: str | None
    ticket: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Persist(_Record):
    """Between two messages: write the paglet to its checkpoint file (and run
    ``on_deactivating`` first when it is being deactivated)."""

    OP: ClassVar[Op] = Op.PERSIST
    id: int
    deactivate: bool = False
    sync: bool = True


@dataclass(frozen=True, slots=True)
class Stop(_Record):
    """After the message in hand, reply and exit; run ``on_disposing`` if disposing."""

    OP: ClassVar[Op] = Op.STOP
    id: int
    dispose: bool = True


@dataclass(frozen=True, slots=True)
class Ready(_Record):
    """The child built its paglet and ran the creation hook."""

    OP: ClassVar[Op] = Op.READY
    pid: int
    restart_policy: dict[str, Any] | None = None  # the class's own
    idle_timeout: float | None = None  # the class's deactivation_policy


@dataclass(frozen=True, slots=True)
class InitFailed(_Record):
    """The child could not become the paglet; it exits after sending this."""

    OP: ClassVar[Op] = Op.INIT_FAILED
    error: ErrorRecord


@dataclass(frozen=True, slots=True)
class Reply(_Record):
    """The outcome of a ``Deliver``, ``GetState`` or ``Stop``: a value or an error.

    A one-way ``Deliver`` gets a bare ``Reply`` once handled, so the host knows
    it left the mailbox (its error, if any, went to the host as a ``Note``).
    """

    OP: ClassVar[Op] = Op.REPLY
    id: int
    value: Any = None
    error: ErrorRecord | None = None

    def to_wire(self) -> dict[str, Any]:  # the generic one, spelt out: one a message
        error = None if self.error is None else self.error.to_wire()
        return {"op": "reply", "id": self.id, "value": self.value, "error": error}


@dataclass(frozen=True, slots=True)
class Heartbeat(_Record):
    """Sent on a timer by a thread of the child: it is alive and not GIL-bound."""

    OP: ClassVar[Op] = Op.HEARTBEAT


@dataclass(frozen=True, slots=True)
class Note(_Record):
    """Something the host should log as a context event (e.g. ``run()`` failed)."""

    OP: ClassVar[Op] = Op.NOTE
    kind: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Call(_Record):
    """The child asks its host to do something for the paglet (see `paglets.runtime.link`)."""

    OP: ClassVar[Op] = Op.CALL
    id: int
    method: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallResult(_Record):
    """The host's answer to a ``Call``: a value or an error."""

    OP: ClassVar[Op] = Op.CALL_RESULT
    id: int
    value: Any = None
    error: ErrorRecord | None = None


Record = (
    Init
    | Deliver
    | GetState
    | Move
    | Persist
    | Stop
    | Ready
    | InitFailed
    | Reply
    | Heartbeat
    | Note
    | Call
    | CallResult
)

_BY_OP: dict[str, type[_Record]] = {
    cls.OP.value: cls
    for cls in (
        Init,
        Deliver,
        GetState,
        Move,
        Persist,
        Stop,
        Ready,
        InitFailed,
        Reply,
        Heartbeat,
        Note,
        Call,
        CallResult,
    )
}
_FIELDS: dict[type[_Record], frozenset[str]] = {}


def _field_names(cls: type[_Record]) -> frozenset[str]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    return names


_REPLY_KEYS: frozenset[str] = frozenset({"op", "id", "value", "error"})
_DELIVER_KEYS: frozenset[str] = frozenset(
    {"op", "id", "kind", "args", "priority", "message_id", "sender", "reply"}
)


def decode(data: dict[str, Any]) -> Record:
    """The record for a received JSON object; ``ProtocolError`` if it is not one."""
    # the two records of every message, whole and plain, without the general walk
    op = data.get("op")
    if op == "reply" and data.get("error") is None and data.keys() == _REPLY_KEYS:
        return Reply(data["id"], data["value"])
    if op == "msg" and data.keys() == _DELIVER_KEYS:
        return Deliver(
            data["id"],
            data["kind"],
            data["args"],
            data["priority"],
            data["message_id"],
            data["sender"],
            data["reply"],
        )
    values = dict(data)
    cls = _BY_OP.get(values.pop("op", None))
    if cls is None:
        raise ProtocolError(f"unknown record op in {data!r:.200}")
    unknown = set(values) - _field_names(cls)
    if unknown:
        raise ProtocolError(f"unknown fields {sorted(unknown)} in {cls.__name__} record")
    if "error" in values and values["error"] is not None:
        values["error"] = ErrorRecord.from_wire(values["error"])
    try:
        return cls(**values)  # type: ignore[return-value]
    except TypeError as exc:
        raise ProtocolError(f"malformed {cls.__name__} record: {exc}") from None
