"""The names the host and the scheduler share: the contract's and the messages'.

Apart from `paglets.services.compute.contract` (and its records) so that a
host, which only needs the names to wire its `ComputeHooks`, does not build
the contract's record classes at every start.
"""

from __future__ import annotations

from typing import Final

CONTRACT_NAME: Final = "compute-slots.v1"
"""The name of the scheduler's contract (`COMPUTE_SLOTS`)."""

ENDED: Final = "compute.ended"
"""The message by which the host tells the scheduler that a job's process ended."""
