"""Files and directories a cell reads and writes, seen by wrapping Python's file functions.

A cell that does ``pd.read_csv("data.csv")``, ``os.listdir("runs")`` or
``if os.path.exists("model.pkl")`` depends on the file system as much as on
any variable.  Once a :class:`FileWatch` has started, the functions in
:data:`_WRAPPED` stay replaced by wrappers until :func:`uninstall`
(``%unload_ext incrcell``): ``open``/``io.open``/``os.open``/``io.FileIO``,
the functions that list directories (``os.listdir``, ``os.scandir``: hence
``os.walk``, ``pathlib``'s ``iterdir``), probe paths (``os.stat``,
``os.path.exists``, ``Path.is_file``...), match names (``glob``,
``Path.glob``), and change the tree (``os.remove``, ``os.rename``,
``os.mkdir``: hence ``os.makedirs``, ``shutil.copytree``/``move``,
``os.rmdir``, ``shutil.rmtree``, ``os.symlink``, ``os.link``).  A wrapper
does nothing but call the original while no watch is active; while one is,
it reports what the call touches, from whichever code and thread calls it
(the cell, functions of earlier cells, local modules, libraries).  Modules
that took their own reference to an original before (``bz2``'s
``_builtin_open``, ``tarfile``'s ``bltn_open``, IPython's ``io_open`` behind
the ``open`` of a notebook's namespace) get the wrapper too: every module
added to ``sys.modules`` since the last watch is scanned when the next starts.

What a watch collects, and what the engine does with it:

- ``reads``: files opened for reading, keyed by their content;
- ``probes``: listings (names and kinds), glob matches, existence and kind
  checks, sizes, stats (kind, size and mtime of a file; the kind of a
  directory), observed when the cell first made them: inputs like the files;
- ``writes``: paths whose state after the cell (a file's bytes, a directory, a
  symlink, gone) is stored and put back on a hit; ``trees`` among them are
  directories the cell removed, renamed or renamed onto, stored and put back
  whole;
- ``bypassed``: files that were already open (a ``logging.FileHandler``, a
  file object kept in a variable, an ``np.memmap``) and changed while the cell
  ran without being opened by it: the cell is uncacheable.

Why wrappers rather than an audit hook (PEP 578): an audit hook can never be
removed and runs for *every* audited event, ``id()`` included, which made
hashing object-heavy values 50 % slower for the rest of the session.  Not
seen: native code opening files itself (C calling ``fopen``; see the native
libraries' table elsewhere), and references to an original kept in places
other than module globals (a default argument, a class attribute).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import functools
import glob
import io
import json
import os
import pathlib
import posixpath
import shutil
import stat as stat_module
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from .packages import is_local_path
from .reasons import Code, Reason

MISSING = "<missing>"
EXISTS = "<exists>"  # recorded for a file whose existence, not content, a cell depended on
# The states of written paths other than a file's bytes (stored in Entry.written as is).
DIRECTORY = "<dir>"  # a directory that exists (its content is what other paths say)
TREE = "<tree>"  # a directory exactly as stored: whatever was there is removed first
LINK = "<link>"  # followed by the symlink's target
SPECIAL = "<special>"  # the digest of a named pipe, device or socket: never opened
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
# Files open for writing and mapped into memory before a cell are hashed before and
# after it (a write through a mapping need not change the mtime); above this, the cell
# is uncacheable instead.
_MAPPED_LIMIT = 64 << 20

# The originals, whatever the wrappers do (incrcell's own file access is never recorded).
_OPEN = io.open
_OPEN_MODULE = _OPEN.__module__
_stat, _lstat, _scandir, _readlink = os.stat, os.lstat, os.scandir, os.readlink
_listdir = os.listdir
_glob, _path_glob, _path_rglob = glob.glob, pathlib.Path.glob, pathlib.Path.rglob
_rmtree = shutil.rmtree

_active: FileWatch | None = None
_digests: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat, digest)


class _Local(threading.local):
    quiet = False  # inside a wrapper: the calls it makes are its own business


_local = _Local()


#: The attribute naming, on each of incrcell's wrappers (here and in nativeio), the function
#: it wraps: installing or removing one is incrcell's doing, never a cell's (interpreter.py).
ORIGINAL = "__incrcell_original__"


def _watching(
    original: Callable[..., Any], observe: Callable[..., None], quiet: bool = False
) -> Callable[..., Any]:
    """``original``, reporting what ``observe(watch, *args)`` finds to the active watch.

    With ``quiet``, the calls ``original`` makes itself are not reported (what
    ``os.path.exists`` is, not the ``os.stat`` it calls).
    """

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        watch = _active
        if watch is None or _local.quiet:
            return original(*args, **kwargs)
        _local.quiet = True
        try:
            observe(watch, *args, **kwargs)
        except Exception:  # recording must never break the user's call
            pass
        finally:
            _local.quiet = quiet
        try:
            return original(*args, **kwargs)
        finally:
            _local.quiet = False

    setattr(wrapper, ORIGINAL, original)
    return wrapper


def _fd_path(fd: int) -> str | None:
    try:
        return _readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _resolve(path: Any, dir_fd: int | None = None) -> str | None:
    """The absolute path a call names (None for an open file descriptor's own path)."""
    if isinstance(path, int):
        return _fd_path(path)
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        directory = _fd_path(dir_fd)
        return None if directory is None else os.path.join(directory, path)
    return os.path.abspath(path)


# -- what each wrapped call touches --------------------------------------------------
def _open_seen(watch: FileWatch, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
    if not isinstance(file, int):
        watch._opened(file, kwargs.get("mode", mode), None)


def _os_open_seen(
    watch: FileWatch, path: Any, flags: int, *args: Any, dir_fd: int | None = None, **kwargs: Any
) -> None:
    watch._opened(_resolve(path, dir_fd), None, flags)


def _remove_seen(
    watch: FileWatch, path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any
) -> None:
    watch._opened(_resolve(path, dir_fd), _REMOVE, None)  # deleting is writing


def _rename_seen(
    watch: FileWatch,
    src: Any,
    dst: Any,
    *args: Any,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    **kwargs: Any,
) -> None:
    source, target = _resolve(src, src_dir_fd), _resolve(dst, dst_dir_fd)
    if source not in watch.writes:  # what moves to ``dst`` is an input, unless the cell made it
        watch._probe("tree", source)
    if source is not None and os.path.isdir(source) and not os.path.islink(source):
        watch._changed(source, tree=True, existed=True)
        watch._changed(target, tree=True, existed=True)
    else:
        watch._opened(source, _REMOVE, None)
        watch._opened(target, "w", None)


def _mkdir_seen(
    watch: FileWatch, path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any
) -> None:
    watch._changed(_resolve(path, dir_fd), existed=True)  # raises if it exists: an input


def _makedirs_seen(watch: FileWatch, name: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
    path = _resolve(name)
    if path is None:
        return
    if not exist_ok:
        watch._changed(path, existed=True)  # raises if it exists: an input
    # What the call meets on its way is an input: whether each path from the target up to
    # the first directory is a directory or nothing (the call succeeds either way: a
    # restore makes them) or something else (NotADirectoryError / FileExistsError).
    met = path
    while True:
        watch._probe("way", met)
        if met == os.path.dirname(met) or os.path.isdir(met):
            break
        met = os.path.dirname(met)
    # Exists afterwards, whether or not it was there before (a restore into a fresh
    # directory creates it), and so do its parents: those below the working directory, or
    # those missing now.
    here = os.path.join(os.getcwd(), "")
    while path != os.path.dirname(path) and (path.startswith(here) or not os.path.isdir(path)):
        watch._changed(path)
        path = os.path.dirname(path)


def _path_mkdir_seen(
    watch: FileWatch,
    path: pathlib.Path,
    mode: int = 0o777,
    parents: bool = False,
    exist_ok: bool = False,
) -> None:
    if parents:
        _makedirs_seen(watch, path, mode, exist_ok)
    else:
        watch._changed(_resolve(path), existed=not exist_ok)


def _rmtree_seen(
    watch: FileWatch, path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any
) -> None:
    watch._changed(_resolve(path, dir_fd), tree=True, existed=True)


def _link_seen(
    watch: FileWatch, src: Any, dst: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any
) -> None:
    watch._changed(_resolve(dst, dir_fd), existed=True)


def _hardlink_seen(
    watch: FileWatch,
    src: Any,
    dst: Any,
    *args: Any,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
    **kwargs: Any,
) -> None:
    watch._probe("tree", _resolve(src, src_dir_fd))  # the new name holds its content
    watch._changed(_resolve(dst, dst_dir_fd), existed=True)


def _probe_seen(what: str) -> Callable[..., None]:
    def seen(
        watch: FileWatch,
        path: Any = ".",
        *args: Any,
        dir_fd: int | None = None,
        follow_symlinks: bool = True,
        **kwargs: Any,
    ) -> None:
        watch._probe(what if follow_symlinks else "l" + what, _resolve(path, dir_fd))

    return seen


def _glob_seen(
    watch: FileWatch,
    pathname: Any,
    *,
    root_dir: Any = None,
    dir_fd: Any = None,
    recursive: bool = False,
    include_hidden: bool = False,
) -> None:
    root = os.path.abspath(os.fsdecode(root_dir)) if root_dir is not None else os.getcwd()
    if dir_fd is None:
        watch._probe("glob", json.dumps([os.fsdecode(pathname), root, recursive, include_hidden]))
    else:
        watch.unseen = Code.DESCRIPTOR_LISTING()


def _path_glob_seen(what: str) -> Callable[..., None]:
    def seen(watch: FileWatch, path: pathlib.Path, pattern: str, *args: Any, **kw: Any) -> None:
        watch._probe(what, json.dumps([str(path.absolute()), pattern]))

    return seen


def _cwd_seen(watch: FileWatch, *args: Any, **kwargs: Any) -> None:
    watch._reads_cwd()


def _realpath_seen(watch: FileWatch, path: Any, *args: Any, **kwargs: Any) -> None:
    """A quiet wrapper: the lstats ``realpath`` makes inside are not inputs, the working
    directory a relative path is resolved against is (``Path("data").resolve()``)."""
    if not os.path.isabs(os.fsdecode(path)):
        watch._reads_cwd()


class _FileIOType(type):
    """``isinstance(f, io.FileIO)`` stays true for every file object while ``io.FileIO``
    is the recording subclass."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _FILEIO)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _FILEIO)


_FILEIO = io.FileIO


# typeshed gives io.FileIO the metaclass ABCMeta; at run time it is a plain C type.
class _WatchedFileIO(_FILEIO, metaclass=_FileIOType):  # type: ignore[metaclass]
    """``io.FileIO`` constructed directly, reporting the file it opens."""

    def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        watch = _active
        if watch is not None and not _local.quiet:
            _local.quiet = True
            try:
                _open_seen(watch, file, mode, *args, **kwargs)
            except Exception:
                pass
            finally:
                _local.quiet = False
        super().__init__(file, mode, *args, **kwargs)


_WatchedFileIO.__name__ = _WatchedFileIO.__qualname__ = "FileIO"
_WatchedFileIO.__module__ = "io"

# (owner, attribute, what a call touches, quiet: see _watching): the functions wrapped
_TABLE = (
    (io, "open", _open_seen, False),
    (builtins, "open", _open_seen, False),
    (os, "open", _os_open_seen, False),
    (os, "remove", _remove_seen, False),
    (os, "unlink", _remove_seen, False),
    (os, "rename", _rename_seen, False),
    (os, "replace", _rename_seen, False),
    (os, "mkdir", _mkdir_seen, False),
    (os, "rmdir", _rmtree_seen, False),
    (os, "makedirs", _makedirs_seen, True),
    (os, "symlink", _link_seen, False),
    (os, "link", _hardlink_seen, False),
    (shutil, "rmtree", _rmtree_seen, True),
    (os, "listdir", _probe_seen("list"), False),
    (os, "scandir", _probe_seen("list"), False),
    (os, "stat", _probe_seen("stat"), False),
    (os, "lstat", _probe_seen("lstat"), False),
    (posixpath, "exists", _probe_seen("kind"), True),
    (posixpath, "lexists", _probe_seen("lkind"), True),
    (posixpath, "isfile", _probe_seen("kind"), True),
    (posixpath, "isdir", _probe_seen("kind"), True),
    (posixpath, "islink", _probe_seen("lkind"), True),
    (posixpath, "getsize", _probe_seen("size"), True),
    (posixpath, "getmtime", _probe_seen("stat"), True),
    (posixpath, "getctime", _probe_seen("stat"), True),
    (posixpath, "realpath", _realpath_seen, True),
    # os.path.abspath, Path.cwd and Path.absolute call os.getcwd
    (os, "getcwd", _cwd_seen, False),
    (os, "getcwdb", _cwd_seen, False),
    (glob, "glob", _glob_seen, True),
    (glob, "iglob", _glob_seen, True),
    (pathlib.Path, "exists", _probe_seen("kind"), True),
    (pathlib.Path, "is_file", _probe_seen("kind"), True),
    (pathlib.Path, "is_dir", _probe_seen("kind"), True),
    (pathlib.Path, "is_symlink", _probe_seen("lkind"), True),
    (pathlib.Path, "mkdir", _path_mkdir_seen, True),
    (pathlib.Path, "glob", _path_glob_seen("pglob"), True),
    (pathlib.Path, "rglob", _path_glob_seen("prglob"), True),
)


def _wrappers() -> list[tuple[Any, str, Any]]:
    """The (owner, attribute, replacement) of _TABLE: one wrapper per original (``open``
    is ``builtins.open`` and ``io.open``), named after where it is found, so that pickle
    finds it there (a pickled ``os.remove`` loads as ``os.remove``, wrapped or not)."""
    made: dict[int, Any] = {}
    found: list[tuple[Any, str, Any]] = [(io, "FileIO", _WatchedFileIO)]
    for owner, name, observe, quiet in _TABLE:
        original = getattr(owner, name)
        if id(original) not in made:
            wrapper = made[id(original)] = _watching(original, observe, quiet)
            if isinstance(owner, type):
                wrapper.__module__ = owner.__module__
                wrapper.__qualname__ = f"{owner.__qualname__}.{name}"
            else:
                wrapper.__module__, wrapper.__qualname__ = owner.__name__, name
        found.append((owner, name, made[id(original)]))
    return found


# (owner, attribute, replacement): what a watch replaces, until uninstall()
_WRAPPED = _wrappers()

_ORIGINALS = {id(getattr(owner, name)): replacement for owner, name, replacement in _WRAPPED}
# Modules whose own references are the originals by design.
_UNSCANNED = frozenset(
    {
        "builtins",
        "io",
        "_io",
        "os",
        "posix",
        "posixpath",
        "genericpath",
        "glob",
        "shutil",
        "pathlib",
        __name__,
    }
)
_installed = False
_scanned: set[str] = set()
_modules_seen: tuple[int, str | None] = (0, None)  # sys.modules' size and last name when scanned
_patched: list[tuple[Any, str, Any, Any]] = []  # (module or class, name, original, replacement)


def install() -> None:
    """Put the wrappers in place (once), and into the modules imported since last time.

    The engine calls it before it hashes a cell's inputs, so that a function's
    digest (which covers the globals it refers to) does not change because a scan
    replaced an original in its module while the cell ran.
    """
    global _installed, _modules_seen
    if not _installed:
        for owner, name, replacement in _WRAPPED:
            setattr(owner, name, replacement)
        # ``io.open`` is now the wrapper: the original pickles as ``_io.open`` (the same
        # object) meanwhile, e.g. as the ``__wrapped__`` of IPython's ``open``
        _OPEN.__module__ = "_io"
        _installed = True
    seen = (len(sys.modules), next(reversed(sys.modules), None))  # new modules come last
    if seen != _modules_seen:
        _modules_seen = seen
        for name, module in list(sys.modules.items()):
            if name not in _scanned:
                _scanned.add(name)
                if not (name in _UNSCANNED or name.startswith(("importlib", "_frozen_importlib"))):
                    _patch_module(name, module)


def _patch_module(name: str, module: Any) -> None:
    """Replace the originals a module holds in its globals, or in its classes' attributes
    (``logging.FileHandler._builtin_open``), by their wrappers."""
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return
    # hundreds of modules, tens of thousands of globals: ``isdisjoint`` over their ids runs
    # in C, and only a module (or class) that holds an original is walked in Python
    values = list(namespace.values())
    if not _ORIGINALS.keys().isdisjoint(map(id, values)):
        for key, value in list(namespace.items()):
            replacement = _ORIGINALS.get(id(value))
            if replacement is not None and value is not replacement:
                namespace[key] = replacement
                _patched.append((module, key, value, replacement))
    for value in values:
        if not (isinstance(value, type) and value.__module__ == name):
            continue
        held_by = vars(value)
        if _ORIGINALS.keys().isdisjoint(map(id, held_by.values())):
            continue
        for attribute, held in list(held_by.items()):
            wrapper = _ORIGINALS.get(id(held))
            if wrapper is not None and held is not wrapper:
                # a builtin held by a class is not bound to instances; a wrapper would be
                replacement = (
                    wrapper if isinstance(held, types.FunctionType) else staticmethod(wrapper)
                )
                with contextlib.suppress(TypeError, AttributeError):
                    setattr(value, attribute, replacement)
                    _patched.append((value, attribute, held, replacement))


def uninstall() -> None:
    """Put every original back (``%unload_ext incrcell``); a later watch installs anew."""
    global _installed, _active, _modules_seen
    _active = None
    _modules_seen = (0, None)
    if _installed:
        for owner, name, replacement in _WRAPPED:
            if owner.__dict__.get(name) is replacement:
                setattr(owner, name, _original(replacement))
        _OPEN.__module__ = _OPEN_MODULE
        for owner, key, original, replacement in _patched:
            if vars(owner).get(key) is replacement:
                setattr(owner, key, original)
    _patched.clear()
    _scanned.clear()
    _installed = False
    from . import nativeio  # imports this module: bound here, not at import time

    nativeio.restore()  # the native entry points' wrappers and their import hook


def _original(replacement: Any) -> Any:
    return _FILEIO if replacement is _WatchedFileIO else replacement.__wrapped__


def _tool_directories() -> list[str]:
    """Where tools keep caches and settings of their own (matplotlib's font cache,
    IPython's history): files there are not a cell's data."""
    home = os.path.expanduser("~")
    found = [
        os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
        os.environ.get("IPYTHONDIR") or os.path.join(home, ".ipython"),
    ]
    found += [os.environ[name] for name in ("MPLCONFIGDIR",) if os.environ.get(name)]
    return found


@functools.lru_cache(maxsize=16)
def _prefixes(directories: tuple[str, ...]) -> tuple[str, ...]:
    """Resolved directory prefixes (a watch starts for every recorded cell: resolve once)."""
    return tuple(os.path.join(os.path.realpath(d), "") for d in directories)


class FileWatch:
    """Records the files and directories touched (by any thread) between ``start()`` and
    ``stop()``.

    ``ignore`` lists more directories whose files are not data (the cache
    itself), besides the tools' own caches and settings.
    """

    def __init__(self, ignore: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.updates: set[str] = set()  # written without truncating first ("a", "r+"...)
        self.trees: set[str] = set()  # written directories stored whole (see outputs)
        # removed, renamed away or created exclusively ("x"): whether it existed before
        self.existed: dict[str, bool] = {}
        self.probes: dict[str, str] = {}  # "<what> <path>" -> what it showed (see observe)
        self.bypassed: list[str] = []  # already open files that changed behind the watch
        # why what the cell touched cannot be known (None when it can)
        self.unseen: Reason | None = None
        self._open_before: dict[str, tuple[Any, ...]] = {}
        self.descriptors: frozenset[int] = frozenset()  # open as the watch started
        self._ignore = _prefixes(tuple(os.fspath(d) for d in ignore) + tuple(_tool_directories()))

    def start(self) -> FileWatch:
        global _active
        install()
        self.descriptors = open_descriptors()
        self._open_before = self._open_files()
        _active = self
        from . import nativeio  # imports this module: bound here, not at import time

        nativeio.start(self)
        return self

    def stop(self) -> FileWatch:
        global _active
        from . import nativeio

        nativeio.stop(self)
        if _active is self:
            _active = None
            for path, before in self._open_before.items():
                if path not in self.writes and _open_state(path, len(before) > 2) != before:
                    self.bypassed.append(path)
        return self

    def _data(self, path: str) -> bool:
        """Whether ``path`` (absolute) may be a cell's data: not system, tool or installed files."""
        return not (
            (path.startswith(_IGNORED_PREFIXES) and not path.startswith(_DATA_UNDER_IGNORED))
            or f"{os.sep}__pycache__{os.sep}" in path
            or path.startswith(self._ignore)
            or not is_local_path(path)
        )

    def _opened(self, path: Any, mode: Any, flags: Any) -> None:
        """A file opened with ``mode`` (``open``'s) or ``flags`` (``os.open``'s): mode "r"
        reads it, "w" writes it whole, _REMOVE deletes it."""
        _regular.clear()  # a descriptor may have been closed and its number reused
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its path was seen when it was opened
        path = os.path.abspath(os.fsdecode(path))
        if not self._data(path):
            return
        if (
            mode == _REMOVE
            or (isinstance(mode, str) and "x" in mode)
            or (mode is None and isinstance(flags, int) and flags & os.O_EXCL)
        ):
            self._existed(path)  # raises or not: an input
            mode = "w"
        writing = (isinstance(mode, str) and not _WRITE_MODES.isdisjoint(mode)) or (
            mode is None and isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        )
        if os.path.isdir(path):
            return
        (self.writes if writing else self.reads).add(path)
        if writing and not (
            (isinstance(mode, str) and ("w" in mode or "x" in mode))
            or (mode is None and isinstance(flags, int) and flags & os.O_TRUNC)
        ):
            self.updates.add(path)

    def _existed(self, path: str) -> None:
        """Whether ``path`` existed before the cell is an input (unless the cell made it), and
        what kind of thing it was: removing, renaming or making it does something else to a
        file than to a directory (``rmtree(p, ignore_errors=True)`` leaves a file)."""
        if path not in self.writes:
            self.existed.setdefault(path, os.path.lexists(path))
            self._probe("lkind", path)

    def _changed(self, path: str | None, tree: bool = False, existed: bool = False) -> None:
        """A directory (or symlink) created, removed or renamed: its state after the cell is
        an output; ``tree``: stored whole; ``existed``: whether it existed is an input."""
        if path is None or not self._data(path):
            return
        if existed:
            self._existed(path)
        self.writes.add(path)
        if tree:
            self.trees.add(path)

    def _reads_cwd(self) -> None:
        """The cell read the working directory (``os.getcwd()``, a relative path made
        absolute): its entry is bound to the directory it started in, as one that read files
        by relative paths is (engine.files_changed compares the two)."""
        self.probes.setdefault(CWD_PROBE, observe(CWD_PROBE))

    def _probe(self, what: str, path: str | None) -> None:
        """What ``path`` shows to a ``what`` probe (see :func:`observe`) is an input; only the
        first probe counts (later ones may see the cell's own changes)."""
        if path is None:
            self.unseen = Code.DESCRIPTOR_UNNAMED()
            return
        if what in _GLOBS:
            root = json.loads(path)[1 if what == "glob" else 0]
            if not self._data(os.path.join(root, "")):
                return
        elif not self._data(path) or (path in self.writes and what != "list"):
            return  # not data, or what the cell itself made
        probe = f"{what} {path}"
        if probe not in self.probes:
            self.probes[probe] = observe(probe)

    def outputs(self) -> dict[str, bytes | str | None]:
        """The state the cell left each written path in: a file's bytes, None (gone),
        DIRECTORY, TREE (then every path inside it too), or LINK + target.

        Raises OSError if one cannot be read, ValueError for a special file.
        """
        found: dict[str, bytes | str | None] = {}
        for path in sorted(self.writes):
            found.update(_state(path, path in self.trees))
        return found

    def _open_files(self) -> dict[str, tuple[Any, ...]]:
        """The data files this process has open now, with their size and mtime, and their
        content digest if they are mapped into memory for writing (see _open_regular)."""
        found: dict[str, tuple[Any, ...]] = {}
        writable = []
        for path, read_write in _open_regular(self.descriptors):
            if self._data(path):
                found[path] = _open_state(path, False)
                if read_write:
                    writable.append(path)
        if writable:
            mapped = _mapped_for_writing()
            for path in writable:
                if path in mapped:
                    found[path] = _open_state(path, True)
        return found


def open_descriptors() -> frozenset[int]:
    """The numbers of this process's open descriptors (empty if they cannot be listed).

    Listing ``/proc/self/fd`` costs 10 us alone but 0.5 ms in a busy kernel (the
    GIL is let go for each of its dozens of entries, and the kernel's threads take
    it), and a recorded cell needs the descriptors twice.  So the last listing is
    reused while both their count (the size of ``/proc/self/fd`` on Linux >= 6.2: a
    stat) and the lowest free number stay the same: opening a descriptor and keeping
    it changes one of them, unless another was closed meanwhile (nativeio's limits).
    The listing opens a descriptor itself, the lowest free number, which is left out.
    """
    global _listed
    try:
        seen = (_stat("/proc/self/fd").st_size, _lowest_free())
        if seen[0] and seen == _listed[0]:
            return _listed[1]
        listed = frozenset(int(name) for name in _listdir("/proc/self/fd")) - {seen[1]}
    except OSError:
        return frozenset()
    _listed = (seen, listed)
    return listed


_listed: tuple[tuple[int, int], frozenset[int]] = ((0, -1), frozenset())


def _lowest_free() -> int:
    """The number the next descriptor opened will get (``os.open`` may be a wrapper:
    duplicate one instead)."""
    try:
        free = os.dup(2)
        os.close(free)
    except OSError:  # no stderr
        ends = os.pipe()
        for free in sorted(ends, reverse=True):
            os.close(free)
    return free


# What the descriptors open when last examined are: number -> (path, opened read-write),
# or None when not a regular file.  A number still open is examined again only after a
# cell opened a file (it may have been closed and its number reused): a kernel keeps
# dozens of sockets open, at three system calls each.
_regular: dict[int, tuple[str, bool] | None] = {}


def _open_regular(descriptors: frozenset[int]) -> list[tuple[str, bool]]:
    """The regular files among ``descriptors`` (from :func:`open_descriptors`)."""
    global _regular
    known, _regular = _regular, {}
    for fd in descriptors:
        if fd in known:
            _regular[fd] = known[fd]
            continue
        found = None
        try:
            if stat_module.S_ISREG(os.fstat(fd).st_mode):
                read_write = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
                path = _fd_path(fd)
                if path is not None and path.startswith("/"):
                    found = (path, read_write)
        except OSError:
            pass
        _regular[fd] = found
    return [found for found in _regular.values() if found is not None]


def _open_state(path: str, content: bool) -> tuple[Any, ...]:
    """(size, mtime) of a file, and its content digest (``content``: up to _MAPPED_LIMIT)."""
    try:
        st = _stat(path)
    except OSError:
        return (None, None)
    if not content:
        return (st.st_size, st.st_mtime_ns)
    if st.st_size > _MAPPED_LIMIT:
        return (st.st_size, st.st_mtime_ns, None, time.monotonic())  # never equal: uncacheable
    return (st.st_size, st.st_mtime_ns, _hash_file(path))


def _mapped_for_writing() -> set[str]:
    """Files mapped shared and writable into this process (``/proc/self/maps``)."""
    found = set()
    try:
        with _OPEN("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[1][1] == "w" and fields[1][3] == "s":
                    found.add(fields[5].rstrip("\n").removesuffix(" (deleted)"))
    except OSError:
        pass
    return found


# -- probes: what a listing, glob or check showed --------------------------------------
_GLOBS = frozenset({"glob", "pglob", "prglob"})
#: What a "way" probe shows where a directory is or can be made.
OPEN_WAY = "open"
#: The probe of a cell that read the working directory (see FileWatch._reads_cwd).
CWD_PROBE = "cwd ."


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    return (
        "f"
        if stat_module.S_ISREG(mode)
        else "d"
        if stat_module.S_ISDIR(mode)
        else "l"
        if stat_module.S_ISLNK(mode)
        else "o"
    )


def _names_digest(names: Iterable[Any]) -> str:
    return xxhash.xxh3_128_hexdigest("\0".join(sorted(map(str, names))).encode())


def observe(probe: str) -> str:
    """What the ``"<what> <path>"`` probe shows now, as a string (MISSING if nothing is there).

    kind/lkind: the kind (file, directory, link, other) following symlinks or not;
    size: a file's size; stat/lstat: a file's size and mtime, only the kind of
    anything else (a directory's mtime changes with every file made in it);
    list: the names and kinds in a directory; glob/pglob/prglob: the matches;
    tree: everything in it, contents included (what a rename moves); way: OPEN_WAY
    where a directory is or can be made (one or nothing there), else the kind; cwd:
    that the working directory was read (the directory is compared apart).
    """
    what, path = probe.split(" ", 1)
    if what == "cwd":  # compared where it is admitted: see FileWatch._reads_cwd
        return "read"
    if what == "way":
        seen = observe(f"kind {path}")
        return OPEN_WAY if seen in (MISSING, "d") else seen
    try:
        if what in _GLOBS:
            args = json.loads(path)
            if what == "glob":
                pattern, root, recursive, hidden = args
                extra = {"include_hidden": True} if hidden else {}
                return _names_digest(_glob(pattern, root_dir=root, recursive=recursive, **extra))
            method = _path_glob if what == "pglob" else _path_rglob
            return _names_digest(method(pathlib.Path(args[0]), args[1]))
        if what == "tree":
            return _tree_digest(path)
        st = (_lstat if what.startswith("l") else _stat)(path)
        kind = _kind(st)
        if what.endswith("kind") or (kind != "f" and what != "list"):
            return kind
        if what == "size":
            return f"f {st.st_size}"
        if what.endswith("stat"):
            return f"f {st.st_size} {st.st_mtime_ns}"
        with _scandir(path) as entries:
            return "d " + _names_digest(
                f"{e.name}/"
                + ("l" if e.is_symlink() else "d" if e.is_dir() else "f" if e.is_file() else "o")
                for e in entries
            )
    except (OSError, ValueError):
        return MISSING


def _tree_digest(path: str) -> str:
    """A file's content, a symlink's target, or a directory's names, kinds and contents."""
    st = _lstat(path)
    if stat_module.S_ISLNK(st.st_mode):
        return "l " + _readlink(path)
    if not stat_module.S_ISDIR(st.st_mode):
        return "f " + file_digest(path)
    with _scandir(path) as entries:
        return "d " + _names_digest(f"{e.name}/{_tree_digest(e.path)}" for e in entries)


def probe_changed(probes: dict[str, str]) -> Reason | None:
    """Why the recorded ``{probe: observation}`` no longer hold, as a reason (None if they do)."""
    for probe, before in sorted(probes.items()):
        now = observe(probe)
        if now == before:
            continue
        what, path = probe.split(" ", 1)
        if what in _GLOBS:
            pattern = json.loads(path)[0 if what == "glob" else 1]
            return Code.FILES_MATCHING_CHANGED(pattern=pattern)
        shown = os.path.relpath(path)
        if before == MISSING:
            return Code.PATH_CREATED(path=shown)
        if now == MISSING:
            return Code.PATH_DELETED(path=shown)
        if what == "list":
            return Code.DIRECTORY_CHANGED(path=shown)
        return Code.FILE_CHANGED(path=shown)
    return None


# -- contents --------------------------------------------------------------------------
def _hash_file(path: str) -> str:
    state = xxhash.xxh3_128()
    with _OPEN(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            state.update(chunk)
    return state.hexdigest()


def file_digest(path: str) -> str:
    """Content digest of ``path`` (``MISSING`` if it does not exist or cannot be read,
    SPECIAL for a named pipe, device or socket, which is never opened).

    Cached by (mtime, size, inode), so touching a file costs a re-hash but
    not a miss, and an unchanged file costs a ``stat``; a file modified in the
    last two seconds is always re-hashed (its next change could keep the
    same timestamp).
    """
    try:
        st = _stat(path)
    except OSError:
        return MISSING
    if not stat_module.S_ISREG(st.st_mode):
        return SPECIAL if not stat_module.S_ISDIR(st.st_mode) else MISSING
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _digests.get(path)
    if cached is not None and cached[0] == stamp and time.time() - st.st_mtime > _RACY_SECONDS:
        return cached[1]
    try:
        digest = _hash_file(path)
    except OSError:
        return MISSING
    _digests[path] = (stamp, digest)
    return digest


def _state(path: str, tree: bool) -> dict[str, bytes | str | None]:
    """``{path: state}`` of one written path, and of everything inside it if ``tree``."""
    try:
        st = _lstat(path)
    except FileNotFoundError:
        return {path: None}
    if stat_module.S_ISLNK(st.st_mode):
        return {path: LINK + _readlink(path)}
    if stat_module.S_ISDIR(st.st_mode):
        found: dict[str, bytes | str | None] = {path: TREE if tree else DIRECTORY}
        if tree:
            with _scandir(path) as entries:
                for entry in entries:
                    found.update(_state(entry.path, entry.is_dir(follow_symlinks=False)))
        return found
    return {path: read_output(path)}


def read_output(path: str) -> bytes | None:
    """The bytes a cell left in a file it wrote (None if it deleted it); raises OSError,
    or ValueError for anything but a regular file (a named pipe would block)."""
    try:
        if not stat_module.S_ISREG(_stat(path).st_mode):
            raise ValueError(f"`{os.path.relpath(path)}` is not a regular file")
        with _OPEN(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def is_state(stored: str) -> bool:
    """Whether an Entry.written value is a state itself rather than a stored file's name."""
    return stored.startswith((DIRECTORY, TREE, LINK))


def _remove(path: str) -> None:
    try:
        st = _lstat(path)
    except FileNotFoundError:
        return
    if stat_module.S_ISDIR(st.st_mode):
        _rmtree(path)
    else:
        os.unlink(path)


def write_back(path: str, data: bytes | str | None) -> None:
    """Put a recorded path back as the cell left it (see :meth:`FileWatch.outputs`): a
    file atomically (temp file + rename), a directory, a symlink, or nothing."""
    if data is None or data == TREE or (isinstance(data, str) and data.startswith(LINK)):
        _remove(path)
    if data is None:
        return
    directory = os.path.dirname(path)
    if isinstance(data, str):
        if data.startswith(LINK):
            os.makedirs(directory, exist_ok=True)
            os.symlink(data[len(LINK) :], path)
            return
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        return
    if os.path.isdir(path) and not os.path.islink(path):
        _rmtree(path)
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
    # MISSING by existence too: file_digest says MISSING for a directory, which exists
    return [
        path
        for path, digest in sorted(recorded.items())
        if (_existence(path) if digest in (EXISTS, MISSING) else file_digest(path)) != digest
    ]


def _existence(path: str) -> str:
    try:
        _lstat(path)
    except OSError:
        return MISSING
    return EXISTS
