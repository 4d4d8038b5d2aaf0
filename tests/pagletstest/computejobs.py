"""Job paglets for the compute-slot tests: they hold a slot until told, eat RAM or disk."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from paglets.services.compute.job import ComputeJob, ComputeJobState


@dataclass
class HoldState(ComputeJobState):
    until: str = ""  # runs until this file exists (at most 60 s)
    started: str = ""  # a directory: writes a file named after its job's name when it starts
    ram_fill: int = 0  # bytes to allocate once running
    tmp_fill: int = 0  # bytes to write to its work directory
    fail: str = ""  # raise this once running


class Hold(ComputeJob[HoldState]):
    """Holds its slot until a file exists; says when it started."""

    State = HoldState

    def compute(self) -> dict[str, object]:
        state = self.state
        if state.started:
            mark = Path(state.started, f"{state.name}.started")
            mark.with_suffix(".tmp").write_text(str(time.time()))
            mark.with_suffix(".tmp").replace(mark)  # whole, never seen half written
        ballast = bytearray(state.ram_fill) if state.ram_fill else b""
        for page in range(0, len(ballast), 4096):
            ballast[page] = 1
        if state.tmp_fill:
            (self.context.work_dir / "fill.bin").write_bytes(b"\0" * state.tmp_fill)
        if state.fail:
            raise RuntimeError(state.fail)
        deadline = time.monotonic() + 60
        while state.until and not Path(state.until).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
            self.progress(0.5, "holding")
        return {"threads": os.environ.get("OMP_NUM_THREADS"), "size": len(ballast)}
