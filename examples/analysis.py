"""An analysis job: hashes data for about ``target_runtime`` seconds (``paglets-analysis-jobs``)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from paglets.services.compute.job import ComputeJob, ComputeJobState

MAX_RUNTIME = 3600.0


@dataclass
class AnalysisState(ComputeJobState):
    task: int = 0
    target_runtime: float = 3.0


class Analysis(ComputeJob[AnalysisState]):
    """Hashes a block over and over until its target runtime is reached; reports progress."""

    State = AnalysisState

    def compute(self) -> dict[str, object]:
        runtime = min(MAX_RUNTIME, max(0.0, self.state.target_runtime))
        digest = hashlib.sha256(str(self.state.task).encode()).digest()
        block = digest * 4096
        rounds = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < runtime:
            digest = hashlib.sha256(block + digest).digest()
            rounds += 1
            self.progress(elapsed / runtime if runtime else 1.0, f"{rounds} rounds")
        return {"task": self.state.task, "rounds": rounds, "digest": digest.hex()[:16]}
