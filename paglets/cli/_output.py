"""What every command prints: tables, JSON, progress and ``--help`` examples.

rich is imported when something is printed, never at import: ``--help`` stays
fast, and nothing a paglet's process imports ever loads it. To a terminal,
tables have bold headers and fit its width; to a pipe or a file they are plain
text at their natural width with no trailing spaces, so scripts can split them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import TYPE_CHECKING, Any, Protocol

import click

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from rich.console import Console

PIPE_WIDTH = 10_000  # columns when not a terminal: a row is never wrapped


def _console(file: Any, terminal: bool) -> Console:
    from rich.console import Console  # noqa: PLC0415 - rich only when printing

    if terminal:
        return Console(file=file, highlight=False)
    return Console(file=file, width=PIPE_WIDTH, no_color=True, highlight=False)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, indent: int = 0) -> None:
    """Print ``rows`` under ``headers`` as columns to stdout, ``indent`` spaces in.

    Cells are text, never rich markup: a ``[host]`` in a message stays as it is.
    """
    from rich.markup import escape  # noqa: PLC0415
    from rich.padding import Padding  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    if sys.stdout.isatty():
        _console(sys.stdout, terminal=True).print(Padding(table, (0, 0, 0, indent)))
        return
    buffer = io.StringIO()
    _console(buffer, terminal=False).print(table)
    lines = buffer.getvalue().splitlines()
    click.echo("\n".join((" " * indent + line).rstrip() for line in lines))


def examples(*lines: str) -> str:
    """An ``Examples:`` epilog for ``--help``, kept as written (click rewraps text)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (what ``--json`` prints)."""
    click.echo(json.dumps(data, indent=2))


class Advance(Protocol):
    """Moves a progress bar on by ``steps`` (1 by default)."""

    def __call__(self, steps: float = 1) -> None: ...


def _no_progress(steps: float = 1) -> None:
    del steps  # nothing is drawn


@contextlib.contextmanager
def progress(description: str, total: float | None) -> Iterator[Advance]:
    """A progress bar on stderr while the block runs, if stderr is a terminal.

    Yields a function that moves it on. ``total`` ``None`` shows a spinner. To a
    pipe or a file nothing is drawn, so logs stay clean.
    """
    if not sys.stderr.isatty():
        yield _no_progress
        return
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = _console(sys.stderr, terminal=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
    with Progress(
        *columns, MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda steps=1: bar.advance(task, steps)
