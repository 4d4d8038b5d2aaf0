"""``RestartPolicy``: what the host does when a paglet's process ends unasked."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from paglets.core.bounds import bounded
from paglets.core.errors import RequestError

MAX_RESTARTS = 1_000_000
MAX_WINDOW = 366 * 86_400.0  # a year
MAX_BACKOFF = 86_400.0  # a day
_DOUBLINGS = 64  # past this many, the backoff is at max_backoff anyway


class RestartMode(StrEnum):
    """When a paglet whose process ended unasked is started again."""

    NEVER = "never"
    ON_FAILURE = "on-failure"  # after a crash, a kill, a hang or a non-zero exit
    ALWAYS = "always"  # also after ``sys.exit(0)``


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Supervision of one paglet, set per class (``restart_policy = ...``) or per instance.

    A restarted paglet starts from its last durable state (its latest checkpoint,
    else its creation state) and runs ``on_activation``, then ``run()``. After
    ``max_restarts`` restarts within ``window`` seconds it is left ``failed``,
    with the reason in its info and in a ``paglet.failed`` event.

    Attributes:
        mode: when to restart; see `RestartMode`.
        max_restarts: restarts allowed within ``window`` seconds.
        window: the sliding window, in seconds.
        backoff: seconds before the first restart; doubled for each restart
            still in the window, up to ``max_backoff``.
        max_backoff: the longest wait before a restart.
    """

    mode: RestartMode = RestartMode.NEVER
    max_restarts: int = 3
    window: float = 60.0
    backoff: float = 0.1
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", RestartMode(self.mode))
        except (TypeError, ValueError):
            modes = ", ".join(repr(m.value) for m in RestartMode)
            raise RequestError(
                f"restart mode must be one of {modes}, not {self.mode!r:.40}"
            ) from None
        checked = {
            "max_restarts": bounded(
                self.max_restarts, "max_restarts", 0, MAX_RESTARTS, integer=True
            ),
            "window": bounded(self.window, "restart window", 0.0, MAX_WINDOW),
            "backoff": bounded(self.backoff, "restart backoff", 0.0, MAX_BACKOFF),
            "max_backoff": bounded(self.max_backoff, "restart max_backoff", 0.0, MAX_BACKOFF),
        }
        if checked["window"] <= 0:
            raise RequestError("a restart policy needs a window longer than 0 s")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def delay(self, recent: int) -> float:
        """Seconds to wait before a restart, with ``recent`` restarts in the window."""
        return float(min(self.max_backoff, self.backoff * 2 ** min(recent, _DOUBLINGS)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "mode": self.mode.value,
            "max_restarts": self.max_restarts,
            "window": self.window,
            "backoff": self.backoff,
            "max_backoff": self.max_backoff,
        }

    @classmethod
    def from_dict(cls, data: Any) -> RestartPolicy:
        """Decode the JSON form; `RequestError` names what is wrong."""
        if not isinstance(data, dict):
            raise RequestError("a restart policy must be a JSON object")
        unknown = set(data) - {"mode", "max_restarts", "window", "backoff", "max_backoff"}
        if unknown:
            raise RequestError(f"unknown restart policy fields: {sorted(unknown)}")
        defaults = cls()
        return cls(
            mode=data.get("mode", defaults.mode),
            max_restarts=data.get("max_restarts", defaults.max_restarts),
            window=data.get("window", defaults.window),
            backoff=data.get("backoff", defaults.backoff),
            max_backoff=data.get("max_backoff", defaults.max_backoff),
        )
