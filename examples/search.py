"""A searcher: visits hosts and brings back matching lines or file names.

The paglet of ``paglets-search`` (docs/examples.md). It follows a `Tour` over
the hosts; on each it walks one directory tree, inside that host's file roots,
and notes what it found:

- ``grep``: lines that match a regular expression, as ``path:line: text``;
- ``find``: files and directories whose name matches a glob (``*.log``).

Everything is bounded: matches per host and in total, files looked at per
host, the length of a line, the size of the pattern, and the time spent on
each host (a timer that interrupts even a runaway regular expression). Symlinks
are not followed, so the walk stays in the tree it was given. Ask ``result``
once ``done``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from examples.tour import TimeLimitError, Tour, TourState, time_limit
from paglets.core.errors import RequestError
from paglets.persistence.paths import in_roots

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from paglets import ItineraryStop, Message

MAX_PATTERN = 512  # characters of a pattern
MAX_LINE = 4096  # characters of a line that are searched
SHOWN_LINE = 300  # characters of a matching line that are kept
BINARY_PROBE = 8192  # bytes looked at to skip a binary file, as grep does


@dataclass
class Found:
    """What the searcher found on one host."""

    host: str
    matches: list[str] = field(default_factory=list)
    files: int = 0  # files looked at
    truncated: str = ""  # which bound cut the search short, if one did
    error: str = ""
    seconds: float = 0.0


@dataclass
class SearchState(TourState):
    mode: str = "grep"  # or "find"
    pattern: str = ""
    path: str = ""
    per_host: int = 100
    total: int = 1000
    max_files: int = 10_000
    time_limit: float = 10.0
    found: list[Found] = field(default_factory=list)


def check_pattern(mode: str, pattern: str) -> None:
    """Refuse a pattern that is too long, or a ``grep`` pattern that does not compile.

    Raises:
        RequestError: what is wrong with it.
    """
    if mode not in ("grep", "find"):
        raise RequestError(f"mode must be 'grep' or 'find', not {mode!r}")
    if not pattern or len(pattern) > MAX_PATTERN:
        raise RequestError(f"the pattern must be 1 to {MAX_PATTERN} characters")
    if mode == "grep":
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RequestError(f"{pattern!r} is not a regular expression: {exc}") from None


BOUNDS = {"per_host": 10_000, "total": 100_000, "max_files": 1_000_000, "time_limit": 300.0}
"""The largest value of each bound a caller may ask for."""


def check_search(state: SearchState) -> None:
    """Refuse a search whose pattern or bounds are out of range.

    Raises:
        RequestError: which one, and its range.
    """
    check_pattern(state.mode, state.pattern)
    for name, largest in BOUNDS.items():
        value = getattr(state, name)
        if not 0 < value <= largest:
            raise RequestError(f"{name} must be above 0 and at most {largest:g}, not {value}")


def walk(top: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` of ``top`` in name order, following no symlink."""
    for here, dirs, files in os.walk(top, followlinks=False):
        dirs.sort()
        yield here, dirs, sorted(files)


class Searcher(Tour[SearchState]):
    """See the module docstring."""

    State = SearchState

    def visit(self, stop: ItineraryStop) -> None:
        found = Found(self.context.host_name)
        self.state.found.append(found)
        started = time.monotonic()
        try:
            check_search(self.state)
            top = in_roots(self.state.path, self.context.file_roots, owner=f"host {found.host}")
            with time_limit(self.state.time_limit):
                self.search(top, found, started + self.state.time_limit)
        except TimeLimitError:
            found.truncated = f"time limit ({self.state.time_limit:g} s)"
        except (OSError, RequestError) as exc:
            found.error = str(exc)
        found.seconds = round(time.monotonic() - started, 3)
        del stop

    def unreachable(self, stop: ItineraryStop, why: str) -> None:
        self.state.found.append(Found(stop.host, error=f"not reached: {why}"))

    def room(self) -> int:
        """How many more matches this host may add."""
        total = sum(len(f.matches) for f in self.state.found)
        return min(
            self.state.per_host - len(self.state.found[-1].matches), self.state.total - total
        )

    def search(self, top: Path, found: Found, deadline: float) -> None:
        """Walk ``top`` and note what matches in ``found``, within every bound."""
        if not top.is_dir():
            raise RequestError(f"{top} is not a directory on host {found.host}")
        regex = re.compile(self.state.pattern) if self.state.mode == "grep" else None
        for here, dirs, files in walk(top):
            names = files if regex is not None else dirs + files
            for name in names:
                if self.room() <= 0:
                    found.truncated = "match limit"
                    return
                if found.files >= self.state.max_files:
                    found.truncated = f"file limit ({self.state.max_files})"
                    return
                if time.monotonic() > deadline:  # where no timer can interrupt
                    raise TimeLimitError
                path = os.path.join(here, name)  # noqa: PTH118 - a string, on every file
                if regex is None:
                    found.files += 1
                    if fnmatch.fnmatchcase(name, self.state.pattern):
                        found.matches.append(path)
                elif not os.path.islink(path) and os.path.isfile(path):  # noqa: PTH113, PTH114
                    found.files += 1
                    self.grep(path, regex, found)

    def grep(self, path: str, regex: re.Pattern[str], found: Found) -> None:
        """Note the lines of the file ``path`` that match, as room allows."""
        try:
            with open(path, "rb") as file:  # noqa: PTH123 - a string path
                if b"\0" in file.read(BINARY_PROBE):
                    return  # binary
                file.seek(0)
                number = 0
                while raw := file.readline(MAX_LINE):
                    number += 1
                    tail = raw
                    while len(tail) == MAX_LINE and not tail.endswith(b"\n"):
                        tail = file.readline(MAX_LINE)  # the rest of a long line: not searched
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if regex.search(line):
                        found.matches.append(f"{path}:{number}: {line[:SHOWN_LINE]}")
                        if self.room() <= 0:
                            return
        except OSError:
            return  # unreadable: skipped, as grep -s does

    def handle_message(self, message: Message) -> Any:
        if message.kind == "result":
            return {
                "done": self.state.done,
                "host": self.context.host_name,
                "found": [dataclasses.asdict(f) for f in self.state.found],
            }
        return self.not_handled()
