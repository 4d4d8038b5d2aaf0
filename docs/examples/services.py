"""Resident services: declare one, call it with typed requests, see it advertised."""

import asyncio
import tempfile

from examples.greeter import GREETER, GreetRequest
from paglets import AsyncHostClient, Host, RequestError
from paglets.launch.model import ServiceEntry

GREETER_ENTRY = ServiceEntry(
    name="greeter",
    class_path="examples.greeter:Greeter",
    contract="greeter.v1",
    state={"greeting": "hi"},
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir, services=[GREETER_ENTRY]) as host,
            AsyncHostClient(host.url) as client,
        ):
            (info,) = await client.services()
            print("before the first call:", info.contract, info.status)
            greeter = client.service(GREETER)
            reply = await greeter.greet(GreetRequest("ana"))
            print("reply:", reply)
            (info,) = await client.services()
            print("after it:", info.contract, info.status)
            try:
                await greeter.greet({"name": "bob"})
            except RequestError as exc:
                print("a dict is no request:", exc)


if __name__ == "__main__":
    asyncio.run(main())
