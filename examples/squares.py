"""A compute job: squares a number in a slot of one core (docs/compute-slots.md)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from paglets.services.compute.job import ComputeJob, ComputeJobState


@dataclass
class SquareState(ComputeJobState):
    n: int = 0


class Square(ComputeJob[SquareState]):
    """Squares ``state.n``; reports its progress and the threads it was given."""

    State = SquareState

    def compute(self) -> dict[str, int | str]:
        self.progress(0.5, "squaring")
        return {"square": self.state.n * self.state.n, "threads": os.environ["OMP_NUM_THREADS"]}


@dataclass
class PauseState(ComputeJobState):
    seconds: float = 1.0


class Pause(ComputeJob[PauseState]):
    """Holds its slot for ``state.seconds`` (at most a minute), doing nothing."""

    State = PauseState

    def compute(self) -> float:
        seconds = min(60.0, max(0.0, self.state.seconds))
        time.sleep(seconds)
        return seconds
