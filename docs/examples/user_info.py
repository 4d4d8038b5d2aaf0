"""user-info: a paglet reports to the person; the host keeps it; anyone with the key reads it."""

import asyncio
import tempfile

from paglets import AsyncHostClient, Host
from paglets.userinfo.contract import USER_INFO, NoticeQuery


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir) as host,
            AsyncHostClient(host.url) as client,
        ):
            reporter = await client.create("examples.reporter:Reporter")
            seq = await reporter.send("work", {"job": "build-42", "steps": 2})
            print("the paglet's notice is number", seq)
            found = await client.service(USER_INFO).list(NoticeQuery(job="build-42"))
            for notice in found.notices:
                what = notice.title if notice.kind == "notice" else f"[{notice.stream}]"
                print(notice.seq, notice.severity, what, "-", notice.message)
            errors = await client.service(USER_INFO).list(NoticeQuery(severity="error"))
            print("errors:", len(errors.notices))


if __name__ == "__main__":
    asyncio.run(main())
