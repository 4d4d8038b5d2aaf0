"""``HostResources``: what a host has to spare, carried in its gossiped record.

Every host samples its own resources (`paglets.mesh.resources`) and publishes
them in its `paglets.wire.mesh.HostRecord` (field ``resources``), so every
host of the mesh keeps a fresh snapshot of every other without asking it:
``paglets-mesh-info summary`` shows it, and `paglets.wire.targets` picks hosts
by it (``paglets-mesh-info targets``, ``self.context.targets(...)``).

Decoded by hand, strictly: exactly the fields below, each an integer or a
finite number within its bound; anything else is a `ProtocolError` naming the
field. Importing this module loads neither psutil nor aiohttp, so a paglet's
process and the compute-slot scheduler can use the type as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Final

from paglets.core.errors import ProtocolError

MAX_CPUS: Final = 1 << 16
MAX_BYTES: Final = 1 << 62
"""The largest memory or disk size a record may state (4 EiB)."""
MAX_LOAD: Final = 1e6
MAX_PAGLETS: Final = 1 << 31


@dataclass(frozen=True, slots=True)
class HostResources:
    """One host's resources, as it sampled them last (see the module docstring).

    Attributes:
        cpu_count: logical CPUs.
        load_1: the 1-minute load average (0 where the system has none).
        load_5: the 5-minute load average.
        load_15: the 15-minute load average.
        memory_total: bytes of physical memory.
        memory_available: bytes available to new processes without swapping.
        swap_total: bytes of swap.
        swap_used: bytes of swap in use.
        disk_total: bytes of the file system of the host's work directory.
        disk_free: bytes free there for an unprivileged user.
        paglets_active: paglets with a process on the host.
        paglets_inactive: paglets kept on disk there, activated by their next message.
    """

    cpu_count: int
    load_1: float
    load_5: float
    load_15: float
    memory_total: int
    memory_available: int
    swap_total: int
    swap_used: int
    disk_total: int
    disk_free: int
    paglets_active: int
    paglets_inactive: int

    @property
    def load_per_cpu(self) -> float:
        """The 1-minute load average per CPU: about 1.0 when every CPU is busy."""
        return self.load_1 / max(1, self.cpu_count)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: one key per attribute."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: object, what: str = "resources") -> HostResources:
        """Decode the JSON form strictly; `ProtocolError` names the field at fault."""
        if not isinstance(data, dict) or data.keys() != _BOUNDS.keys():
            raise ProtocolError(f"{what} must be an object of exactly {sorted(_BOUNDS)}")
        values: dict[str, Any] = {}
        for key, (integer, high) in _BOUNDS.items():
            value = data[key]
            kinds = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds):
                word = "an integer" if integer else "a number"
                raise ProtocolError(f"{what} field {key!r} must be {word}, not {value!r:.40}")
            if not (math.isfinite(value) and 0 <= value <= high):
                raise ProtocolError(f"{what} field {key!r} is {value!r:.40}; expected 0..{high:g}")
            values[key] = value if integer else float(value)
        if values["cpu_count"] < 1:
            raise ProtocolError(f"{what} field 'cpu_count' must be at least 1")
        return cls(**values)


_BOUNDS: Final[dict[str, tuple[bool, float]]] = {  # field: (an integer?, its largest value)
    "cpu_count": (True, MAX_CPUS),
    "load_1": (False, MAX_LOAD),
    "load_5": (False, MAX_LOAD),
    "load_15": (False, MAX_LOAD),
    "memory_total": (True, MAX_BYTES),
    "memory_available": (True, MAX_BYTES),
    "swap_total": (True, MAX_BYTES),
    "swap_used": (True, MAX_BYTES),
    "disk_total": (True, MAX_BYTES),
    "disk_free": (True, MAX_BYTES),
    "paglets_active": (True, MAX_PAGLETS),
    "paglets_inactive": (True, MAX_PAGLETS),
}
