"""Evicting a cache directory from the OS page cache, without root, and checking it worked.

The "warm, evicted" scenario times a restore that has to read the cache from disk, as
after a reboot or when other work pushed the cache out of memory. Every file is
``fsync``-ed (dirty pages cannot be dropped) and then dropped with
``posix_fadvise(POSIX_FADV_DONTNEED)``; :func:`resident` asks ``mincore`` how much of
it is still in memory afterwards, so the benchmark reports whether eviction happened
instead of assuming it (a page another process has mapped stays resident).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def evict(root: Path) -> int:
    """Drop every file under ``root`` from the page cache; returns their total size."""
    total = 0
    for path in _files(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident(root: Path) -> int:
    """Bytes of the files under ``root`` that are in the page cache now (``mincore`` of a
    private mapping none of whose pages is touched: it reports the file's own pages)."""
    page = mmap.PAGESIZE
    total = 0
    for path in _files(root):
        size = path.stat().st_size
        if not size:
            continue
        with (
            open(path, "rb") as file,
            mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY) as mapped,
        ):
            start = ctypes.c_char.from_buffer(mapped)  # the mapping's address, nothing read
            try:
                vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
                if _libc.mincore(ctypes.addressof(start), size, vec) == 0:
                    total += sum(b & 1 for b in vec) * page
            finally:
                del start  # the mapping cannot close while a ctypes object holds it
    return total
