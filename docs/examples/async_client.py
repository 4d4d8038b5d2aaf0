"""The async client: AsyncHostClient, futures, AsyncReplySet and streamed events."""

import asyncio
import contextlib
import tempfile

from paglets import AsyncHostClient, AsyncReplySet, EventKind, Host, PagletRef


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="async", state_dir=state_dir) as host,
            AsyncHostClient(host.url) as client,
        ):
            # Create several paglets at once; each gets its own process.
            counters = await asyncio.gather(
                *(client.create("examples.counter:Counter", {"count": n}) for n in range(4))
            )

            # send_future returns once the message is queued; the reply comes later.
            replies = AsyncReplySet()
            for counter in counters:
                replies.add(await counter.send_future("increment", {"by": 10}))
            print("gathered:", await replies.gather(timeout=10))
            async for future, reply in replies.as_completed(timeout=10):
                print("completed:", future.message_id[:8], reply)

            # A PagletRef is plain data: store it in state, send it in a message.
            ref_data = counters[0].ref.to_dict()
            again = client.proxy(PagletRef.from_dict(ref_data).agent_id)
            print("via ref:", await again.send("get"), "info:", (await again.info()).status)

            for counter in counters:
                await counter.dispose()

            # Events: query by cursor, or follow them as they are logged.
            events, cursor = await client.events(agent_id=counters[0].agent_id)
            print("first paglet:", [e.kind.value for e in events], "cursor", cursor)
            seen = 0
            async with contextlib.aclosing(client.follow_events()) as stream:
                async for event in stream:
                    if event.kind is EventKind.PAGLET_DISPOSED:
                        seen += 1
                        if seen == len(counters):
                            break
            print("all", seen, "disposals seen")


if __name__ == "__main__":
    asyncio.run(main())
