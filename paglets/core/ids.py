"""The one validator of identifiers that come from outside.

Agent ids, transfer ids, message ids, host names and service names reach the
host in URLs, JSON bodies, envelope headers and gossip. Several of them become
file names, so each is checked here, where it is parsed, before it has any
effect: 1 to `IdKind.limit` characters of ``A-Z a-z 0-9 . _ -``, starting with a
letter or a digit (so never ``.``, ``..``, a hidden name or an option-like
``-x``), and never a path separator, a space or a control character.

A bad identifier is a `RequestError` (HTTP 400) that names the kind, shows the
value (cut short) and says what is allowed.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from paglets.core.errors import RequestError

_SHAPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHOWN: Final = 40


class IdKind(enum.Enum):
    """The kinds of identifier, each with its word for messages and its length limit."""

    AGENT = ("agent id", 128)
    TRANSFER = ("transfer id", 128)
    MESSAGE = ("message id", 200)
    HOST = ("host name", 64)
    SERVICE = ("service name", 128)
    CODE = ("code hash", 64)  # a SHA-256 in hex; paglets.byvalue.refs checks the exact form
    ARTIFACT = ("artifact name", 200)
    JOB = ("job id", 200)
    STREAM = ("stream name", 128)

    def __init__(self, word: str, limit: int) -> None:
        self.word = word
        self.limit = limit


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


def is_valid_id(value: object, kind: IdKind = IdKind.AGENT) -> bool:
    """Whether ``value`` is a well-formed identifier of ``kind``."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= kind.limit
        and _SHAPE.fullmatch(value) is not None
    )


def check_id(value: object, kind: IdKind = IdKind.AGENT) -> str:
    """``value`` if it is a well-formed identifier of ``kind``.

    Raises:
        RequestError: it is not a string, is empty or too long, or has a character
            outside ``A-Z a-z 0-9 . _ -`` or does not start with a letter or digit.
    """
    if is_valid_id(value, kind):
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise RequestError(f"a {kind.word} must be a string, not {type(value).__name__}")
    if not value:
        raise RequestError(f"a {kind.word} must not be empty")
    if len(value) > kind.limit:
        raise RequestError(
            f"{kind.word} {_shown(value)} is {len(value)} characters long; "
            f"the limit is {kind.limit}"
        )
    raise RequestError(
        f"{kind.word} {_shown(value)} is not valid: use letters, digits, '.', '_' and '-', "
        "starting with a letter or a digit"
    )
