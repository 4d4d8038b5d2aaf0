"""The blocking client: HostClient, PagletProxy, futures, ReplySet and events.

A script usually talks to a running ``paglets-host``. To be self-contained, this
one first starts a host in a background thread (``BackgroundHost`` below), then
uses only blocking calls.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from typing import Self

from paglets import Host, HostClient, MessageNotHandledError, Priority, ReplySet


class BackgroundHost:
    """Runs an embedded host on an event loop in a thread of its own."""

    def __init__(self, **options: object) -> None:
        self._options = options
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self.url = ""

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            async with Host(**self._options) as host:
                self.url = host.url
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(60)
        if not self.url:
            self._thread.join()
            raise RuntimeError("the host did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as state_dir,
        BackgroundHost(
            name="scripted", state_dir=state_dir, allow_modules=("my_paglet",)
        ) as running,
        HostClient(running.url) as host,
    ):
        print("host:", host.host_info().name, host.health())

        # Synchronous, one-way and future delivery.
        counter = host.create("examples.counter:Counter", {"count": 10})
        print("send:", counter.send("increment", {"by": 5}))
        counter.send_oneway("increment")
        future = counter.send_future("get")
        print("future:", future.result(timeout=10))

        # Fan-in: one future per paglet, replies as they complete.
        counters = [host.create("examples.counter:Counter") for _ in range(3)]
        replies = ReplySet(c.send_future("increment", {"by": 2}) for c in counters)
        print("replies:", replies.results(timeout=10))

        # Priorities: higher first, FIFO within a priority. "hold" keeps the
        # guestbook busy until two messages wait, so both are queued together.
        book = host.create("my_paglet:Guestbook")
        hold = book.send_future("hold", {"count": 2}, priority=Priority.URGENT)
        low = book.send_future("sign", {"who": "low"}, priority=Priority.LOW)
        high = book.send_future("sign", {"who": "high"}, priority=Priority.HIGH)
        print("hold:", hold.result(10), "high:", high.result(10), "low:", low.result(10))

        # Errors come back typed.
        try:
            counter.send("reset")
        except MessageNotHandledError as exc:
            print("not handled:", exc)

        # A reference can be stored or sent, and turned back into a proxy.
        ref = counter.ref
        again = HostClient(ref.host_url)
        with again:
            print("by ref:", again.proxy(ref.agent_id).send("get"))

        for proxy in [counter, book, *counters]:
            proxy.dispose()

        events, cursor = host.events()
        print(f"{len(events)} events up to cursor {cursor}:")
        for event in events:
            print(f"  {event.cursor:3} {event.kind.value:<16} {event.detail}")


if __name__ == "__main__":
    main()
