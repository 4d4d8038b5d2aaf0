"""The framing of a persistent channel: numbered calls and their answers.

One connection carries many calls at once. A call is a JSON object
``{"id": N, "op": "...", "agent_id": "...", "body": {...}}`` (a call to a
paglet) or ``{"id": N, "op": "...", "service": "...", "body": {...}}`` (a call
to a resident service, by contract name); its answer is
``{"id": N, "status": S, "body": ...}`` with an HTTP status and the body the
HTTP API would have answered (an error body for ``status >= 400``), so a call
over a channel and the same call over HTTP succeed and fail alike. Answers come
in the order they are ready, matched to calls by ``id``.

A text frame holds one call (or answer), or a JSON array of up to `MAX_BATCH`
of them: what one side has ready in one turn of its event loop goes out as one
frame, so a burst of messages costs a few frames, not one each. The calls of a
frame are taken in their order.

The proxy channel (``GET /v1/channel``, `paglets.transport.channel`) uses it;
so will the relay's session. Frames are parsed strictly
(`paglets.wire.strict_json`) and checked field by field where they are parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Self

from paglets.core.contract import check_contract_name
from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.wire import strict_json
from paglets.wire.records import API_PREFIX

__all__ = [
    "CHANNEL_ROUTE",
    "HEARTBEAT",
    "MAX_BATCH",
    "MAX_CALL_ID",
    "OPS",
    "PAGLET_OPS",
    "SERVICE_OPS",
    "Answer",
    "Call",
    "encode_frame",
    "parse_frame",
]

CHANNEL_ROUTE: Final = f"{API_PREFIX}/channel"
"""Where a host offers the proxy channel (a WebSocket upgrade)."""
HEARTBEAT: Final = 30.0
"""Seconds between pings on a channel; a peer silent for half of it is taken as gone."""
PAGLET_OPS: Final = frozenset({"send", "result"})
"""``send``: a message (the body of ``POST /v1/paglets/{id}/messages``); ``result``:
a future's reply (``{"message_id", "wait"}``, as ``GET .../messages/{message_id}``)."""
SERVICE_OPS: Final = frozenset({"calls", "lease"})
"""``calls``: a service call (the body of ``POST /v1/services/{contract}/calls``);
``lease``: a lease request (as ``POST /v1/services/{contract}/lease``)."""
OPS: Final = PAGLET_OPS | SERVICE_OPS
MAX_CALL_ID: Final = 2**53 - 1  # exact in every JSON reader
MAX_BATCH: Final = 1024
"""The most calls (or answers) one frame holds."""
_PAGLET_CALL: Final = frozenset({"id", "op", "agent_id", "body"})
_SERVICE_CALL: Final = frozenset({"id", "op", "service", "body"})
_ANSWER: Final = frozenset({"id", "status", "body"})


def _call_id(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_CALL_ID:
        raise RequestError(f"a call id must be an integer from 0 to {MAX_CALL_ID}")
    return value


def parse_frame(text: str) -> list[Any]:
    """The items of a text frame: one JSON value, or the elements of an array of them.

    Raises:
        RequestError: not strict JSON, or an array that is empty or longer than `MAX_BATCH`.
    """
    data = strict_json.loads(text, "channel frame")
    if not isinstance(data, list):
        return [data]
    if not 0 < len(data) <= MAX_BATCH:
        raise RequestError(f"a channel frame holds 1 to {MAX_BATCH} items, not {len(data)}")
    return data


def encode_frame(items: list[str]) -> str:
    """One text frame of already encoded calls or answers (at most `MAX_BATCH`)."""
    return items[0] if len(items) == 1 else "[" + ",".join(items) + "]"


@dataclass(frozen=True, slots=True)
class Call:
    """One call on a channel: to a paglet (``target`` its id) or a service (its contract)."""

    id: int
    op: str
    target: str
    body: dict[str, Any]

    def encode(self) -> str:
        """The JSON text of the call."""
        key = "service" if self.op in SERVICE_OPS else "agent_id"
        return strict_json.dumps(
            {"id": self.id, "op": self.op, key: self.target, "body": self.body}
        )

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check one item of a frame.

        Raises:
            RequestError: not a JSON object of exactly these fields, an unknown
                op, a malformed agent id, contract name or call id (`id_of`
                finds the id, when readable, for the answer).
        """
        op = data.get("op") if isinstance(data, dict) else None
        service = type(op) is str and op in SERVICE_OPS
        key = "service" if service else "agent_id"
        if not isinstance(data, dict) or data.keys() != (
            _SERVICE_CALL if service else _PAGLET_CALL
        ):
            raise RequestError(
                'a call must be {"id", "op", "agent_id", "body"}, '
                'or {"id", "op", "service", "body"} for a service'
            )
        call_id = _call_id(data["id"])
        if type(op) is not str or op not in OPS:
            raise RequestError(f"unknown op {op!r:.40}: expected one of {sorted(OPS)}")
        if not isinstance(data["body"], dict):
            raise RequestError("a call's body must be a JSON object")
        if service:
            return cls(call_id, op, check_contract_name(data[key]), data["body"])
        return cls(call_id, op, check_id(data[key], IdKind.AGENT), data["body"])

    @staticmethod
    def id_of(data: Any) -> int | None:
        """The id of an item that is not a valid call, if it has a readable one."""
        value = data.get("id") if isinstance(data, dict) else None
        return value if type(value) is int and 0 <= value <= MAX_CALL_ID else None


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to the call of the same ``id``."""

    id: int
    status: int
    body: Any

    def encode(self) -> str:
        """The JSON text of the answer."""
        return strict_json.dumps({"id": self.id, "status": self.status, "body": self.body})

    @classmethod
    def decode_frame(cls, text: str) -> list[Self]:
        """The answers of a text frame; `ProtocolError` if it is not one or more answers."""
        try:
            items = parse_frame(text)
        except RequestError as exc:
            raise ProtocolError(f"a channel frame is not answers: {exc}") from None
        return [cls.parse(item) for item in items]

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check one answer; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict) or data.keys() != _ANSWER:
            raise ProtocolError(f"not a channel answer: {str(data)[:200]!r}")
        status = data["status"]
        if type(status) is not int or not 100 <= status <= 599:  # noqa: PLR2004
            raise ProtocolError(f"a channel answer's status must be an HTTP status: {status!r}")
        try:
            return cls(_call_id(data["id"]), status, data["body"])
        except RequestError as exc:
            raise ProtocolError(str(exc)) from None
