"""The framing of a persistent channel: numbered calls and their answers.

One connection carries many calls at once. A call is a JSON text frame
``{"id": N, "op": "...", "agent_id": "...", "body": {...}}``; its answer is
``{"id": N, "status": S, "body": ...}`` with an HTTP status and the body the
HTTP API would have answered (an error body for ``status >= 400``), so a call
over a channel and the same call over HTTP succeed and fail alike. Answers come
in the order they are ready, matched to calls by ``id``.

The proxy channel (``GET /v1/channel``, `paglets.transport.channel`) uses it;
so will the relay's session. Frames are parsed strictly
(`paglets.wire.strict_json`) and checked field by field where they are parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Self

from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.wire import strict_json
from paglets.wire.records import API_PREFIX

__all__ = ["CHANNEL_ROUTE", "HEARTBEAT", "MAX_CALL_ID", "OPS", "Answer", "Call"]

CHANNEL_ROUTE: Final = f"{API_PREFIX}/channel"
"""Where a host offers the proxy channel (a WebSocket upgrade)."""
HEARTBEAT: Final = 30.0
"""Seconds between pings on a channel; a peer silent for half of it is taken as gone."""

OPS: Final = frozenset({"send", "result"})
"""``send``: a message (the body of ``POST /v1/paglets/{id}/messages``); ``result``:
a future's reply (``{"message_id", "wait"}``, as ``GET .../messages/{message_id}``)."""
MAX_CALL_ID: Final = 2**53 - 1  # exact in every JSON reader


def _call_id(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_CALL_ID:
        raise RequestError(f"a call id must be an integer from 0 to {MAX_CALL_ID}")
    return value


@dataclass(frozen=True, slots=True)
class Call:
    """One call on a channel."""

    id: int
    op: str
    agent_id: str
    body: dict[str, Any]

    def encode(self) -> str:
        """The text frame."""
        return strict_json.dumps(
            {"id": self.id, "op": self.op, "agent_id": self.agent_id, "body": self.body}
        )

    @classmethod
    def decode(cls, text: str) -> Self:
        """Parse and check a text frame.

        Raises:
            RequestError: not a JSON object of exactly these fields, an unknown
                op, a malformed agent id or call id (the id, when readable, is
                in `call_id_of` for the answer).
        """
        data = strict_json.loads(text)
        if not isinstance(data, dict) or set(data) != {"id", "op", "agent_id", "body"}:
            raise RequestError('a call must be {"id", "op", "agent_id", "body"}')
        call_id = _call_id(data["id"])
        op = data["op"]
        if op not in OPS:
            raise RequestError(f"unknown op {op!r}: expected one of {sorted(OPS)}")
        if not isinstance(data["body"], dict):
            raise RequestError("a call's body must be a JSON object")
        return cls(call_id, op, check_id(data["agent_id"], IdKind.AGENT), data["body"])


def call_id_of(text: str) -> int | None:
    """The id of a frame that is not a valid call, if it has a readable one."""
    try:
        data = strict_json.loads(text)
    except RequestError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if type(value) is int and 0 <= value <= MAX_CALL_ID else None


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to the call of the same ``id``."""

    id: int
    status: int
    body: Any

    def encode(self) -> str:
        """The text frame."""
        return strict_json.dumps({"id": self.id, "status": self.status, "body": self.body})

    @classmethod
    def decode(cls, text: str) -> Self:
        """Parse and check a text frame; `ProtocolError` if it is not an answer."""
        try:
            data = strict_json.loads(text)
        except RequestError as exc:
            raise ProtocolError(f"a channel answer is not JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) != {"id", "status", "body"}:
            raise ProtocolError(f"not a channel answer: {text[:200]!r}")
        status = data["status"]
        if type(status) is not int or not 100 <= status <= 599:  # noqa: PLR2004
            raise ProtocolError(f"a channel answer's status must be an HTTP status: {status!r}")
        try:
            return cls(_call_id(data["id"]), status, data["body"])
        except RequestError as exc:
            raise ProtocolError(str(exc)) from None
