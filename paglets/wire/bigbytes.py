"""Reading a large blob from a file into a new ``bytes`` object, fast.

A fresh process that reads 64 MiB into a new ``bytes`` object takes one page
fault for every 4 KiB page of it: over 16,000, which costs more than copying
the data (on a virtual machine, several microseconds each). `pread_bytes`
allocates the object itself, asks the kernel to back it with transparent huge
pages (``madvise(MADV_HUGEPAGE)``, honoured when the system's policy is
``madvise`` or ``always``), and reads the file straight into it: 2 MiB pages,
a few dozen faults, and still one copy from the page cache.

This needs CPython on Linux (it fills the new object through its buffer
address before anything else can see it, as CPython's own readers do). Elsewhere,
for small sizes, or if any step is unavailable, it is a plain `os.pread`.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

__all__ = ["HUGE_FROM", "pread_bytes"]

HUGE_FROM = 4 << 20  # smaller blobs gain nothing from huge pages
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE: int | None = getattr(mmap, "MADV_HUGEPAGE", None)


def _bytes_allocator() -> ctypes._NamedFuncPointer | None:
    if sys.implementation.name != "cpython" or _MADV_HUGEPAGE is None:
        return None
    alloc = ctypes.pythonapi.PyBytes_FromStringAndSize
    alloc.restype = ctypes.py_object
    alloc.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
    return alloc


def _madvise() -> ctypes._NamedFuncPointer | None:
    # The running program's own symbols include libc's: no library search
    # (which may start ldconfig) at import.
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.restype = ctypes.c_int
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


_ALLOC = _bytes_allocator()
_MADVISE = _madvise() if _ALLOC is not None else None
# where a bytes object's data starts, from the start of the object (ob_sval)
_DATA_OFFSET = bytes.__basicsize__ - 1


def pread_bytes(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` from ``offset``; fewer only at the end of the file.

    Like `os.pread`, but a large read lands in huge pages where it can.
    """
    if size < HUGE_FROM or _ALLOC is None or _MADVISE is None:
        return _pread_all(fd, size, offset)
    blob: bytes = _ALLOC(None, size)
    address = id(blob) + _DATA_OFFSET
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    end = (address + size) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        _MADVISE(start, end - start, _MADV_HUGEPAGE)  # advice: a failure only costs speed
    view = (ctypes.c_char * size).from_address(address)
    got = 0
    while got < size:
        n = os.preadv(fd, [memoryview(view)[got:]], offset + got)
        if n == 0:
            return blob[:got]  # a copy, but only of a file shorter than promised
        got += n
    return blob


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    first = os.pread(fd, size, offset)
    if len(first) == size or not first:
        return first  # the usual case: no second copy
    chunks, got = [first], len(first)
    while got < size and (chunk := os.pread(fd, size - got, offset + got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
