"""What the zygote runs once so that no forked child pays for it, and what a child runs early.

A forked child shares the zygote's memory, so a cache the zygote fills is
filled for every child. The first envelope a process reads, and the first
state of a class it decodes, cost it lazy work (type hints resolved from
annotation strings, codec set-up) of a few milliseconds; every arriving
paglet used to pay that on its start. `warm_runtime` writes and reads back
one small envelope; `warm_module` resolves the state types of the paglet
classes a module defines. Neither runs code of a paglet class.

A forked child still pays for the memory it writes: each page of the
zygote's that it first writes (a reference count, an interpreter cache) is
copied, a page fault of 2 to 5 µs on a VM. `prime_child`, run by a child
waiting in the host's warm pool, reads the zygote's sample envelope once, and
passes one record of each kind a paglet's first moments use (``Init``,
``Ready``, a message, a reply, a call) through the frame codec, so that the
pages an arriving paglet's unpacking and first exchanges write are mostly
copied before the paglet is there.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paglets.core.paglet import Paglet
from paglets.core.state import PagletState
from paglets.runtime import ipc
from paglets.runtime.frames import FrameDecoder, encode_json
from paglets.wire.envelope import EnvelopeSpec
from paglets.wire.envelope_read import EnvelopeReader
from paglets.wire.envelope_write import write_envelope
from paglets.wire.state_json import prepare, state_to_json

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["freeze_heap", "freeze_imports", "prime_child", "warm_module", "warm_runtime"]

# The sample envelope, in memory (a memfd) that forked children inherit.
_sample_fd: int | None = None


@dataclass
class _Leaf:
    name: str = "leaf"
    args: dict[str, Any] = field(default_factory=lambda: {"k": 1, "on": True})


@dataclass
class _Sample(PagletState):
    """A state that takes the codec through the shapes paglet states commonly have."""

    note: str = "warm"
    seen: list[str] = field(default_factory=lambda: ["a", "b"])
    blob: bytes = b"\0" * 2048  # over the out-of-band size: blobs are read too
    count: int = 1
    ratio: float = 0.5
    leaves: list[_Leaf] = field(default_factory=lambda: [_Leaf(), _Leaf("other")])
    best: _Leaf | None = field(default_factory=_Leaf)
    table: dict[str, int] = field(default_factory=lambda: {"x": 1})


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
    global _sample_fd  # noqa: PLW0603 - one per process, inherited by forked children
    with tempfile.TemporaryDirectory(prefix="paglets-warm-") as tmp:
        path = Path(tmp) / "sample.env"
        write_envelope(path, spec, _Sample(), sync=False)
        with EnvelopeReader(path) as reader:
            reader.state(_Sample)
        if _sample_fd is None and hasattr(os, "memfd_create"):
            fd = os.memfd_create("paglets-sample-envelope")
            with open(fd, "wb", closefd=False) as memory:
                memory.write(path.read_bytes())
            _sample_fd = fd


def prime_child(*, read: bool = True) -> None:
    """In a forked child: read the zygote's sample envelope and records (if ``read``).

    Returns at once where there is none (not forked from a warmed zygote, or a
    platform without ``memfd_create``). The paglet never sees the descriptor:
    a child with no time to prime calls this with ``read=False``.
    """
    global _sample_fd  # see warm_runtime
    fd, _sample_fd = _sample_fd, None
    if fd is None:
        return
    try:
        if not read:
            return
        with EnvelopeReader(Path(f"/proc/self/fd/{fd}")) as reader:
            state = reader.state(_Sample)
        # and what writing one does before the file: an id, the state, the header
        blobs: list[memoryview] = []
        uuid.uuid4()
        json.dumps([state_to_json(state, blobs), reader.header.to_dict()])
        for blob in blobs:
            blob.release()
        _prime_records()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _prime_records() -> None:
    """Each record a paglet's first moments read or write, through the frame codec once."""
    sample: list[ipc.Record] = [
        ipc.Init("0" * 32, f"{__name__}:_Sample", None, "h", "http://127.0.0.1:1", "/", [], 1.0),
        ipc.Ready(os.getpid(), {"policy": "never"}, None),
        ipc.Deliver(1, "kind", {"k": [1, "v"]}, 0, "0" * 32, None),
        ipc.Reply(1, {"v": [1.5, None]}),
        ipc.Call(1, "method", {"k": "v"}),
        ipc.CallResult(1, {"agent_id": "0" * 32}),
    ]
    decoder = FrameDecoder()
    for record in sample:
        for frame in decoder.feed(encode_json(record.to_wire())):
            if isinstance(frame, dict):
                ipc.decode(frame)


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


def freeze_imports() -> None:
    """In a daemon whose modules are imported: freeze them, without a collection.

    What importing leaves is module state that lives as long as the process: a
    full collection right after ``paglets.host`` is imported finds no garbage,
    and takes 20 to 40 ms of a start. Frozen as it is, it is left out of
    `freeze_heap`'s collection when the host is ready, which then walks only
    what the start made (about a millisecond). Only for a process that is one
    host, as `freeze_heap`.
    """
    gc.freeze()


def freeze_heap() -> None:
    """In a daemon that has started: collect once, then freeze what is left.

    Everything alive once a host serves (modules, the app, its tables) lives as
    long as the process, yet each full collection walked all of it: 13 to 24 ms
    of a ``paglets-host`` on this kind of machine, stalling whatever move or
    message was under way (the first hop after a start above all). Frozen
    objects are left out of every later collection. Only for a process that is
    one host: objects frozen here are never collected, even as garbage cycles.
    Turns the collector back on: ``paglets-host`` turns it off as it starts (a
    start makes what lives as long as the process, no garbage worth the hundred
    collections its imports went through, 3 % of its instructions).
    """
    gc.collect()
    gc.freeze()
    gc.enable()
