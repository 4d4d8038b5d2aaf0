"""What the zygote runs once so that no forked child pays for it.

A forked child shares the zygote's memory, so a cache the zygote fills is
filled for every child. The first envelope a process reads, and the first
state of a class it decodes, cost it lazy work (type hints resolved from
annotation strings, codec set-up) of a few milliseconds; every arriving
paglet used to pay that on its start. `warm_runtime` writes and reads back
one small envelope; `warm_module` resolves the state types of the paglet
classes a module defines. Neither runs code of a paglet class.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from paglets.core.paglet import Paglet
from paglets.core.state import PagletState
from paglets.wire.envelope import EnvelopeReader, EnvelopeSpec, write_envelope
from paglets.wire.state_json import prepare

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["warm_module", "warm_runtime"]


@dataclass
class _Sample(PagletState):
    note: str = "warm"
    seen: list[str] = field(default_factory=lambda: ["a", "b"])
    blob: bytes = b"\0" * 2048  # over the out-of-band size: blobs are read too


def warm_runtime() -> None:
    """Write one small envelope into a temporary directory and read it back."""
    spec = EnvelopeSpec(
        agent_id="0" * 32,
        class_path=f"{__name__}:_Sample",
        state_class_path=f"{__name__}:_Sample",
        transfer_id="0" * 32,
        kind="dispatch",
        hops=1,
        origin="zygote",
        origin_url="http://127.0.0.1:1",
        source="zygote",
        created=time.time(),
    )
    with tempfile.TemporaryDirectory(prefix="paglets-warm-") as tmp:
        path = Path(tmp) / "sample.env"
        write_envelope(path, spec, _Sample(), sync=False)
        with EnvelopeReader(path) as reader:
            reader.state(_Sample)


def warm_module(module: ModuleType) -> None:
    """Resolve the state types of every paglet class ``module`` defines."""
    for value in list(vars(module).values()):
        if (
            isinstance(value, type)
            and issubclass(value, Paglet)
            and value.__module__ == module.__name__
        ):
            state = getattr(value, "State", None)
            if isinstance(state, type):
                prepare(state)
