"""``Notice``: one notification, or one line of a text stream, from a paglet to the person.

Every field is checked where it is parsed (`Notice.from_dict`, `parse_notify`),
with bounds: a title of at most `MAX_TITLE` characters, a message of at most
`MAX_MESSAGE`, a job id and a stream name shaped as identifiers. A notice too
long is refused, never cut silently.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any, Final

from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id

MAX_TITLE: Final = 200
"""Characters in a notice's title."""
MAX_MESSAGE: Final = 8192
"""Characters in a notice's message, or in one line of a stream."""


class Severity(enum.IntEnum):
    """How much a notice matters; a filter for one shows it and those above."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40

    @classmethod
    def parse(cls, value: object) -> Severity:
        """The severity named ``value`` (``debug``, ``info``, ``warning``, ``error``).

        Raises:
            RequestError: any other value; the message lists the names.
        """
        if isinstance(value, str):
            found = cls.__members__.get(value.upper())
            if found is not None:
                return found
        names = ", ".join(m.name.lower() for m in cls)
        raise RequestError(f"severity {value!r:.40} is not one of {names}")

    @property
    def label(self) -> str:
        """Its name, lower case, as on the wire."""
        return self.name.lower()


class NoticeKind(enum.StrEnum):
    """A notice proper, or a line appended to a named text stream."""

    NOTICE = "notice"
    LINE = "line"


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification as a host keeps and serves it.

    Attributes:
        seq: its number on its host, rising by one (``follow`` asks for those after one).
        at: when the host received it (Unix time).
        host: the host's name.
        agent_id: the paglet that sent it (its host says so, the paglet cannot).
        kind: ``notice``, or ``line`` (of the text stream ``stream``).
        severity: ``debug``, ``info``, ``warning`` or ``error``.
        title: a short title (a line's stream name).
        message: the text.
        job: the job it is about, if any (compute slots report progress so).
        stream: the name of its stream, for a ``line``.
    """

    seq: int
    at: float
    host: str
    agent_id: str
    kind: NoticeKind
    severity: Severity
    title: str
    message: str
    job: str | None = None
    stream: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Its JSON form."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["severity"] = self.severity.label
        return data

    @classmethod
    def from_dict(cls, data: object) -> Notice:
        """Decode a notice strictly (a host's answer, a line of the journal).

        Raises:
            ProtocolError: a missing, extra or badly typed field.
        """
        try:
            if not isinstance(data, dict) or data.keys() != _FIELDS:
                raise TypeError("wrong fields")  # noqa: TRY301 - one message for all
            seq, at = data["seq"], data["at"]
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
                raise TypeError("seq")  # noqa: TRY301
            if isinstance(at, bool) or not isinstance(at, int | float):
                raise TypeError("at")  # noqa: TRY301
            fields = parse_fields(
                data["title"], data["message"], data["severity"], data["job"], data["stream"]
            )
            return cls(
                seq=seq,
                at=float(at),
                host=check_id(data["host"], IdKind.HOST),
                agent_id=check_id(data["agent_id"], IdKind.AGENT),
                kind=NoticeKind(data["kind"]),
                **fields,
            )
        except (TypeError, ValueError, RequestError) as exc:
            raise ProtocolError(f"malformed notice: {exc} in {data!r:.200}") from None


_FIELDS: Final = frozenset(Notice.__slots__)


def _text(value: object, what: str, limit: int, *, empty: bool) -> str:
    if not isinstance(value, str):
        raise RequestError(f"a notice's {what} must be a string")
    if not value and not empty:
        raise RequestError(f"a notice's {what} must not be empty")
    if len(value) > limit:
        raise RequestError(
            f"a notice's {what} is {len(value)} characters long; the limit is {limit}: "
            "put long output in a stream, a line at a time, or in an artifact"
        )
    return value


def parse_fields(
    title: object, message: object, severity: object, job: object, stream: object
) -> dict[str, Any]:
    """The checked fields a paglet gives a notice, by name (for `Notice`).

    Raises:
        RequestError: a field of the wrong type, too long, or a bad job id,
            stream name or severity; the message names it and its bound.
    """
    return {
        "title": _text(title, "title", MAX_TITLE, empty=False),
        "message": _text(message, "message", MAX_MESSAGE, empty=True),
        "severity": Severity.parse(severity),
        "job": None if job is None else check_id(job, IdKind.JOB),
        "stream": None if stream is None else check_id(stream, IdKind.STREAM),
    }
