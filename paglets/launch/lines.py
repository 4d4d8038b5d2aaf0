"""Where each key of a TOML file is written, since `tomllib` gives no line numbers.

A small scan of the text: table headers (``[limits]``, ``[[paglets]]``, whose
entries are counted) and ``key = value`` lines outside multi-line strings and
arrays. It serves error messages only, so a path it cannot place falls back to
its nearest known parent, then to line 1.
"""

from __future__ import annotations

import re
from typing import Final

Path = tuple[str | int, ...]

_HEADER: Final = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY: Final = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_PART: Final = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


def _scan(value: str, depth: int, quote: str) -> tuple[int, str]:
    """Bracket depth and open multi-line string after ``value``, from ``depth`` and ``quote``."""
    i = 0
    while i < len(value):
        if quote:
            if value.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
            if value[i] == "\\" and quote[0] == '"':
                i += 1
        elif value.startswith(('"""', "'''"), i):
            quote = value[i : i + 3]
            i += 3
            continue
        elif value[i] in "\"'":
            quote = value[i]
        elif value[i] == "#":
            break
        elif value[i] in "[{":
            depth += 1
        elif value[i] in "]}":
            depth -= 1
        i += 1
    return depth, quote if len(quote) == len('"""') else ""  # a one-line string ends


class KeyLines:
    """The line of each table and key path in one TOML text."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        table: Path = ()
        counts: dict[Path, int] = {}
        depth, quote = 0, ""
        for number, line in enumerate(text.splitlines(), start=1):
            if quote or depth > 0:  # inside a multi-line array, table or string
                depth, quote = _scan(line, depth, quote)
                continue
            header = _HEADER.match(line)
            if header is not None:
                table = self._in_entries(_parts(header[2]), counts)
                if header[1] == "[[":
                    index = counts.get(table, -1) + 1
                    counts[table] = index
                    table = (*table, index)
                self._lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key is not None:
                self._lines.setdefault((*table, *_parts(key[1])), number)
                depth, quote = _scan(line[key.end() :], 0, "")

    @staticmethod
    def _in_entries(parts: tuple[str, ...], counts: dict[Path, int]) -> Path:
        """``[b.c]`` after ``[[b]]`` is a table of b's latest entry: ``("b", n, "c")``."""
        path: Path = ()
        for i, part in enumerate(parts):
            path = (*path, part)
            if i < len(parts) - 1 and path in counts:
                path = (*path, counts[path])
        return path

    def line(self, path: Path) -> int:
        """The line of ``path``, else of its nearest parent, else 1."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return 1
