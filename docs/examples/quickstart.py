"""Quickstart: embed a host, create paglets, message them, read state, dispose."""

import asyncio
import tempfile

from paglets import AsyncHostClient, Host


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        # my_paglet.py sits next to this script, so the host must allow that module.
        async with (
            Host(name="quickstart", state_dir=state_dir, allow_modules=("my_paglet",)) as host,
            AsyncHostClient(host.url) as client,
        ):
            print(f"host {host.name} listening on {host.url}")

            counter = await client.create("examples.counter:Counter")
            for by in (1, 2, 3):
                reply = await counter.send("increment", {"by": by})
                print("increment", by, "->", reply)
            print("counter state:", await counter.state())
            await counter.dispose()

            book = await client.create("my_paglet:Guestbook", {"title": "visitors"})
            await book.send("sign", {"who": "ada"})
            await book.send("sign", {"who": "alan"})
            print("tally:", await book.send("tally"))
            state = await book.state()
            print("guestbook:", state["title"], "created on", state["created_on"])
            await book.dispose()


if __name__ == "__main__":
    asyncio.run(main())
