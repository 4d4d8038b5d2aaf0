"""``Message``: what callers send to a paglet."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Self


class Priority(IntEnum):
    """Named message priorities. Any int works; higher is handled first."""

    LOW = -10
    NORMAL = 0
    HIGH = 10
    URGENT = 100


@dataclass(frozen=True, slots=True)
class Message:
    """A message to a paglet.

    Args:
        kind: what the message asks for; the handler dispatches on it.
        args: JSON-compatible arguments.
        priority: higher priorities are handled first; FIFO within a priority.
        message_id: identifies the delivery; a retry with the same id is not
            handled twice. Filled in by the sender when not given.
        sender: the agent id of the sending paglet, when one sent it.
    """

    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    priority: int = Priority.NORMAL
    message_id: str | None = None
    sender: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise TypeError("Message kind must be a non-empty string")
        if not isinstance(self.args, dict):
            raise TypeError(f"Message args must be a dict, not {type(self.args).__name__}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError("Message priority must be an int")


class _NotHandled:
    """The type of `NOT_HANDLED`."""

    _instance: Self | None = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_HANDLED"


NOT_HANDLED: Final = _NotHandled()
"""Returned by `Paglet.not_handled` to say a message kind is not understood."""
