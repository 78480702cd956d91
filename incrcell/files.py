"""Files a cell reads and writes, seen by wrapping Python's ``open``.

A cell that does ``pd.read_csv("data.csv")`` depends on the content of
``data.csv`` as much as on any variable.  While a :class:`FileWatch` is
active, ``builtins.open`` (``io.open``, the same function) and ``os.open``
are wrapped so that every file opened through them (``open``, ``pathlib``,
numpy, pandas...) is recorded with whether it was opened for writing.  The
engine keys the cell's entry on the content of the files it read, and does
not cache a cell that wrote files (restoring it would not recreate them).

Why wrappers rather than an audit hook (PEP 578): an audit hook can never be
removed and runs for *every* audited event, ``id()`` included, which made
hashing object-heavy values 50 % slower for the rest of the session.  The
wrappers exist only while a cell records.  Opens that bypass Python's
``open`` (C code calling ``fopen``, ``io.FileIO`` constructed directly) are
not seen.
"""

from __future__ import annotations

import builtins
import functools
import io
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

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

_OPEN, _OS_OPEN = io.open, os.open  # the originals, whatever a watch does
_active: FileWatch | None = None
_digests: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat, digest)


def _watching(original: Callable[..., Any], mode_of: Callable[..., tuple[Any, Any, Any]]
              ) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        watch = _active
        if watch is not None:
            try:
                watch._opened(*mode_of(*args, **kwargs))
            except Exception:  # recording must never break the user's open()
                pass
        return original(*args, **kwargs)
    return wrapper


def _open_args(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
    return file, kwargs.get("mode", mode), None


def _os_open_args(path: Any, flags: int, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
    return path, None, flags


_WATCHING_OPEN = _watching(_OPEN, _open_args)
_WATCHING_OS_OPEN = _watching(_OS_OPEN, _os_open_args)


def _tool_directories() -> list[str]:
    """Where tools keep caches and settings of their own (matplotlib's font cache,
    IPython's history): files there are not a cell's data."""
    home = os.path.expanduser("~")
    found = [os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
             os.environ.get("IPYTHONDIR") or os.path.join(home, ".ipython")]
    found += [os.environ[name] for name in ("MPLCONFIGDIR",) if os.environ.get(name)]
    return found


@functools.lru_cache(maxsize=16)
def _prefixes(directories: tuple[str, ...]) -> tuple[str, ...]:
    """Resolved directory prefixes (a watch starts for every recorded cell: resolve once)."""
    return tuple(os.path.join(os.path.realpath(d), "") for d in directories)


class FileWatch:
    """Records the files opened (by any thread) between ``start()`` and ``stop()``.

    ``ignore`` lists more directories whose files are not data (the cache
    itself), besides the tools' own caches and settings.
    """

    def __init__(self, ignore: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self._ignore = _prefixes(tuple(map(os.fspath, ignore)) + tuple(_tool_directories()))

    def start(self) -> FileWatch:
        global _active
        _active = self
        builtins.open = io.open = _WATCHING_OPEN
        os.open = _WATCHING_OS_OPEN
        return self

    def stop(self) -> FileWatch:
        global _active
        if _active is self:
            _active = None
            if builtins.open is _WATCHING_OPEN:
                builtins.open = io.open = _OPEN
            if os.open is _WATCHING_OS_OPEN:
                os.open = _OS_OPEN
        return self

    def _opened(self, path: Any, mode: Any, flags: Any) -> None:
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
        with _OPEN(path, "rb") as file:
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
