"""A paglet's checkpoint file and the generation of its durable state.

Each paglet of a host has one checkpoint file (``<home>/paglets/<id>.env``). It
has one writer at a time: the paglet's process, which first keeps the envelope
it started from there (an arrival, or a move that did not happen; `keep`) and
then writes each checkpoint over it. The host never writes it while the process
runs, so an arrival kept as the first checkpoint can never land after a newer one.

Every durable state has a **generation**: an integer, monotonic per agent id on
its host. The host gives each start of a paglet a new one (`next_generation`);
the process numbers its checkpoints after it, in their headers (``meta``
`GENERATION`); the host's record of the paglet carries the generation it
describes, and an older one never replaces a newer one there. A generation is
never below the wall-clock time in nanoseconds at which it was made, so a file
left from an earlier run of the host is older than any state made since
(`written_after`).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from paglets.core.errors import EnvelopeError, StorageError
from paglets.persistence.files import storage_error
from paglets.wire.envelope_read import EnvelopeReader

if TYPE_CHECKING:
    from pathlib import Path

    from paglets.wire.envelope import EnvelopeHeader

GENERATION = "generation"
"""The key of a checkpoint header's ``meta`` that holds its generation."""


def next_generation(after: int = 0) -> int:
    """A generation newer than ``after``, and not below the clock (ns since the epoch)."""
    return max(after + 1, time.time_ns())


def generation_of(path: Path) -> int:
    """The generation written in the checkpoint at ``path``; 0 if none can be read.

    An envelope kept as it arrived carries none: it is older than any
    checkpoint written after it.
    """
    with contextlib.suppress(OSError, EnvelopeError), EnvelopeReader(path) as reader:
        return header_generation(reader.header)
    return 0


def header_generation(header: EnvelopeHeader) -> int:
    """The generation in a checkpoint's header; 0 for any other envelope."""
    value = header.meta.get(GENERATION) if header.kind == "checkpoint" else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def written_after(path: Path, when: float) -> bool:
    """Whether ``path`` holds a checkpoint made after ``when`` (epoch seconds)."""
    return generation_of(path) > int(when * 1_000_000_000)


def keep(envelope: Path, checkpoint: Path) -> None:
    """Make ``checkpoint`` the same file as ``envelope`` (a hard link), which stays.

    Where hard links are not supported the envelope is renamed instead; its
    owner then finds an interrupted arrival by its checkpoint. Nothing is
    flushed to disk here: the host does that once the paglet is up.

    Raises:
        StorageError: neither works (the disk is full, say); nothing changed.
    """
    temp = checkpoint.with_name(f"{checkpoint.name}.link")
    try:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        temp.unlink(missing_ok=True)
        try:
            temp.hardlink_to(envelope)
        except OSError:
            envelope.replace(checkpoint)
        else:
            temp.replace(checkpoint)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        error = storage_error(checkpoint, exc, "keep the envelope it started from as")
        raise StorageError(f"{error}; the envelope stays at {envelope}") from None
