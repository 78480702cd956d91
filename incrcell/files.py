"""Files a cell reads and writes, seen by wrapping Python's ``open``.

A cell that does ``pd.read_csv("data.csv")`` depends on the content of
``data.csv`` as much as on any variable.  While a :class:`FileWatch` is
active, ``builtins.open`` (``io.open``, the same function), ``os.open`` and the
functions that delete or rename files (``os.remove``, ``os.rename``...)
are wrapped so that every file opened through them (``open``, ``pathlib``,
numpy, pandas...) is recorded with whether it was opened for writing.  The
engine keys the cell's entry on the content of the files it read, stores
the files it wrote with its entry, and writes them back when it restores the
cell (:func:`read_output`, :func:`write_back`).

Why wrappers rather than an audit hook (PEP 578): an audit hook can never be
removed and runs for *every* audited event, ``id()`` included, which made
hashing object-heavy values 50 % slower for the rest of the session.  The
wrappers exist only while a cell records.  Opens that bypass Python's
``open`` (C code calling ``fopen``, ``io.FileIO`` constructed directly) are
not seen.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from .packages import is_local_path

MISSING = "<missing>"
EXISTS = "<exists>"  # recorded for a file whose existence, not content, a cell depended on
_REMOVE = "remove"  # the "mode" of a delete, or of the source of a rename
# Opened for writing when the mode has one of these, or the flags one of _WRITE_FLAGS.
_WRITE_MODES = frozenset("wax+")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# System files whose content is not data (cgroup limits, devices, caches of compiled code);
# /dev/shm is ordinary storage.
_IGNORED_PREFIXES = ("/dev/", "/proc/", "/sys/")
_DATA_UNDER_IGNORED = ("/dev/shm/",)
# A file modified this recently may still change within the same timestamp: hash it again.
_RACY_SECONDS = 2.0
_CHUNK = 1 << 24

_OPEN = io.open  # the original, whatever a watch does
_active: FileWatch | None = None
_digests: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat, digest)


def _watching(original: Callable[..., Any],
              opened: Callable[..., list[tuple[Any, Any, Any]]]) -> Callable[..., Any]:
    """``original``, reporting the (path, mode, flags) that ``opened(*args)`` finds to the watch."""
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        watch = _active
        if watch is not None:
            try:
                for found in opened(*args, **kwargs):
                    watch._opened(*found)
            except Exception:  # recording must never break the user's call
                pass
        return original(*args, **kwargs)
    return wrapper


def _open_args(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> list[tuple[Any, Any, Any]]:
    return [(file, kwargs.get("mode", mode), None)]


def _os_open_args(path: Any, flags: int, *args: Any, **kwargs: Any) -> list[tuple[Any, Any, Any]]:
    return [(path, None, flags)]


def _remove_args(path: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, Any, Any]]:
    return [(path, _REMOVE, None)]  # deleting is writing: the file is MISSING afterwards


def _rename_args(src: Any, dst: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, Any, Any]]:
    return [(src, _REMOVE, None), (dst, "w", None)]


# (module, attribute, what a call opens): the functions a watch wraps
_WRAPPED = [(module, name, _watching(getattr(module, name), opened))
            for module, name, opened in (
                (builtins, "open", _open_args), (io, "open", _open_args),
                (os, "open", _os_open_args), (os, "remove", _remove_args),
                (os, "unlink", _remove_args), (os, "rename", _rename_args),
                (os, "replace", _rename_args))]


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
        self.updates: set[str] = set()  # written without truncating first ("a", "r+"...)
        # removed, renamed away or created exclusively ("x"): whether it existed before
        self.existed: dict[str, bool] = {}
        self._ignore = _prefixes(tuple(map(os.fspath, ignore)) + tuple(_tool_directories()))

    def start(self) -> FileWatch:
        global _active
        _active = self
        for module, name, wrapper in _WRAPPED:
            setattr(module, name, wrapper)
        from . import nativeio  # imports this module: bound here, not at import time
        nativeio.start(self)
        return self

    def stop(self) -> FileWatch:
        global _active
        from . import nativeio
        nativeio.stop(self)
        if _active is self:
            _active = None
            for module, name, wrapper in _WRAPPED:
                if getattr(module, name) is wrapper:
                    setattr(module, name, wrapper.__wrapped__)
        return self

    def _opened(self, path: Any, mode: Any, flags: Any) -> None:
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its path was seen when it was opened
        path = os.path.abspath(os.fsdecode(path))
        if ((path.startswith(_IGNORED_PREFIXES) and not path.startswith(_DATA_UNDER_IGNORED))
                or f"{os.sep}__pycache__{os.sep}" in path
                or path.startswith(self._ignore) or not is_local_path(path)):
            return
        if mode == _REMOVE or (isinstance(mode, str) and "x" in mode) or (
                mode is None and isinstance(flags, int) and flags & os.O_EXCL):
            self.existed.setdefault(path, os.path.lexists(path))  # raises or not: an input
            mode = "w"
        writing = (isinstance(mode, str) and not _WRITE_MODES.isdisjoint(mode)) or (
            mode is None and isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
        if os.path.isdir(path):
            return
        (self.writes if writing else self.reads).add(path)
        if writing and not (
                (isinstance(mode, str) and ("w" in mode or "x" in mode))
                or (mode is None and isinstance(flags, int) and flags & os.O_TRUNC)):
            self.updates.add(path)


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


def read_output(path: str) -> bytes | None:
    """The bytes a cell left in a file it wrote (None if it deleted it); raises OSError."""
    try:
        with _OPEN(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def write_back(path: str, data: bytes | None) -> None:
    """Put a recorded output file back: atomically (temp file + rename), or delete it."""
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".incrcell-")
    try:
        with _OPEN(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _digests.pop(path, None)


def changed_files(recorded: dict[str, str]) -> list[str]:
    """Which of the recorded ``{path: digest}`` no longer have that content (for
    EXISTS and MISSING: no longer exist, or exist)."""
    return [path for path, digest in sorted(recorded.items())
            if (_existence(path) if digest == EXISTS else file_digest(path)) != digest]


def _existence(path: str) -> str:
    return EXISTS if os.path.lexists(path) else MISSING
