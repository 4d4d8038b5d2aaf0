"""Picking hosts by their resources: `TargetQuery`, `Target` and `select`.

A query states constraints: the most 1-minute load per CPU, the least
available memory, the least free disk (of the host's work directory), tags
the host must carry. `select` keeps the online hosts whose gossiped
`paglets.wire.resources.HostResources` meet every one, ranks them (least
load per CPU first, then most available memory, then by name) and returns the
first ``limit`` as `Target` records. ``GET /v1/mesh/targets``,
``paglets-mesh-info targets`` and ``self.context.targets(...)`` all answer
through it, from the asking host's table, without asking the hosts themselves.

Pure and light: it imports neither aiohttp nor psutil, so a paglet's process
uses the types as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import ProtocolError, RequestError
from paglets.wire.resources import MAX_BYTES, MAX_LOAD, HostResources

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from paglets.wire.mesh import HostRecord

DEFAULT_LIMIT: Final = 16
MAX_LIMIT: Final = 1000
MAX_QUERY_TAGS: Final = 16
_TAG_LENGTH: Final = 128
_QUERY_KEYS: Final = frozenset(
    {"max_load_per_cpu", "min_free_memory", "min_free_disk", "tags", "limit"}
)


@dataclass(frozen=True, slots=True)
class TargetQuery:
    """What a host must offer to be a target; ``None`` (or no tags): no constraint.

    Attributes:
        max_load_per_cpu: the most 1-minute load average per CPU (1.0: every CPU busy).
        min_free_memory: the least available memory, in bytes.
        min_free_disk: the least free disk of the host's work directory, in bytes.
        tags: tags (``--tag``) the host must carry, every one.
        limit: how many targets at most, the best first.
    """

    max_load_per_cpu: float | None = None
    min_free_memory: int | None = None
    min_free_disk: int | None = None
    tags: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        load = self.max_load_per_cpu
        if load is not None and not (
            isinstance(load, int | float)
            and not isinstance(load, bool)
            and math.isfinite(load)
            and 0 <= load <= MAX_LOAD
        ):
            raise RequestError(f"max_load_per_cpu must be a number 0..{MAX_LOAD:g}, not {load!r}")
        for name in ("min_free_memory", "min_free_disk"):
            size = getattr(self, name)
            if size is not None and not _is_int_in(size, 0, MAX_BYTES):
                raise RequestError(f"{name} must be a number of bytes 0..2**62, not {size!r:.40}")
        if not _is_int_in(self.limit, 1, MAX_LIMIT):
            raise RequestError(f"limit must be an integer 1..{MAX_LIMIT}, not {self.limit!r:.40}")
        tags: object = self.tags  # from a caller's hands: not always the tuple it should be
        if not isinstance(tags, tuple):
            raise RequestError(f"tags must be a list of tags, not {tags!r:.40}")
        if len(self.tags) > MAX_QUERY_TAGS or not all(
            isinstance(t, str) and 0 < len(t) <= _TAG_LENGTH for t in self.tags
        ):
            raise RequestError(
                f"tags must be at most {MAX_QUERY_TAGS} strings of 1 to {_TAG_LENGTH} characters"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what a paglet sends its host)."""
        return {
            "max_load_per_cpu": self.max_load_per_cpu,
            "min_free_memory": self.min_free_memory,
            "min_free_disk": self.min_free_disk,
            "tags": list(self.tags),
            "limit": self.limit,
        }

    @classmethod
    def from_dict(cls, data: object) -> TargetQuery:
        """Decode the JSON form; `RequestError` names the key or value at fault."""
        if not isinstance(data, dict):
            raise RequestError(f"a targets query is an object of {sorted(_QUERY_KEYS)}")
        unknown = data.keys() - _QUERY_KEYS
        if unknown:
            raise RequestError(
                f"unknown targets constraints {sorted(unknown)!r:.120}; "
                f"use: {', '.join(sorted(_QUERY_KEYS))}"
            )
        tags = data.get("tags") or []
        if not isinstance(tags, list):
            raise RequestError("tags must be a list of strings")
        limit = data.get("limit")
        return cls(
            max_load_per_cpu=data.get("max_load_per_cpu"),
            min_free_memory=data.get("min_free_memory"),
            min_free_disk=data.get("min_free_disk"),
            tags=tuple(tags),
            limit=DEFAULT_LIMIT if limit is None else limit,
        )

    @classmethod
    def from_query(cls, query: Mapping[str, str], tags: list[str]) -> TargetQuery:
        """From an URL's query string (numbers as text, ``tag`` repeated)."""
        unknown = set(query) - (_QUERY_KEYS - {"tags"}) - {"tag"}
        if unknown:
            raise RequestError(
                f"unknown query parameters {sorted(unknown)!r:.120}; use: max_load_per_cpu, "
                "min_free_memory, min_free_disk, tag (repeatable), limit"
            )
        data: dict[str, Any] = {"tags": tags}
        for key, kind in (
            ("max_load_per_cpu", float),
            ("min_free_memory", int),
            ("min_free_disk", int),
            ("limit", int),
        ):
            raw = query.get(key)
            if raw is None:
                continue
            try:
                data[key] = kind(raw)
            except ValueError:
                word = "a number" if kind is float else "an integer"
                raise RequestError(
                    f"query parameter {key!r} must be {word}, not {raw!r:.40}"
                ) from None
        return cls.from_dict(data)

    def admits(self, record: HostRecord) -> bool:
        """Whether ``record``'s host is online, has resources and meets every constraint."""
        res = record.resources
        if not record.online or res is None or not set(self.tags) <= set(record.tags):
            return False
        return (
            (self.max_load_per_cpu is None or res.load_per_cpu <= self.max_load_per_cpu)
            and (self.min_free_memory is None or res.memory_available >= self.min_free_memory)
            and (self.min_free_disk is None or res.disk_free >= self.min_free_disk)
        )


def _is_int_in(value: object, low: int, high: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True, slots=True)
class Target:
    """A host that meets a `TargetQuery`, with what it has to spare.

    Attributes:
        rank: 1 for the best (least load per CPU), then 2, ...
        name: the host's name (give it to ``move_to`` or ``where=``).
        url: the URL it publishes.
        mesh_version: its ``--mesh-version``.
        version: the paglets version it runs.
        tags: its ``--tag`` values.
        resources: its latest gossiped snapshot.
    """

    rank: int
    name: str
    url: str
    mesh_version: str
    version: str
    tags: tuple[str, ...]
    resources: HostResources

    @property
    def load_per_cpu(self) -> float:
        """Its 1-minute load average per CPU."""
        return self.resources.load_per_cpu

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "rank": self.rank,
            "name": self.name,
            "url": self.url,
            "mesh_version": self.mesh_version,
            "version": self.version,
            "tags": list(self.tags),
            "load_per_cpu": round(self.load_per_cpu, 3),
            "resources": self.resources.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: object) -> Target:
        """Decode the JSON form strictly; `ProtocolError` names what is wrong."""
        keys = {"rank", "name", "url", "mesh_version", "version", "tags", "load_per_cpu"}
        if not isinstance(data, dict) or data.keys() != keys | {"resources"}:
            raise ProtocolError("a target must be an object of rank, name, url, ..., resources")
        texts = (data["name"], data["url"], data["mesh_version"], data["version"])
        tags = data["tags"]
        if (
            not _is_int_in(data["rank"], 1, MAX_LIMIT)
            or not all(isinstance(t, str) for t in texts)
            or not (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
        ):
            raise ProtocolError(f"a target has a field of a bad type: {data!r:.120}")
        return cls(
            rank=data["rank"],
            name=data["name"],
            url=data["url"],
            mesh_version=data["mesh_version"],
            version=data["version"],
            tags=tuple(tags),
            resources=HostResources.from_dict(data["resources"], "a target's resources"),
        )


def select(records: Iterable[HostRecord], query: TargetQuery) -> list[Target]:
    """The hosts of ``records`` that meet ``query``, ranked best first (module docstring)."""
    fit = [(r, r.resources) for r in records if query.admits(r) and r.resources is not None]
    fit.sort(key=lambda pair: (pair[1].load_per_cpu, -pair[1].memory_available, pair[0].name))
    return [
        Target(
            rank=i,
            name=r.name,
            url=r.url,
            mesh_version=r.mesh_version,
            version=r.version,
            tags=tuple(r.tags),
            resources=res,
        )
        for i, (r, res) in enumerate(fit[: query.limit], start=1)
    ]
