"""Where a job should run: its host, or another with the tags it needs and room now.

Pure: `choose` takes each online host's tags and scheduler figures (`HostSlots`;
``None`` for a host that does not answer) and the job's wishes:

- ``required`` tags: only hosts carrying all of them are candidates;
- ``preferred`` tags: among hosts that can start the job now, those carrying
  more of them come first;
- ``on_busy``: ``queue`` (default) stays on its host if it is a candidate and
  waits there; ``redirect`` moves to a candidate that can start it now, when its
  own host cannot, and queues where it is when none can.

A host that can start a job now has the cores, RAM and temp storage free and
its load under its gate. The job never moves to a host whose totals are too small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paglets.services.compute.contract import HostSlots

ON_BUSY: Final = ("queue", "redirect")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One online host as placement sees it."""

    name: str
    tags: tuple[str, ...]
    slots: HostSlots | None


def _fits_total(slots: HostSlots, cores: int, ram: int, tmp: int) -> bool:
    return cores <= slots.cores and ram <= slots.ram and tmp <= slots.tmp


def starts_now(slots: HostSlots, cores: int, ram: int, tmp: int) -> bool:
    """Whether ``slots`` has the request free now, under its load gate."""
    return (
        cores <= slots.free_cores
        and ram <= slots.free_ram
        and tmp <= slots.free_tmp
        and slots.load_per_cpu <= slots.max_load_per_cpu
    )


def choose(
    here: str,
    hosts: Sequence[Candidate],
    *,
    cores: int,
    ram: int,
    tmp: int,
    required: Sequence[str] = (),
    preferred: Sequence[str] = (),
    on_busy: str = "queue",
) -> str | None:
    """The host to move to, or ``None`` to submit where the job is."""
    eligible = [
        h
        for h in hosts
        if h.slots is not None
        and set(required) <= set(h.tags)
        and _fits_total(h.slots, cores, ram, tmp)
    ]
    if not eligible:
        return None  # the submit here says what is wrong (Infeasible)
    own = next((h for h in eligible if h.name == here), None)
    ready = [h for h in eligible if h.slots and starts_now(h.slots, cores, ram, tmp)]

    def rank(h: Candidate) -> tuple[int, bool, int]:
        assert h.slots is not None  # noqa: S101 - eligible hosts have figures
        return (len(set(preferred) & set(h.tags)), h.name == here, h.slots.free_cores)

    if own is not None and (on_busy == "queue" or not ready):
        return None
    if own is not None and own in ready and rank(own) >= max(rank(h) for h in ready):
        return None
    if ready:
        best = max(ready, key=rank)
        return None if best.name == here else best.name
    return max(eligible, key=lambda h: h.slots.free_cores if h.slots else 0).name
