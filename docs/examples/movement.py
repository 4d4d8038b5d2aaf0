"""Movement: dispatch, clone and retract a paglet between two hosts, and a refused move."""

import asyncio
import tempfile

from paglets import AsyncHostClient, Host, TransferError, TransferTicket


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir) as alpha,
            Host(name="beta", state_dir=state_dir, peers=(alpha.url,)) as beta,
            AsyncHostClient(alpha.url) as client,
        ):
            # beta joined through alpha, so both know each other from here on
            traveler = await client.create("examples.travel:Traveler")
            await traveler.send("increment")

            await traveler.dispatch("beta")  # the proxy follows the paglet
            print("after dispatch it runs on", await traveler.send("where"))
            print("its count came along:", await traveler.send("increment"))

            copy = await traveler.clone("alpha")  # a new identity; the original stays
            print("the copy runs on", await copy.send("where"))

            await client.retract(traveler)  # pull it back to alpha
            print("after retract it runs on", await traveler.send("where"))
            for line in await traveler.send("log"):
                print("  hook:", line)

            try:
                await traveler.dispatch("beta", TransferTicket(tags=("gpu",)))
            except TransferError as exc:
                print("refused:", exc)
            print("still on", await traveler.send("where"))
            print("paglets on beta:", len(beta.supervisor.list()))


if __name__ == "__main__":
    asyncio.run(main())
