"""What a move asks of its target (`TransferTicket`), and multi-hop plans (`Itinerary`).

Both are plain data: a ticket travels in the movement envelope and is checked
by the receiving host; an itinerary is a dataclass a paglet keeps in its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from paglets.core.bounds import bounded
from paglets.core.errors import RequestError

MAX_TIMEOUT = 86_400.0  # a day, for the whole transfer
MAX_RETRIES = 100


class ArrivalMode(StrEnum):
    """How a moved paglet arrives."""

    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class TransferTicket:
    """What a dispatch, clone or retract requires of its target, and how it is tried.

    Attributes:
        mesh_version: the target must run this ``--mesh-version`` (default: the
            sending host's own; hosts of another mesh version are never targets).
        code_version: the target must run this paglets version (e.g. ``"0.1.0"``),
            or this git commit (a prefix of at least 7 hex digits).
        tags: the target must carry every one of these ``--tag`` values.
        capabilities: the target must have each of these ``--property`` keys.
        timeout: seconds for the whole transfer, retries included.
        retries: how many times a failed connection is retried (same transfer id,
            so a retry never makes a second copy).
        arrival_mode: ``active`` (started on arrival) or ``inactive`` (kept on the
            target's disk until its first message).
    """

    mesh_version: str | None = None
    code_version: str | None = None
    tags: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    timeout: float = 60.0
    retries: int = 2
    arrival_mode: ArrivalMode = ArrivalMode.ACTIVE

    def to_dict(self) -> dict[str, Any]:
        """The JSON form carried in the envelope and the API."""
        return {
            "mesh_version": self.mesh_version,
            "code_version": self.code_version,
            "tags": list(self.tags),
            "capabilities": list(self.capabilities),
            "timeout": self.timeout,
            "retries": self.retries,
            "arrival_mode": self.arrival_mode.value,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TransferTicket:
        """Decode the JSON form; `RequestError` names what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise RequestError("a transfer ticket must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise RequestError(f"unknown transfer ticket fields: {sorted(unknown)}")
        try:
            ticket = cls(
                mesh_version=_opt_str(data, "mesh_version"),
                code_version=_opt_str(data, "code_version"),
                tags=_strs(data, "tags"),
                capabilities=_strs(data, "capabilities"),
                timeout=bounded(data.get("timeout", 60.0), "ticket timeout", 0.0, MAX_TIMEOUT),
                retries=bounded(
                    data.get("retries", 2), "ticket retries", 0, MAX_RETRIES, integer=True
                ),
                arrival_mode=ArrivalMode(data.get("arrival_mode", "active")),
            )
        except RequestError as exc:
            raise RequestError(f"bad transfer ticket: {exc.message}") from None
        except (TypeError, ValueError) as exc:
            raise RequestError(f"bad transfer ticket: {exc}") from None
        if ticket.timeout <= 0:
            raise RequestError("bad transfer ticket: its timeout must be longer than 0 s")
        return ticket

    def unmet(self, host: Any) -> list[str]:
        """What a host (a record with ``mesh_version``, ``version``, ``commit``,
        ``tags`` and ``properties``) lacks; empty when it meets the ticket."""
        lacks = []
        if self.mesh_version is not None and host.mesh_version != self.mesh_version:
            lacks.append(f"mesh version {self.mesh_version!r} (it runs {host.mesh_version!r})")
        if self.code_version is not None and not _code_matches(self.code_version, host):
            running = host.version + (f" at commit {host.commit[:12]}" if host.commit else "")
            lacks.append(f"code version {self.code_version!r} (it runs {running})")
        missing_tags = sorted(set(self.tags) - set(host.tags))
        if missing_tags:
            lacks.append(f"tags {missing_tags}")
        missing_caps = sorted(set(self.capabilities) - set(host.properties))
        if missing_caps:
            lacks.append(f"capabilities {missing_caps}")
        return lacks


def _code_matches(wanted: str, host: Any) -> bool:
    if wanted == host.version:
        return True
    commit = host.commit or ""
    return len(wanted) >= 7 and commit.startswith(wanted)  # noqa: PLR2004 - short hash


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _strs(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    return tuple(value)


@dataclass
class ItineraryStop:
    """One stop of an itinerary: a host (name or URL), and what to do there."""

    host: str
    task: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Itinerary:
    """A serializable multi-hop plan; keep it in the paglet's state.

    ``position`` is the index of the stop the paglet is at (or heading to).
    A paglet typically reads `current` in ``on_arrival``, does the task, calls
    `advance` and dispatches itself to the next stop's host, until `done`.
    """

    stops: list[ItineraryStop] = field(default_factory=list)
    position: int = 0

    @property
    def current(self) -> ItineraryStop | None:
        """The stop at ``position``, or ``None`` past the last one."""
        return self.stops[self.position] if self.position < len(self.stops) else None

    @property
    def done(self) -> bool:
        """Whether every stop was visited."""
        return self.position >= len(self.stops)

    def advance(self) -> ItineraryStop | None:
        """Move to the next stop and return it (``None`` when the plan is over)."""
        if self.position < len(self.stops):
            self.position += 1
        return self.current
