"""``NoticeLog``: the bounded, durable-enough history of one host's notices.

Bounds (per host): the last `MAX_COUNT` notices and at most `MAX_BYTES` of
them (their JSON form); the oldest go first. Each notice is appended as one
JSON line to ``<home>/user-info/notices.jsonl`` as it arrives (written to the
operating system, not fsynced: a crash of the host keeps it, a power cut may
lose the last ones); the file is rewritten from memory when it grows past
twice the bound, so the disk holds at most about ``2 * MAX_BYTES``. At start
the host reads it back (a torn or malformed last line is skipped), so the
history survives a restart and ``seq`` keeps rising.

`wait` is what ``follow`` long-polls on: it returns once a notice after a
given one exists, or after a bounded wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import ProtocolError
from paglets.userinfo.model import Notice, NoticeKind, Severity

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

log = logging.getLogger("paglets.userinfo")

MAX_COUNT: Final = 10_000
"""Notices a host keeps."""
MAX_BYTES: Final = 4 << 20
"""Bytes of notices (as JSON lines) a host keeps."""


class NoticeLog:
    """See the module docstring.

    Args:
        path: the journal file (its directory is made on `open`).
        host: the host's name, stamped on each notice.
        max_count: notices kept; max_bytes: their bytes kept.
        clock: where ``at`` comes from.
    """

    def __init__(
        self,
        path: Path,
        host: str,
        *,
        max_count: int = MAX_COUNT,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.host = host
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._clock = clock
        self._notices: collections.deque[tuple[Notice, int]] = collections.deque()
        self._bytes = 0
        self._seq = 0
        self._file: Any = None
        self._file_bytes = 0
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<NoticeLog {self.host} {len(self._notices)} notices, last {self._seq}>"

    def __len__(self) -> int:
        return len(self._notices)

    @property
    def last_seq(self) -> int:
        """The number of the newest notice (0 before the first)."""
        return self._seq

    def open(self) -> None:
        """Read the journal back, then keep it open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > 2 * self.max_bytes:  # only its tail can still be kept
                file.seek(size - 2 * self.max_bytes)
                file.readline()  # a partial line
            for raw in file:
                self._load(raw)
        self._rewrite()

    def _load(self, raw: bytes) -> None:
        try:
            notice = Notice.from_dict(json.loads(raw))
        except (ValueError, ProtocolError):
            return  # a torn last line, or a foreign one: not a notice
        if notice.seq > self._seq:
            self._seq = notice.seq
            self._keep(notice, len(raw))

    def close(self) -> None:
        """Close the journal file."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def _keep(self, notice: Notice, size: int) -> None:
        self._notices.append((notice, size))
        self._bytes += size
        while len(self._notices) > self.max_count or self._bytes > self.max_bytes:
            _, dropped = self._notices.popleft()
            self._bytes -= dropped

    def _rewrite(self) -> None:
        """Write the kept notices to a new journal and put it in place of the old one."""
        self.close()
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as file:
            for notice, _ in self._notices:
                file.write(_line(notice))
        tmp.replace(self.path)
        self._file = self.path.open("ab", buffering=0)
        self._file_bytes = self._bytes

    def append(self, agent_id: str, kind: NoticeKind, fields: dict[str, Any]) -> Notice:
        """Record a notice from ``agent_id`` with the checked ``fields``; returns it."""
        self._seq += 1
        notice = Notice(
            seq=self._seq, at=self._clock(), host=self.host, agent_id=agent_id, kind=kind, **fields
        )
        line = _line(notice)
        self._keep(notice, len(line))
        if self._file is not None:
            self._file.write(line)
            self._file_bytes += len(line)
            if self._file_bytes > 2 * self.max_bytes:
                self._rewrite()
        if kind is NoticeKind.NOTICE:
            level = max(logging.DEBUG, int(notice.severity))
            log.log(
                level,
                "notice %d from %s: %s: %s",
                notice.seq,
                agent_id,
                notice.title,
                notice.message[:200],
            )
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return notice

    def query(
        self,
        *,
        after: int = 0,
        severity: Severity = Severity.DEBUG,
        job: str | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[Notice]:
        """The kept notices after ``after`` that pass the filters, oldest first, at most
        ``limit`` (the newest ``limit`` when ``after`` is 0, the next ``limit`` after it)."""
        found = [
            n
            for n, _ in self._notices
            if n.seq > after
            and n.severity >= severity
            and (job is None or n.job == job)
            and (since is None or n.at >= since)
        ]
        return found[-limit:] if after == 0 else found[:limit]

    async def wait(self, after: int, timeout: float) -> None:
        """Return once a notice after ``after`` exists, or after ``timeout`` seconds."""
        if self._seq > after:
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()


def _line(notice: Notice) -> bytes:
    return json.dumps(notice.to_dict(), separators=(",", ":")).encode() + b"\n"
