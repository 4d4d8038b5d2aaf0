"""The frames of a relay session between a hub and a connect-mode host.

A host started with ``--connect-to HUB`` keeps one session to its hub: a
WebSocket (``GET /v1/relay/session``) or, where a proxy refuses the upgrade, a
series of long polls (``POST /v1/relay/poll``). Both carry the same JSON items,
batched in frames as the proxy channel batches its calls
(`paglets.wire.channel.encode_frame` and `parse_frame`):

- hub to host, ``request``: an HTTP request for the host's API that a caller
  sent the hub at ``/v1/relay/hosts/<name>/...``, numbered by ``seq`` (per link,
  growing, kept across hub restarts) and named by ``id``;
- host to hub, ``answer``: the response to the request of that ``seq`` and
  ``id``, which also acknowledges it: the hub drops an item only then;
- host to hub, ``hello``: the first frame of a WebSocket session (its ``session``
  id); hub to host, ``bye``: the hub stops (its ``reason``);
- hub to host, ``call``: a call of a caller's proxy channel to the host
  (``GET <hub>/v1/relay/hosts/<name>/v1/channel``), a `paglets.wire.channel.Call`
  renumbered by the hub (`RelayedCall`); host to hub, ``reply``: its answer
  (`RelayedReply`). These are not queued: the caller's channel is the
  acknowledgement, and a session that ends under a call closes the caller's
  channel, whose client sends the call again over HTTP (and so through the
  queue) with the same message id.

A poll's body is `Poll` (the session, the answers); its response `PollReply`
(the requests not yet answered). Every field is checked where it is parsed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Final, Self

from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.wire import strict_json
from paglets.wire.channel import MAX_BATCH, Call, encode_frame, parse_frame
from paglets.wire.channel import Answer as ChannelAnswer
from paglets.wire.records import API_PREFIX

__all__ = [
    "HOSTS_PREFIX",
    "MAX_INLINE_BODY",
    "PIPE_OVER",
    "PIPE_ROUTE",
    "POLL_ROUTE",
    "RELAY_PROPERTY",
    "SESSION_ROUTE",
    "Answer",
    "Poll",
    "PollReply",
    "RelayedCall",
    "RelayedReply",
    "Request",
    "encode_items",
    "relay_url",
]

SESSION_ROUTE: Final = f"{API_PREFIX}/relay/session"
POLL_ROUTE: Final = f"{API_PREFIX}/relay/poll"
PIPE_ROUTE: Final = f"{API_PREFIX}/relay/pipe"
"""``GET /v1/relay/pipe?id=P``: the body of a piped request, streamed from its caller."""
PIPE_OVER: Final = 256 * 1024
"""A request body larger than this (or of unknown length) is piped, not carried inline."""
DIAGNOSTICS_ROUTE: Final = f"{API_PREFIX}/relay/diagnostics"
HOSTS_PREFIX: Final = f"{API_PREFIX}/relay/hosts/"
"""``<hub>/v1/relay/hosts/<name>`` is the URL of a relayed host: the hub forwards
every request under it to that host over its session."""
RELAY_PROPERTY: Final = "relay-hub"
"""The property of a relayed host's mesh record naming its hub's URL."""
MAX_INLINE_BODY: Final = 8 << 20
"""The largest request or response body an item carries."""
MAX_SEQ: Final = 2**53 - 1
MAX_HEADERS: Final = 64
MAX_PATH: Final = 8192
METHODS: Final = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"})


def relay_url(hub: str, name: str) -> str:
    """The URL the mesh knows the relayed host ``name`` of ``hub`` by."""
    return f"{hub.rstrip('/')}{HOSTS_PREFIX}{name}"


FRAME_BYTES: Final = MAX_INLINE_BODY
"""Items are batched in a frame up to about this many characters (an item alone may
be larger, up to the session's frame limit of twice `MAX_INLINE_BODY`)."""


def encode_items(items: list[Any]) -> list[str]:
    """Frames holding the items (`Request`, `Answer`...): at most `MAX_BATCH` each, and
    past `FRAME_BYTES` characters only when one item alone is."""
    return frames_of([item.encode() for item in items])


def frames_of(texts: list[str]) -> list[str]:
    """Frames holding already encoded items, batched as `encode_items` batches them."""
    frames: list[str] = []
    batch: list[str] = []
    size = 0
    for text in texts:
        if batch and (len(batch) >= MAX_BATCH or size + len(text) > FRAME_BYTES):
            frames.append(encode_frame(batch))
            batch, size = [], 0
        batch.append(text)
        size += len(text) + 1
    if batch:
        frames.append(encode_frame(batch))
    return frames


def _seq(value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_SEQ:
        raise ProtocolError(f"a relay seq must be an integer from 1 to {MAX_SEQ}")
    return value


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or len(value) > MAX_HEADERS:
        raise ProtocolError(f"relay headers must be a list of at most {MAX_HEADERS} pairs")
    pairs = []
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2  # noqa: PLR2004 - a pair
            or not all(isinstance(p, str) and "\n" not in p and "\r" not in p for p in pair)
        ):
            raise ProtocolError("a relay header must be a [name, value] pair of one-line strings")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _body(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_INLINE_BODY * 4 // 3 + 4:
        raise ProtocolError("a relay body must be base64 text within the inline limit")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("a relay body is not valid base64") from None


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request for the relayed host, queued at the hub."""

    seq: int
    id: str
    method: str
    path: str  # the path and query under the host's API, e.g. /v1/paglets/x/messages
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    pipe: str = ""  # the body is not here: the host fetches it from PIPE_ROUTE?id=pipe

    def encode(self) -> str:
        """The JSON text of the item."""
        return strict_json.dumps(self.to_dict())

    def with_seq(self, seq: int) -> Request:
        """The same item numbered ``seq``."""
        return Request(seq, self.id, self.method, self.path, self.headers, self.body, self.pipe)

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON data."""
        return {
            "t": "request",
            "seq": self.seq,
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "headers": [list(p) for p in self.headers],
            "body": _b64(self.body),
            "pipe": self.pipe,
        }

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check one request item; `ProtocolError` names what is wrong."""
        keys = {"t", "seq", "id", "method", "path", "headers", "body", "pipe"}
        if not isinstance(data, dict) or set(data) != keys or data["t"] != "request":
            raise ProtocolError(f"not a relay request: {str(data)[:200]!r}")
        method, path = data["method"], data["path"]
        if method not in METHODS:
            raise ProtocolError(f"relay method {method!r} is not one of {sorted(METHODS)}")
        if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
            raise ProtocolError("a relay path must be an absolute path of at most 8 KiB")
        try:
            item_id = check_id(data["id"], IdKind.MESSAGE)
        except RequestError as exc:
            raise ProtocolError(f"relay item id: {exc}") from None
        pipe = data["pipe"]
        if pipe != "":
            pipe = _session(pipe)
        headers, body = _headers(data["headers"]), _body(data["body"])
        return cls(_seq(data["seq"]), item_id, method, path, headers, body, pipe)


@dataclass(frozen=True, slots=True)
class Answer:
    """The response of the relayed host to the request of the same ``seq`` and ``id``."""

    seq: int
    id: str
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def encode(self) -> str:
        """The JSON text of the item."""
        return strict_json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON data."""
        return {
            "t": "answer",
            "seq": self.seq,
            "id": self.id,
            "status": self.status,
            "headers": [list(p) for p in self.headers],
            "body": _b64(self.body),
        }

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check one answer item; `ProtocolError` names what is wrong."""
        keys = {"t", "seq", "id", "status", "headers", "body"}
        if not isinstance(data, dict) or set(data) != keys or data["t"] != "answer":
            raise ProtocolError(f"not a relay answer: {str(data)[:200]!r}")
        status = data["status"]
        if type(status) is not int or not 100 <= status <= 599:  # noqa: PLR2004
            raise ProtocolError(f"a relay answer's status must be an HTTP status: {status!r}")
        try:
            item_id = check_id(data["id"], IdKind.MESSAGE)
        except RequestError as exc:
            raise ProtocolError(f"relay item id: {exc}") from None
        return cls(
            _seq(data["seq"]), item_id, status, _headers(data["headers"]), _body(data["body"])
        )


@dataclass(frozen=True, slots=True)
class RelayedCall:
    """A call of a caller's proxy channel, carried to the relayed host on the session.

    Its ``call.id`` is the hub's number for it (unique on the hub while it waits),
    not the caller's.
    """

    call: Call

    def encode(self) -> str:
        """The JSON text of the item."""
        return f'{{"t":"call","call":{self.call.encode()}}}'

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check one call item; `ProtocolError` names what is wrong (a call whose
        fields are wrong too: the hub checked it before sending it)."""
        if not isinstance(data, dict) or set(data) != {"t", "call"} or data["t"] != "call":
            raise ProtocolError(f"not a relayed call: {str(data)[:200]!r}")
        try:
            return cls(Call.parse(data["call"]))
        except RequestError as exc:
            raise ProtocolError(f"a relayed call: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class RelayedReply:
    """The relayed host's answer to a `RelayedCall` (``answer.id`` is the hub's number)."""

    answer: ChannelAnswer

    def encode(self) -> str:
        """The JSON text of the item."""
        return f'{{"t":"reply","answer":{self.answer.encode()}}}'

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check one reply item; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict) or set(data) != {"t", "answer"} or data["t"] != "reply":
            raise ProtocolError(f"not a relayed reply: {str(data)[:200]!r}")
        return cls(ChannelAnswer.parse(data["answer"]))


def parse_answers(text: str) -> list[Answer | RelayedReply]:
    """The items of a frame from a relayed host: answers to requests, replies to calls."""
    try:
        items = parse_frame(text)
    except RequestError as exc:
        raise ProtocolError(f"a relay frame is not items: {exc}") from None
    return [
        RelayedReply.parse(item)
        if isinstance(item, dict) and item.get("t") == "reply"
        else Answer.parse(item)
        for item in items
    ]


@dataclass(frozen=True, slots=True)
class Poll:
    """A long poll's body: the session it belongs to and the answers it carries."""

    session: str
    answers: tuple[Answer, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The poll as JSON data."""
        return {"session": self.session, "answers": [a.to_dict() for a in self.answers]}

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check a poll body; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict) or set(data) != {"session", "answers"}:
            raise ProtocolError('a relay poll must be {"session", "answers"}')
        answers = data["answers"]
        if not isinstance(answers, list) or len(answers) > MAX_BATCH:
            raise ProtocolError(f"a relay poll carries at most {MAX_BATCH} answers")
        return cls(_session(data["session"]), tuple(Answer.parse(a) for a in answers))


@dataclass(frozen=True, slots=True)
class PollReply:
    """A long poll's response: the requests not yet answered (maybe none)."""

    requests: tuple[Request, ...] = ()
    bye: str = ""  # the hub stops: why

    def to_dict(self) -> dict[str, Any]:
        """The reply as JSON data."""
        return {"requests": [r.to_dict() for r in self.requests], "bye": self.bye}

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Check a poll reply; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict) or set(data) != {"requests", "bye"}:
            raise ProtocolError('a relay poll reply must be {"requests", "bye"}')
        requests = data["requests"]
        if not isinstance(requests, list) or len(requests) > MAX_BATCH:
            raise ProtocolError(f"a relay poll reply holds at most {MAX_BATCH} requests")
        if not isinstance(data["bye"], str):
            raise ProtocolError("a relay poll reply's bye must be a string")
        return cls(tuple(Request.parse(r) for r in requests), data["bye"][:500])


def _session(value: Any) -> str:
    try:
        return check_id(value, IdKind.MESSAGE)
    except RequestError as exc:
        raise ProtocolError(f"relay session id: {exc}") from None


def parse_session(value: Any) -> str:
    """A session id from the wire, checked."""
    return _session(value)
