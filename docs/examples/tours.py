"""paglets-search and paglets-disk-survey on a three-host mesh."""

import asyncio
import json
import os
import re
import tempfile
from pathlib import Path

from paglets import Host


async def command(url: str, work: Path, *argv: str) -> str:
    """Run a command as a user would; what it printed, without run-to-run details."""
    print("$", " ".join(argv).replace(str(work), "$WORK"))
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "PAGLETS_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode().replace(str(work), "$WORK")
    return re.sub(r"(?m)  \d+\.\d\d(  |$)", r"  0.01\1", text)  # the SECONDS column


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)  # in the temp directory: a file root of every host by default
        (work / "logs").mkdir()
        for day in range(1, 4):
            lines = [f"2026-12-0{day} INFO ok", f"2026-12-0{day} ERROR disk {day} full"]
            (work / "logs" / f"app-{day}.log").write_text("\n".join(lines) + "\n")
        (work / "data" / "big").mkdir(parents=True)
        (work / "data" / "big" / "blob.bin").write_bytes(bytes(1 << 20))
        async with (
            Host(name="alpha", state_dir=state_dir) as alpha,
            Host(name="beta", state_dir=state_dir, peers=(alpha.url,)),
            Host(name="gamma", state_dir=state_dir, peers=(alpha.url,)),
        ):
            # one searcher visits alpha, beta and gamma, and comes home to alpha
            print(await command(alpha.url, work, "paglets-search", "grep", "ERROR", str(work)))
            find = ("paglets-search", "find", "app-*.log", str(work), "--hosts", "beta")
            print(await command(alpha.url, work, *find, "--max-per-host", "2"))

            survey = ("paglets-disk-survey", "--root", str(work), "--top", "2", "--json")
            found = json.loads(await command(alpha.url, work, *survey))
            for usage in found:  # the disk sizes differ from machine to machine
                largest = ", ".join(f"{d['path']} {d['bytes'] >> 20} MiB" for d in usage["largest"])
                print(f"  {usage['host']}: {usage['entries']} entries, largest: {largest}")


if __name__ == "__main__":
    asyncio.run(main())
