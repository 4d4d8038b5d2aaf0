"""Classes shipped by value: what a create costs against an importable class, same run.

::

    uv run python bench/byvalue.py            # about half a minute
    uv run python bench/byvalue.py --quick    # reduced counts, a smoke test

A ``paglets-host`` process with ``--trust-code-by-value`` (and a key) serves
both kinds of create from this script: ``examples.counter:Counter`` by path
(the baseline), and the same paglet defined in this script's ``__main__``, sent
by value. The first by-value create pays the pickling and the upload; later
ones send only the class path with its hash. Prints a Markdown table on
stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation import MS, host_argv, machine, md_row, running

from paglets import AsyncHostClient, Message, Paglet, PagletState

COUNTER = "examples.counter:Counter"


@dataclass
class TallyState(PagletState):
    count: int = 0


class Tally(Paglet[TallyState]):
    """The counter of ``examples.counter``, written in ``__main__``: it goes by value."""

    State = TallyState

    def handle_message(self, message: Message) -> Any:  # noqa: ARG002 - any kind counts
        self.state.count += 1
        return {"count": self.state.count}


async def create_first_reply(client: AsyncHostClient, cls: str | type[Paglet[Any]]) -> float:
    """Seconds from a create to the first reply of the new paglet (it is disposed after)."""
    started = time.perf_counter()
    proxy = await client.create(cls)
    await proxy.send("increment")
    took = time.perf_counter() - started
    await proxy.dispose()
    return took


async def run(rounds: int) -> list[tuple[str, ...]]:
    key = secrets.token_urlsafe(24)
    os.environ["PAGLETS_API_KEY"] = key
    with tempfile.TemporaryDirectory() as tmp:
        argv = [*host_argv(Path(tmp), "byvalue", (), None), "--trust-code-by-value"]
        async with (
            running("byvalue", argv, Path(tmp)) as host,
            AsyncHostClient(host.url, key) as client,
        ):
            first = await create_first_reply(client, Tally)
            print("first by-value create done", file=sys.stderr)
            await create_first_reply(client, COUNTER)  # warm the path of the baseline
            by_path: list[float] = []
            by_value: list[float] = []
            for _ in range(rounds):  # alternated, so both meet the same machine
                by_path.append(await create_first_reply(client, COUNTER))
                by_value.append(await create_first_reply(client, Tally))
    path_ms = statistics.median(by_path) * MS
    value_ms = statistics.median(by_value) * MS
    return [
        ("create → first reply, importable class (baseline)", f"{path_ms:.2f} ms", "1.00x"),
        ("create → first reply, by value, later creates", f"{value_ms:.2f} ms",
         f"{value_ms / path_ms:.2f}x"),
        ("create → first reply, by value, the first (pickle + upload)", f"{first * MS:.2f} ms",
         f"{first * MS / path_ms:.2f}x"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced counts: a smoke test")
    args = parser.parse_args()
    rows = asyncio.run(run(10 if args.quick else 60))
    print(f"# Classes by value ({machine()})\n")
    print(md_row(("figure", "median", "ratio to the baseline")))
    print(md_row(("---", "---", "---")))
    for row in rows:
        print(md_row(row))


if __name__ == "__main__":
    main()
