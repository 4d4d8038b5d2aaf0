"""Durability: deactivate a paglet, wake it with a message, and survive a host restart."""

import asyncio
import tempfile

from paglets import AsyncHostClient, Host, PagletInactiveError


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="keeper", state_dir=state_dir) as host,
            AsyncHostClient(host.url) as client,
        ):
            traveler = await client.create("examples.travel:Traveler")
            await traveler.send("increment")
            await traveler.deactivate()  # written to disk; its process stops
            print("status:", (await traveler.info()).status)
            try:
                await traveler.send("increment", no_delay=True)
            except PagletInactiveError as exc:
                print("no_delay:", type(exc).__name__)
            print("a message wakes it:", await traveler.send("increment"))
            agent_id = traveler.agent_id
        # the host stopped: its active paglets wrote their checkpoints first

        async with (
            Host(name="keeper", state_dir=state_dir) as host,
            AsyncHostClient(host.url) as client,
        ):
            traveler = client.proxy(agent_id)
            print("after the restart:", (await traveler.info()).status)
            print("its count:", await traveler.send("increment"))
            print("hooks:", ", ".join(await traveler.send("log")))


if __name__ == "__main__":
    asyncio.run(main())
