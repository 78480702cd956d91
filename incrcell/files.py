"""Files a cell reads and writes, seen through Python's audit hooks.

A cell that does ``pd.read_csv("data.csv")`` depends on the content of
``data.csv`` as much as on any variable.  Every ``open`` made through Python
(``open``, ``os.open``, ``pathlib``, numpy, pandas...) raises the audit event
``open`` (PEP 578); while a :class:`FileWatch` is active it records the path
and whether it was opened for writing.  The engine keys the cell's entry on
the content of the files it read, and does not cache a cell that wrote files
(restoring it would not recreate them).

Audit hooks cannot be removed once added, so one hook is installed per
process and does nothing unless a watch is active; it never raises, since an
exception there would break the user's own ``open``.  Opens made by C code
outside Python's I/O (a C library calling ``fopen``) are not seen.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable

import xxhash

from .packages import is_local_path

MISSING = "<missing>"
# Opened for writing when the mode has one of these, or the flags one of _WRITE_FLAGS.
_WRITE_MODES = frozenset("wax+")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# System files whose content is not data (cgroup limits, devices, caches of compiled code).
_IGNORED_PREFIXES = ("/dev/", "/proc/", "/sys/")
# A file modified this recently may still change within the same timestamp: hash it again.
_RACY_SECONDS = 2.0
_CHUNK = 1 << 24

_active: FileWatch | None = None
_install_lock = threading.Lock()
_installed = False
_digests: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat, digest)


def _audit(event: str, args: tuple) -> None:
    if event != "open" or _active is None:
        return
    try:
        _active._opened(args)
    except Exception:  # an audit hook must never break the user's open()
        pass


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True


def _tool_directories() -> list[str]:
    """Where tools keep caches and settings of their own (matplotlib's font cache,
    IPython's history): files there are not a cell's data."""
    home = os.path.expanduser("~")
    found = [os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
             os.environ.get("IPYTHONDIR") or os.path.join(home, ".ipython")]
    found += [os.environ[name] for name in ("MPLCONFIGDIR",) if os.environ.get(name)]
    return found


class FileWatch:
    """Records the files opened (by any thread) between ``start()`` and ``stop()``.

    ``ignore`` lists more directories whose files are not data (the cache
    itself), besides the tools' own caches and settings.
    """

    def __init__(self, ignore: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self._ignore = tuple(os.path.join(os.path.realpath(p), "")
                             for p in [*ignore, *_tool_directories()])

    def start(self) -> FileWatch:
        global _active
        _install()
        _active = self
        return self

    def stop(self) -> FileWatch:
        global _active
        if _active is self:
            _active = None
        return self

    def _opened(self, args: tuple) -> None:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its path was seen when it was opened
        path = os.path.abspath(os.fsdecode(path))
        if (path.startswith(_IGNORED_PREFIXES) or f"{os.sep}__pycache__{os.sep}" in path
                or path.startswith(self._ignore) or not is_local_path(path)):
            return
        writing = (isinstance(mode, str) and not _WRITE_MODES.isdisjoint(mode)) or (
            mode is None and isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
        if os.path.isdir(path):
            return
        (self.writes if writing else self.reads).add(path)


def file_digest(path: str) -> str:
    """Content digest of ``path`` (``MISSING`` if it does not exist or cannot be read).

    Cached by (mtime, size, inode), so touching a file costs a re-hash but
    not a miss, and an unchanged file costs a ``stat``; a file modified in the
    last two seconds is always re-hashed (its next change could keep the
    same timestamp).
    """
    try:
        st = os.stat(path)
    except OSError:
        return MISSING
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _digests.get(path)
    if cached is not None and cached[0] == stamp and time.time() - st.st_mtime > _RACY_SECONDS:
        return cached[1]
    state = xxhash.xxh3_128()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                state.update(chunk)
    except OSError:
        return MISSING
    digest = state.hexdigest()
    _digests[path] = (stamp, digest)
    return digest


def changed_files(recorded: dict[str, str]) -> list[str]:
    """Which of the recorded ``{path: digest}`` no longer have that content."""
    return [path for path, digest in sorted(recorded.items()) if file_digest(path) != digest]
