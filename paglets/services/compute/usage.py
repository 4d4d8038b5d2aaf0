"""Sampling what a job uses: its process tree's RSS and CPU time, its temp bytes.

Blocking (psutil and a directory walk): the scheduler runs `sample` in a
thread of its own process, at least once a second while jobs run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import psutil

if TYPE_CHECKING:
    from pathlib import Path

MAX_ENTRIES: Final = 20_000
"""Directory entries counted per sample at most: a bound on the walk, not on the job."""


@dataclass(frozen=True, slots=True)
class Usage:
    """One sample of a job: bytes resident, CPU seconds, temp bytes on disk."""

    rss: int
    cpu_time: float
    tmp: int


def tree_usage(pid: int) -> tuple[int, float]:
    """RSS and CPU seconds (user + system) of ``pid`` and all its descendants.

    A process that ends during the walk is left out; a gone ``pid`` is (0, 0.0).
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0.0
    rss, cpu = 0, 0.0
    for process in processes:
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                times = process.cpu_times()
                cpu += times.user + times.system
        except psutil.Error:
            continue
    return rss, cpu


def dir_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (symlinks not followed; bounded walk)."""
    total, seen = 0, 0
    stack = [str(root)]
    while stack and seen < MAX_ENTRIES:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total


def sample(pid: int, tmp_dir: Path | None) -> Usage:
    """What the job of process ``pid`` with temp directory ``tmp_dir`` uses now."""
    rss, cpu = tree_usage(pid)
    return Usage(rss, cpu, 0 if tmp_dir is None else dir_bytes(tmp_dir))
