"""paglets-mesh-benchmark on a three-host mesh (times differ from run to run: shown as ...)."""

import asyncio
import os
import re
import tempfile

from paglets import Host


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir) as alpha,
            Host(name="beta", state_dir=state_dir, peers=(alpha.url,)),
            Host(name="gamma", state_dir=state_dir, peers=(alpha.url,)),
        ):
            argv = ("paglets-mesh-benchmark", "--payload-size", "64K", "--repeats", "2")
            print("$", " ".join(argv))
            process = await asyncio.create_subprocess_exec(
                *argv,
                env={**os.environ, "PAGLETS_URL": alpha.url},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await process.communicate()
            matrices, _, clocks = re.sub(r"\d+\.\d+", "...", out.decode()).partition("Clocks")
            print(matrices + "Clocks" + clocks.splitlines()[0])
            for line in clocks.splitlines()[1:]:
                table_row = line.startswith("  ")  # its widths change with the numbers
                print(f"  {line.split()[0]}  ..." if table_row else line)


if __name__ == "__main__":
    asyncio.run(main())
