"""Compute slots: three one-core jobs on a two-core host; the third waits its turn."""

import asyncio
import tempfile

from paglets import AsyncHostClient, Host
from paglets.launch.model import ComputeSection, ServiceEntry
from paglets.services.compute.contract import COMPUTE_SLOTS, JobsRequest, StatusRequest

SLOTS = ServiceEntry(
    name="compute-slots",
    class_path="paglets.services.compute.service:ComputeSlots",
    contract="compute-slots.v1",
)
LIMITS = ComputeSection(cores=2, ram=1 << 30, tmp=10 << 30, max_load_per_cpu=1000.0)


async def result(job) -> dict:
    while True:
        answer = await job.send("compute.result")
        if answer["phase"] in ("done", "failed"):
            return answer
        await asyncio.sleep(0.05)


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir, services=[SLOTS], compute=LIMITS) as host,
            AsyncHostClient(host.url) as client,
        ):
            jobs = [
                await client.create(
                    "examples.squares:Square",
                    {"n": n, "cores": 1, "ram": 64 << 20, "submitter": "ana"},
                )
                for n in (3, 4, 5)
            ]
            for job in jobs:
                answer = await result(job)
                print(answer["phase"], answer["result"])
            slots = client.service(COMPUTE_SLOTS)
            status = await slots.status(StatusRequest())
            print(f"free cores {status.free_cores}/{status.cores}, {status.running} running")
            history = await slots.jobs(JobsRequest("history"))
            print("history:", sorted(j.status for j in history.jobs))


if __name__ == "__main__":
    asyncio.run(main())
