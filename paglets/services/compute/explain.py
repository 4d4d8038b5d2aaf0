"""Words for the scheduler's answers: sizes, the infeasible refusal, ``why``'s host lines.

Pure functions of the figures, shared by the scheduler service (the refusal
at submit) and ``paglets-compute-slots`` (``why``, tables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paglets.services.compute.slots import Reason

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from paglets.services.compute.contract import HostSlots, JobInfo


def size(value: float) -> str:
    """Bytes as people read them: ``512M``, ``12.0G``, ``64G``."""
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= scale:
            shown = value / scale
            return f"{shown:.0f}{unit}" if shown == int(shown) else f"{shown:.1f}{unit}"
    return f"{value:.0f}"


def request_line(cores: int, ram: int, tmp: int, max_load: float | None = None) -> str:
    """``cpu=8 ram=24G tmp=50G`` (and the load gate, when given)."""
    line = f"cpu={cores} ram={size(ram)} tmp={size(tmp)}"
    return line if max_load is None else f"{line} load/cpu<={max_load:.2f}"


def infeasible(cores: int, ram: int, tmp: int, hosts: Sequence[HostSlots]) -> str:
    """The refusal of a request no host can ever run, naming the largest host.

    e.g. ``Infeasible: no host has ram>=96G (largest: ada 64G)``.
    """
    asked = {"cpu": cores, "ram": ram, "tmp": tmp}
    totals = {h.host: {"cpu": h.cores, "ram": h.ram, "tmp": h.tmp} for h in hosts}
    short = [k for k, v in asked.items() if all(t[k] < v for t in totals.values())] or [
        k for k, v in asked.items() if v > 0
    ]
    shown: dict[str, Callable[[int], str]] = {"cpu": str, "ram": size, "tmp": size}
    wanted = ", ".join(f"{k}>={shown[k](asked[k])}" for k in short)
    first = short[0]
    largest = max(totals, key=lambda h: totals[h][first], default=None)
    if largest is None:
        return f"Infeasible: no host has {wanted} (no host serves compute slots)"
    have = " ".join(shown[k](totals[largest][k]) for k in short)
    return f"Infeasible: no host has {wanted} (largest: {largest} {have})"


def blockers(job: JobInfo, host: HostSlots) -> tuple[list[str], bool]:
    """What keeps ``job`` from starting on ``host`` now, and whether it never could."""
    found: list[str] = []
    never: list[str] = []
    figures = (
        ("cpu", job.cores, host.free_cores, host.cores, str),
        ("ram", job.ram, host.free_ram, host.ram, size),
        ("tmp", job.tmp, host.free_tmp, host.tmp, size),
    )
    for name, asked, free, total, shown in figures:
        if asked > total:
            never.append(f"{name} total {shown(total)}")
        if asked > free:
            if name == "cpu":
                found.append(f"cpu {free}/{total} free < {asked}")
            else:
                found.append(f"{name} {shown(free)} free < {shown(asked)}")
    if host.load_per_cpu > host.max_load_per_cpu:
        found.append(
            f"load/cpu {host.load_per_cpu:.2f} > {host.max_load_per_cpu:.2f} ({Reason.LOAD_GATE})"
        )
    line = "; ".join(found)
    if never:
        line += f"  [never: {', '.join(never)}]"
    return ([line] if line else []), bool(never)


def host_lines(
    job: JobInfo, hosts: Sequence[HostSlots], lost: Sequence[str] = ()
) -> tuple[int, list[str]]:
    """``why``'s second step: how many hosts could start ``job`` now, and a line per host.

    Hosts in ``lost`` are offline: ``HostLost``.
    """
    width = max((len(h.host) for h in hosts), default=4)
    width = max([width, *(len(name) for name in lost)])
    lines: list[str] = []
    can = 0
    for host in hosts:
        found, _never = blockers(job, host)
        if found:
            lines.append(f"  {host.host:<{width}}  {found[0]}")
        else:
            can += 1
            lines.append(f"  {host.host:<{width}}  can start it now")
    lines.extend(f"  {name:<{width}}  offline ({Reason.HOST_LOST})" for name in lost)
    return can, lines
