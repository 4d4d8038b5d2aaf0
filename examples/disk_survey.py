"""A disk surveyor: visits hosts and notes their disk space and largest directories.

The paglet of ``paglets-disk-survey`` (docs/examples.md). It follows a `Tour`
over the hosts; on each it reads the size, use and free space of the disk that
holds a root directory, then walks the tree under that root (bounded in entries
and time, following no symlink) adding up the disk space of each directory down
to ``depth`` levels, and keeps the ``top`` largest. The root is ``root`` if
given (inside the host's file roots), else the host's first file root, its temp
directory. Ask ``result`` once ``done``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from examples.tour import TimeLimitError, Tour, TourState, time_limit
from paglets.core.errors import RequestError
from paglets.persistence.paths import in_roots

if TYPE_CHECKING:
    from pathlib import Path

    from paglets import ItineraryStop, Message

BOUNDS = {"top": 100, "depth": 16, "max_entries": 10_000_000, "time_limit": 300.0}
"""The largest value of each bound a caller may ask for."""


@dataclass
class DirSize:
    path: str
    bytes: int


@dataclass
class Usage:
    """What the surveyor found on one host."""

    host: str
    root: str = ""
    total: int = 0  # bytes of the disk that holds the root
    used: int = 0
    free: int = 0  # bytes free for an unprivileged user
    under_root: int = 0  # disk space of the files walked under the root
    entries: int = 0  # files and directories walked
    largest: list[DirSize] = field(default_factory=list)
    truncated: str = ""  # which bound cut the walk short, if one did
    error: str = ""
    seconds: float = 0.0


@dataclass
class SurveyState(TourState):
    root: str = ""  # empty: each host's temp directory
    top: int = 5
    depth: int = 2
    max_entries: int = 100_000
    time_limit: float = 10.0
    found: list[Usage] = field(default_factory=list)


def disk_space(stat: os.stat_result) -> int:
    """Bytes a file takes on disk (its blocks), as ``du`` counts them."""
    return getattr(stat, "st_blocks", 0) * 512 or stat.st_size


class Surveyor(Tour[SurveyState]):
    """See the module docstring."""

    State = SurveyState

    def visit(self, stop: ItineraryStop) -> None:
        del stop
        usage = Usage(self.context.host_name)
        self.state.found.append(usage)
        started = time.monotonic()
        try:
            self.check_bounds()
            root = self.context.file_roots[0]  # the temp directory
            if self.state.root:
                root = in_roots(
                    self.state.root, self.context.file_roots, owner=f"host {usage.host}"
                )
            usage.root = str(root)
            disk = shutil.disk_usage(root)
            usage.total, usage.used, usage.free = disk.total, disk.used, disk.free
            with time_limit(self.state.time_limit):
                self.walk(root, usage, started + self.state.time_limit)
        except TimeLimitError:
            usage.truncated = f"time limit ({self.state.time_limit:g} s)"
        except (OSError, RequestError) as exc:
            usage.error = str(exc)
        usage.seconds = round(time.monotonic() - started, 3)

    def check_bounds(self) -> None:
        """Refuse a bound out of its range (`BOUNDS`).

        Raises:
            RequestError: which one, and its range.
        """
        for name, largest in BOUNDS.items():
            if not 0 < getattr(self.state, name) <= largest:
                raise RequestError(f"{name} must be above 0 and at most {largest:g}")

    def unreachable(self, stop: ItineraryStop, why: str) -> None:
        self.state.found.append(Usage(stop.host, error=f"not reached: {why}"))

    def walk(self, root: Path, usage: Usage, deadline: float) -> None:
        """Add up the disk space under ``root`` by directory, within the bounds."""
        sizes: Counter[str] = Counter()
        try:
            for here, dirs, files in os.walk(root, followlinks=False):
                parts = PurePath(os.path.relpath(here, root)).parts[: self.state.depth]
                for name in files:
                    if usage.entries >= self.state.max_entries:
                        usage.truncated = f"entry limit ({self.state.max_entries})"
                        return
                    if time.monotonic() > deadline:
                        raise TimeLimitError
                    usage.entries += 1
                    try:
                        size = disk_space(os.lstat(os.path.join(here, name)))  # noqa: PTH118
                    except OSError:
                        continue  # gone meanwhile
                    usage.under_root += size
                    for level in range(1, len(parts) + 1):
                        sizes["/".join(parts[:level])] += size
                usage.entries += len(dirs)
        finally:
            ranked = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
            usage.largest = [DirSize(p, n) for p, n in ranked[: self.state.top]]

    def handle_message(self, message: Message) -> Any:
        if message.kind == "result":
            return {
                "done": self.state.done,
                "host": self.context.host_name,
                "found": [dataclasses.asdict(u) for u in self.state.found],
            }
        return self.not_handled()
