"""Built-in services: server-info on another host, and picking hosts by their resources."""

import asyncio
import os
import tempfile

from paglets import AsyncHostClient, Host
from paglets.builtins.serverinfo import SERVER_INFO, DfRequest, LoadRequest
from paglets.launch.model import ServiceEntry
from paglets.wire.targets import TargetQuery

# What the bundled launch.toml declares on every paglets-host.
SERVER_INFO_ENTRY = ServiceEntry(
    name="server-info",
    class_path="paglets.builtins.serverinfo:ServerInfo",
    contract="server-info.v1",
)
FAST = {"gossip_interval": 0.2, "offline_after": 2.0, "services": [SERVER_INFO_ENTRY]}


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir, **FAST) as alpha,
            Host(name="beta", state_dir=state_dir, peers=[alpha.url], tags=["gpu"], **FAST),
            AsyncHostClient(alpha.url) as client,
        ):
            for _ in range(300):  # until alpha has beta's resources: a gossip round or two
                hosts = await client.hosts()
                if len(hosts) == 2 and all(h.resources for h in hosts):  # noqa: PLR2004
                    break
                await asyncio.sleep(0.1)

            # server-info: ask beta, through alpha
            server_info = client.service(SERVER_INFO, where="beta")
            load = await server_info.load(LoadRequest())
            print("beta answered:", load.host, "with", type(load.memory).__name__)
            print("its CPUs are this machine's:", load.cpu_count == os.cpu_count())
            disks = (await server_info.df(DfRequest())).disks
            print("it has a root file system:", any(d.mount == "/" for d in disks))

            # mesh-info: alpha's snapshot of every host, and hosts picked by it
            beta = (await client.hosts())[1]
            print("alpha knows beta's memory:", beta.resources.memory_total > 0)
            gpu = await client.targets(TargetQuery(tags=("gpu",), min_free_memory=1 << 20))
            print("targets with a gpu:", [t.name for t in gpu])

            # a paglet picks by the same selection: self.context.targets(...)
            placer = await client.create(
                "examples.placement:Placer", {"needs_tag": "gpu", "min_free_memory": 1 << 20}
            )
            print("the placer on alpha picks:", await placer.send("pick"))


if __name__ == "__main__":
    asyncio.run(main())
