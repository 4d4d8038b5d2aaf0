"""paglets-file-grabber on a two-host mesh: a dry run, a push, a refusal, a pull."""

import asyncio
import os
import re
import tempfile
from pathlib import Path

from paglets import Host


def shown(text: str, work: Path, state_dir: str) -> str:
    """``text`` without what changes from run to run: directories and timings."""
    for path, name in ((work, "$WORK"), (state_dir, "$STATE"), (tempfile.gettempdir(), "$TMPDIR")):
        text = text.replace(str(path), name)
    return re.sub(r"[\d.]+ s \([\d.]+ MiB/s\)", "0.1 s (... MiB/s)", text)


async def grab(url: str, work: Path, state_dir: str, *args: str) -> None:
    """Run paglets-file-grabber as a user would, and show what it printed."""
    print(shown(" ".join(["$ paglets-file-grabber", *args]), work, state_dir))
    process = await asyncio.create_subprocess_exec(
        "paglets-file-grabber",
        *args,
        cwd=work,
        env={**os.environ, "PAGLETS_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    print(shown(out.decode(), work, state_dir))


async def main() -> None:
    # $WORK is in the temp directory: a file root of every host by default
    with tempfile.TemporaryDirectory() as state_dir, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data.bin").write_bytes(b"paglets " * 4096)
        (work / "inbox").mkdir()
        async with (
            Host(name="alpha", state_dir=state_dir) as alpha,
            Host(name="beta", state_dir=state_dir, peers=(alpha.url,)),
        ):
            dest = str(work / "inbox" / "data.bin")
            push = ("push", "./data.bin", "--remote", "beta", "--dest")

            async def grabber(*args: str) -> None:
                await grab(alpha.url, work, state_dir, *args)

            await grabber(*push, dest, "--dry")  # says what would happen, changes nothing
            await grabber(*push, dest)  # alpha -> beta, sha256 verified on beta
            await grabber(*push, dest)  # refused: add --force to replace it
            await grabber(*push, "/etc/data.bin")  # refused by beta: not in its file roots
            await grabber("pull", dest, "--remote", "beta", "--dest", "back.bin")  # beta -> alpha
            same = (work / "back.bin").read_bytes() == (work / "data.bin").read_bytes()
            print("back.bin is data.bin:", same)


if __name__ == "__main__":
    asyncio.run(main())
