"""A host reuses freed buffers: the bytes of an arriving envelope cost it no page faults.

glibc maps each buffer of 128 KiB or more afresh and unmaps it when freed, so a
host passing an envelope along in 256 KiB chunks touched new pages all the way:
a page fault for every 4 KiB it received (`paglets.runtime.osutil.keep_freed_memory`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paglets import HostClient

if TYPE_CHECKING:
    from tests.hostproc import Pair

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="page faults are read from Linux's /proc"
)

TRAVELER = "examples.travel:Traveler"
SIZE = 3 * 1024 * 1024
PAGES = SIZE // 4096


def _minor_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])  # the 10th field of the line, counted after "pid (comm)"


def _move(client: HostClient) -> None:
    traveler = client.create(TRAVELER)
    traveler.send("payload", {"size": SIZE})
    traveler.dispatch("dst")
    assert traveler.send("where") == "dst"
    traveler.dispose()


def test_an_arriving_envelope_costs_the_target_no_page_fault_per_page(pair: Pair) -> None:
    pair.start("src")
    pair.start("dst")
    target = pair.processes["dst"].pid
    with HostClient(pair.url("src"), api_key="") as client:
        deadline = time.monotonic() + 10
        while not all(h.online for h in client.hosts()) or len(client.hosts()) < 2:
            assert time.monotonic() < deadline, "the hosts did not meet"
            time.sleep(0.1)
        _move(client)  # the first one grows the heap; the next ones reuse it
        faults = []
        for _ in range(3):
            before = _minor_faults(target)
            _move(client)
            faults.append(_minor_faults(target) - before)
    # one fault per page of the envelope would be PAGES (768); allow some for the rest
    assert min(faults) < PAGES // 3, f"page faults of the target per {SIZE} B move: {faults}"
