"""``Marker``: what a host tells its next process about an update in flight.

The host writes ``<home>/update.json`` just before it re-executes itself, and
its next process reads it at start:

- ``restarting``: the process runs ``new``; it must be ready within
  ``ready_timeout`` seconds, else it puts the checkout back on ``old`` and
  re-executes again (`paglets.update.restart`).
- ``rolled_back``: the process runs ``old`` again because ``new`` failed
  (``reason``); it reports that and does not try ``new`` again.

The file is written atomically and read strictly; one that cannot be read is
reported and removed, never trusted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "update.json"
MAX_SIZE = 64 * 1024


class Phase(StrEnum):
    """See the module docstring."""

    RESTARTING = "restarting"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Marker:
    """An update in flight across a re-execution (see the module docstring).

    Attributes:
        phase: restarting on ``new``, or back on ``old``.
        old: the commit before the update.
        new: the commit of the update.
        moved: whether this host moved the checkout (so it may move it back).
        started_at: when the host took the update lease (seconds since the epoch).
        ready_timeout: how long the new process has to be ready (seconds).
        reason: for ``rolled_back``: why ``new`` failed.
    """

    phase: Phase
    old: str
    new: str
    moved: bool
    started_at: float
    ready_timeout: float
    reason: str = ""

    def save(self, home: Path) -> None:
        """Write the marker into ``home`` atomically (blocking)."""
        path = home / FILE_NAME
        temp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        data = {**asdict(self), "phase": self.phase.value}
        try:
            temp.write_text(json.dumps(data) + "\n", encoding="utf-8")
            temp.replace(path)
        finally:
            temp.unlink(missing_ok=True)

    @classmethod
    def load(cls, home: Path) -> Marker | None:
        """The marker in ``home``, or ``None``; a bad one is logged and removed (blocking)."""
        path = home / FILE_NAME
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            return None
        try:
            return cls._decode(json.loads(raw) if len(raw) <= MAX_SIZE else None)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring the unreadable update marker %s: %s", path, exc)
            clear(home)
            return None

    @classmethod
    def _decode(cls, data: Any) -> Marker:
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise ValueError("not an update marker")
        strings = ("old", "new", "reason")
        numbers = ("started_at", "ready_timeout")
        if not all(isinstance(data[k], str) for k in strings) or not isinstance(
            data["moved"], bool
        ):
            raise ValueError("a field of the wrong type")
        if not all(isinstance(data[k], int | float) for k in numbers):
            raise ValueError("a field of the wrong type")
        return cls(**{**data, "phase": Phase(data["phase"])})


def clear(home: Path) -> None:
    """Remove the marker from ``home``, if there is one (blocking)."""
    with contextlib.suppress(FileNotFoundError):
        (home / FILE_NAME).unlink()
