"""Admission of new children: how many paglets a host runs, how much memory they use.

A paglet is *live* on a host while it has (or is getting) a process there:
starting, active, stopping or restarting. Inactive paglets are on disk and
cost no process. Before a new child starts (a create, an arrival, an
activation) the supervisor asks `Admission.check`:

- at most ``max_paglets`` live paglets (``--max-paglets``);
- the children's memory under ``max_child_memory`` (``--max-child-memory``):
  the sum of their resident set sizes (RSS) as the supervisor's memory sweep
  measured it, at most one heartbeat interval ago, plus, for children started
  since, the average of the measured ones. RSS counts pages a child shares with
  the zygote in each child, so the sum errs on the high side.

Either refusal is a `HostFullError` (503) that names its flag. Nothing here
stops a running child from growing: the per-child ``memory_limit`` does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from paglets.core.errors import HostFullError
from paglets.core.status import PagletStatus

LIVE = frozenset(
    (PagletStatus.STARTING, PagletStatus.ACTIVE, PagletStatus.STOPPING, PagletStatus.RESTARTING)
)
"""The statuses of a paglet that has, or is getting, a process."""

_MiB = 1024 * 1024


UNMEASURED_CHILD: Final = 20 * _MiB
"""What a child counts for before any is measured: an idle child's RSS here (about 20 MiB,
`bench/foundation.py`), so a burst of creates before the first sweep is bounded too."""


@dataclass(slots=True)
class Admission:
    """The host-wide bounds on children, and the latest measure of their memory."""

    host_name: str
    max_paglets: int | None
    max_child_memory: int | None
    child_memory: int = 0  # bytes: the sum of the RSS last measured
    measured: int = 0  # how many children that sum covers

    def record(self, sizes: list[int]) -> None:
        """The memory sweep measured these children (their RSS, in bytes)."""
        self.child_memory = sum(sizes)
        self.measured = len(sizes)

    def estimate(self, live: int) -> int:
        """The children's memory now: measured, plus the average for unmeasured ones
        (`UNMEASURED_CHILD` each while none has been measured yet)."""
        average = self.child_memory // self.measured if self.measured else UNMEASURED_CHILD
        unmeasured = max(0, live - self.measured)
        return self.child_memory + unmeasured * average

    def check(self, live: int, what: str) -> None:
        """Refuse to start ``what`` (e.g. "paglet x") with ``live`` paglets running.

        Raises:
            HostFullError: at ``max_paglets``, or at ``max_child_memory``.
        """
        if self.max_paglets is not None and live >= self.max_paglets:
            raise HostFullError(
                f"host {self.host_name} runs {live} paglets, as many as it allows "
                f"(--max-paglets {self.max_paglets}); {what} was not started: retry later, "
                "use another host, or raise --max-paglets"
            )
        if self.max_child_memory is not None:
            used = self.estimate(live)
            if used >= self.max_child_memory:
                raise HostFullError(
                    f"the paglets of host {self.host_name} use {used / _MiB:.0f} MiB, as much "
                    f"as it allows (--max-child-memory {self.max_child_memory / _MiB:.0f} MiB); "
                    f"{what} was not started: retry later, use another host, or raise "
                    "--max-child-memory"
                )
