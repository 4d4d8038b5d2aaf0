"""`pread_bytes`: large reads into fresh ``bytes`` objects, backed by huge pages where offered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paglets.wire.bigbytes import HUGE_FROM, pread_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.fixture
def blob_file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(HUGE_FROM * 3 + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd, data
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0, 0),
        (0, 100),
        (7, HUGE_FROM - 1),
        (0, HUGE_FROM),
        (3, HUGE_FROM * 2 + 1),
        (HUGE_FROM - 5, HUGE_FROM * 2 + 12345),
    ],
)
def test_reads_exactly_what_pread_reads(blob_file: tuple[int, bytes], offset: int, size: int):
    fd, data = blob_file
    got = pread_bytes(fd, size, offset)
    assert type(got) is bytes
    assert got == data[offset : offset + size] == os.pread(fd, size, offset)
    assert hash(got) == hash(data[offset : offset + size])


def test_a_read_past_the_end_returns_what_is_there(blob_file: tuple[int, bytes]):
    fd, data = blob_file
    start = len(data) - HUGE_FROM // 2
    got = pread_bytes(fd, HUGE_FROM * 2, start)
    assert type(got) is bytes
    assert got == data[start:]
    assert pread_bytes(fd, HUGE_FROM, len(data)) == b""


def test_a_bad_descriptor_raises_like_pread(tmp_path: Path):
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: reads fail with EISDIR
    try:
        with pytest.raises(IsADirectoryError):
            pread_bytes(fd, HUGE_FROM * 2, 0)
    finally:
        os.close(fd)


_IN_A_FRESH_PROCESS = """
import os, re, sys
from pathlib import Path
from paglets.wire.bigbytes import pread_bytes

def huge_kib():
    text = Path("/proc/self/smaps_rollup").read_text()
    return int(re.search(r"^AnonHugePages:\\s+(\\d+) kB", text, re.MULTILINE).group(1))

fd = os.open(sys.argv[1], os.O_RDONLY)
before = huge_kib()
blob = pread_bytes(fd, int(sys.argv[2]), 0)
print(huge_kib() - before, len(blob))
"""


@pytest.mark.skipif(
    not THP.exists() or "[never]" in THP.read_text(),
    reason="this system offers no transparent huge pages",
)
def test_a_large_read_lands_in_huge_pages(tmp_path: Path):
    # In a fresh process: in this one, the read may reuse memory already faulted in.
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(HUGE_FROM * 3))
    out = subprocess.run(
        [sys.executable, "-c", _IN_A_FRESH_PROCESS, str(path), str(HUGE_FROM * 3)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    grown, size = int(out[0]), int(out[1])
    assert size == HUGE_FROM * 3
    # 12 MiB spans at least five whole aligned 2 MiB pages
    assert grown >= 5 * 2048, f"only {grown} KiB more in huge pages"
