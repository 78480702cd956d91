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
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def resident(root: Path) -> int:
    """Bytes of the files under ``root`` that are in the page cache now (``mincore``)."""
    page = mmap.PAGESIZE
    total = 0
    for path in _files(root):
        size = path.stat().st_size
        if not size:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, _MAP_FAILED):
                continue
            try:
                pages = (size + page - 1) // page
                vec = (ctypes.c_ubyte * pages)()
                if _libc.mincore(addr, size, vec) == 0:
                    total += sum(b & 1 for b in vec) * page
            finally:
                _libc.munmap(addr, size)
        finally:
            os.close(fd)
    return total
