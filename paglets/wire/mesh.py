"""``HostRecord``: one host of the mesh, as gossip carries it and ``/v1/mesh/hosts`` lists it.

Decoded by hand, strictly: every field is type-checked, an unknown field fails
loudly (`ProtocolError`), and a record costs a few µs to decode, so a
gossip round with the whole table stays cheap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from paglets.core.errors import ProtocolError

MESH_SERVICE_TYPE = "_paglets._tcp.local."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_str_dict(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _is_opt_str(value: object) -> bool:
    return value is None or isinstance(value, str)


@dataclass(frozen=True, slots=True)
class HostRecord:
    """What the mesh knows of one host.

    Attributes:
        name: the host's name, unique in the mesh.
        url: the URL it publishes (``--public-url``, else its first bound address).
        mesh_version: its ``--mesh-version``; only hosts of the same version are
            movement targets.
        protocol_version: the version of the ``/v1`` wire protocol it speaks.
        version: the paglets package version it runs.
        commit: the git commit it runs from, when started from a checkout.
        online: whether its heartbeat is recent, as the host asked judges it.
        last_seen: when its latest heartbeat was produced (seconds since the epoch,
            in the clock of the host asked).
        paglets: how many paglets it holds.
        tags: its ``--tag`` values.
        properties: its ``--property KEY=VALUE`` pairs.
        urls: every URL it answers on (the published one first).
        incarnation: when this process of the host started (µs since the epoch);
            a restart gets a larger one.
        heartbeat: a counter the host increments every gossip round.
    """

    name: str
    url: str
    mesh_version: str
    protocol_version: int
    version: str
    commit: str | None = None
    online: bool = True
    last_seen: float = 0.0
    paglets: int = 0
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)
    incarnation: int = 0
    heartbeat: int = 0

    _CHECKS: ClassVar[dict[str, tuple[Any, str]]] = {
        "name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        "url": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        "mesh_version": (lambda v: isinstance(v, str), "a string"),
        "protocol_version": (_is_int, "an integer"),
        "version": (lambda v: isinstance(v, str), "a string"),
        "commit": (_is_opt_str, "a string or null"),
        "online": (lambda v: isinstance(v, bool), "a boolean"),
        "last_seen": (_is_number, "a number"),
        "paglets": (_is_int, "an integer"),
        "tags": (_is_str_list, "a list of strings"),
        "properties": (_is_str_dict, "an object of strings"),
        "urls": (_is_str_list, "a list of strings"),
        "incarnation": (_is_int, "an integer"),
        "heartbeat": (_is_int, "an integer"),
    }
    _REQUIRED: ClassVar[frozenset[str]] = frozenset(
        {"name", "url", "mesh_version", "protocol_version", "version"}
    )

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access to fields (``record["online"]``)."""
        if key not in self._CHECKS:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "url": self.url,
            "mesh_version": self.mesh_version,
            "protocol_version": self.protocol_version,
            "version": self.version,
            "commit": self.commit,
            "online": self.online,
            "last_seen": self.last_seen,
            "paglets": self.paglets,
            "tags": list(self.tags),
            "properties": dict(self.properties),
            "urls": list(self.urls),
            "incarnation": self.incarnation,
            "heartbeat": self.heartbeat,
        }

    @classmethod
    def from_dict(cls, data: Any) -> HostRecord:
        """Decode the JSON form; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict):
            raise ProtocolError("a host record must be a JSON object")
        unknown = data.keys() - cls._CHECKS.keys()
        if unknown:
            raise ProtocolError(f"unknown host record fields: {sorted(unknown)}")
        missing = cls._REQUIRED - data.keys()
        if missing:
            raise ProtocolError(f"host record lacks fields: {sorted(missing)}")
        for key, value in data.items():
            check, word = cls._CHECKS[key]
            if not check(value):
                raise ProtocolError(f"host record field {key!r} must be {word}, not {value!r:.80}")
        record = cls(**data)
        if "last_seen" in data:
            object.__setattr__(record, "last_seen", float(data["last_seen"]))
        return record

    def replace(self, **changes: Any) -> HostRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def answers_on(self, url: str) -> bool:
        """Whether ``url`` is one of this host's URLs."""
        url = url.rstrip("/")
        return url == self.url or url in self.urls
