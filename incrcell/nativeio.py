"""Files read and written by native code: parquet, SQLite, HDF5, DuckDB, polars...

``pd.read_parquet("t.parquet")`` never calls Python's ``open``: pyarrow opens
the file in C++, and so do SQLite, HDF5, DuckDB and polars.  The wrappers of
:mod:`incrcell.files` cannot see these reads, and a cell restored after the
file gained a row would be stale.  This module sees them in three layers,
active only while a :class:`~incrcell.files.FileWatch` records a cell
(:func:`start` / :func:`stop`, called by the watch; :func:`literal_reads`,
called by the engine when it stores the cell):

1. **The entry points of the data libraries** (:data:`_TABLE`, like the
   effects table): their path arguments are reported to the watch.  Readers
   report reads (a directory: every file under it and its listing; a glob:
   its matches), writers report full writes (a directory target: the files
   the call created or changed in it), handles that can read and write
   (``sqlite3.connect``, ``h5py.File(path, "a")``, ``duckdb.connect``...)
   report a read and take the file's digest (with SQLite's ``-wal`` and
   ``-journal``): if it differs when the cell ends, the cell read and
   modified it, and it is uncacheable.  SQL text given to DuckDB is searched
   for quoted paths, compared before and after the call.  A lazy polars
   query reads its files when it is collected: its plan names them.

   Why wrappers of entry points: they are exact (the path, the mode) and
   cost nothing outside recorded cells.  A module's entry points are wrapped
   by the first recorded cell that finds it imported, and stay wrapped (idle:
   one global read a call) until :func:`restore` (unloading incrcell): putting
   them back after every cell cost 0.1-0.3 ms a cell, most of it in
   ``setattr`` on classes such as ``DataFrame``.  A wrapper keeps the
   original's module and qualified name, which now name it, so pickling and
   fingerprinting by name treat ``from pyarrow.parquet import read_table``
   the same whether it bound the wrapper or the original.  Libraries imported
   later (in a recorded cell or not) are wrapped as soon as they finish
   importing, by a finder at the front of ``sys.meta_path`` that only answers
   for the table's module names (installed by the first recorded cell).

2. **Files the cell leaves open** (``/proc/self/fd`` after the cell, for the
   descriptors it opened): opened read-only, they are reads (a reader
   outside the table that keeps its file open, ``netCDF4.Dataset``); open for
   writing, what is written after the cell cannot be stored: uncacheable.
   Costs one listing of ``/proc/self/fd`` a recorded cell (``files.open_descriptors``).

3. **Files named by string literals** of the cell or of the functions it
   calls, which exist and which the cell did not write: reads.  Conservative
   (a cell is keyed on a file it may not have opened), it covers native
   readers outside the table given a literal path.

What fails safe: a path that cannot be keyed (a remote URL, a directory whose
listing the watch cannot key, a lazy plan whose sources cannot be found)
makes the cell uncacheable with the reason (:func:`refusal`).  Not seen (the
README's limits): native code outside the table that opens and closes a file
whose path is computed at run time; entry points bound by name before they
were wrapped (``from pyarrow.parquet import read_table`` run before the
first recorded cell) and connection methods of libraries other than DuckDB, except
through layers 2 and 3; descriptors whose number was freed and reused during
or just before the cell, and one opened and kept while another closed (their
count and the lowest free number then stay the same: ``files.open_descriptors``).
The process's I/O counters (``/proc/self/io``) cannot single out a cell's
native reads: they also count imports and the kernel's own reads
(``import pandas``: 16 MB; a first ``pq.read_table`` of a 5 kB file: 64 kB),
so they are not used.
"""

from __future__ import annotations

import ast
import functools
import glob
import inspect
import os
import re
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import files
from .imports import AfterImport
from .reasons import Code, Reason

_READ, _WRITE, _OPEN, _SQL, _LAZY = "read", "write", "open", "sql", "lazy"


@dataclass(frozen=True)
class _Spec:
    """One entry point: ``attribute`` (dotted) of ``module``; its path argument is at
    ``position`` (``self`` counts) or named ``keyword``."""

    module: str
    attribute: str
    kind: str
    position: int = 0
    keyword: str = ""
    # (position, keyword, default) of a mode argument: "w" or "x" in it means a full write
    mode: tuple[int, str, str] | None = None
    companions: tuple[str, ...] = ()  # suffixes of files that hold part of the content
    readonly: str = ""  # a keyword that, when true, makes an _OPEN a plain read
    lazy: bool = False  # ``self`` is a lazy query: its sources are read by the call


def _entries(
    module: str, kind: str, names: Iterable[str], position: int, keyword: str, **more: Any
) -> list[_Spec]:
    return [_Spec(module, name, kind, position, keyword, **more) for name in names]


_SQLITE = ("-wal", "-journal")
_TABLE: tuple[_Spec, ...] = (
    # pandas: the readers and writers that hand a path to native code
    *_entries(
        "pandas", _READ, ("read_parquet", "read_feather", "read_orc", "read_spss"), 0, "path"
    ),
    *_entries("pandas", _READ, ("read_stata", "read_sas"), 0, "filepath_or_buffer"),
    _Spec("pandas", "read_hdf", _READ, 0, "path_or_buf"),
    _Spec("pandas", "HDFStore.__init__", _OPEN, 1, "path", mode=(2, "mode", "a")),
    *_entries(
        "pandas",
        _WRITE,
        ("DataFrame.to_parquet", "DataFrame.to_feather", "DataFrame.to_orc", "DataFrame.to_stata"),
        1,
        "path",
    ),
    _Spec("pandas", "core.generic.NDFrame.to_hdf", _OPEN, 1, "path_or_buf", mode=(99, "mode", "a")),
    # pyarrow
    *_entries("pyarrow.parquet", _READ, ("read_table", "read_pandas"), 0, "source"),
    *_entries("pyarrow.parquet", _READ, ("read_metadata", "read_schema"), 0, "where"),
    _Spec("pyarrow.parquet", "ParquetFile.__init__", _READ, 1, "source"),
    _Spec("pyarrow.parquet", "ParquetDataset.__init__", _READ, 1, "path_or_paths"),
    *_entries("pyarrow.parquet", _WRITE, ("write_table", "write_metadata"), 1, "where"),
    _Spec("pyarrow.parquet", "write_to_dataset", _WRITE, 1, "root_path"),
    _Spec("pyarrow.parquet", "ParquetWriter.__init__", _WRITE, 1, "where"),
    _Spec("pyarrow.dataset", "dataset", _READ, 0, "source"),
    _Spec("pyarrow.dataset", "write_dataset", _WRITE, 1, "base_dir"),
    *_entries("pyarrow.feather", _READ, ("read_table", "read_feather"), 0, "source"),
    _Spec("pyarrow.feather", "write_feather", _WRITE, 1, "dest"),
    *_entries("pyarrow.csv", _READ, ("read_csv", "open_csv"), 0, "input_file"),
    _Spec("pyarrow.csv", "write_csv", _WRITE, 1, "output_file"),
    _Spec("pyarrow.json", "read_json", _READ, 0, "input_file"),
    _Spec("pyarrow.orc", "read_table", _READ, 0, "source"),
    _Spec("pyarrow.orc", "ORCFile.__init__", _READ, 1, "source"),
    _Spec("pyarrow.orc", "write_table", _WRITE, 1, "where"),
    _Spec("pyarrow", "memory_map", _OPEN, 0, "path", mode=(1, "mode", "r")),
    _Spec("pyarrow", "input_stream", _READ, 0, "source"),
    _Spec("pyarrow", "output_stream", _WRITE, 0, "source"),
    # databases and scientific formats
    _Spec("sqlite3", "connect", _OPEN, 0, "database", companions=_SQLITE),
    _Spec("sqlite3.dbapi2", "connect", _OPEN, 0, "database", companions=_SQLITE),  # SQLAlchemy's
    _Spec("h5py", "File.__init__", _OPEN, 1, "name", mode=(2, "mode", "r")),
    _Spec("tables", "open_file", _OPEN, 0, "filename", mode=(1, "mode", "r")),
    *_entries(
        "xarray",
        _READ,
        ("open_dataset", "open_dataarray", "load_dataset", "load_dataarray", "open_zarr"),
        0,
        "filename_or_obj",
    ),
    _Spec("xarray", "open_mfdataset", _READ, 0, "paths"),
    *_entries("xarray", _WRITE, ("Dataset.to_netcdf", "DataArray.to_netcdf"), 1, "path"),
    *_entries("xarray", _WRITE, ("Dataset.to_zarr", "DataArray.to_zarr"), 1, "store"),
    _Spec("duckdb", "connect", _OPEN, 0, "database", companions=(".wal",), readonly="read_only"),
    *_entries(
        "duckdb",
        _READ,
        ("read_parquet", "read_csv", "read_json", "from_parquet", "from_csv_auto"),
        0,
        "path_or_buffer",
    ),
    *_entries("duckdb", _SQL, ("sql", "query", "execute", "executemany"), 0, "query"),
    *_entries(
        "duckdb",
        _READ,
        (
            "DuckDBPyConnection.read_parquet",
            "DuckDBPyConnection.read_csv",
            "DuckDBPyConnection.read_json",
            "DuckDBPyConnection.from_parquet",
            "DuckDBPyConnection.from_csv_auto",
        ),
        1,
        "path_or_buffer",
    ),
    *_entries(
        "duckdb",
        _SQL,
        (
            "DuckDBPyConnection.sql",
            "DuckDBPyConnection.query",
            "DuckDBPyConnection.execute",
            "DuckDBPyConnection.executemany",
        ),
        1,
        "query",
    ),
    # polars reads most formats natively, and lazily: a scan reads when collected
    *_entries(
        "polars",
        _READ,
        (
            "read_parquet",
            "scan_parquet",
            "read_csv",
            "scan_csv",
            "read_ipc",
            "scan_ipc",
            "read_ipc_stream",
            "read_ndjson",
            "scan_ndjson",
            "read_json",
            "read_avro",
            "read_parquet_schema",
            "read_delta",
            "scan_delta",
        ),
        0,
        "source",
    ),
    *_entries(
        "polars",
        _WRITE,
        (
            "DataFrame.write_parquet",
            "DataFrame.write_csv",
            "DataFrame.write_ipc",
            "DataFrame.write_ipc_stream",
            "DataFrame.write_ndjson",
            "DataFrame.write_json",
            "DataFrame.write_avro",
            "DataFrame.write_delta",
        ),
        1,
        "file",
    ),
    *_entries(
        "polars",
        _WRITE,
        (
            "LazyFrame.sink_parquet",
            "LazyFrame.sink_csv",
            "LazyFrame.sink_ipc",
            "LazyFrame.sink_ndjson",
        ),
        1,
        "path",
        lazy=True,
    ),
    *_entries(
        "polars",
        _LAZY,
        ("LazyFrame.collect", "LazyFrame.collect_async", "LazyFrame.fetch"),
        0,
        "",
        lazy=True,
    ),
)
_BY_MODULE: dict[str, tuple[_Spec, ...]] = {
    name: tuple(s for s in _TABLE if s.module == name)
    for name in dict.fromkeys(s.module for s in _TABLE)
}
_GLOB = re.compile(r"[*?\[]")
_QUOTED = re.compile(r"'((?:[^']|'')+)'")  # SQL string literals
_SCANNED = re.compile(r"SCAN \[([^\]]*)\]")  # the sources in a polars plan


class _Recording:
    """What the native layers found while one watch was active."""

    def __init__(self, watch: files.FileWatch) -> None:
        self.watch = watch
        self.handles: dict[str, dict[str, str]] = {}  # read-write handle -> digests at the call
        self.refusals: list[Reason] = []
        self.lock = threading.Lock()

    def refuse(self, reason: Reason) -> None:
        with self.lock:
            if reason not in self.refusals:
                self.refusals.append(reason)


_recording: _Recording | None = None
_refusals: weakref.WeakKeyDictionary[files.FileWatch, Reason] = weakref.WeakKeyDictionary()
# module name -> (the module, [(owner, attribute, original, wrapper)]) whose wrappers are in place
_patched: dict[str, tuple[types.ModuleType, list[tuple[Any, str, Any, Any]]]] = {}


# -- start / stop ------------------------------------------------------------------
def start(watch: files.FileWatch) -> None:
    """Watch native file access for ``watch`` until :func:`stop` (called by the watch)."""
    global _recording
    try:
        _recording = _Recording(watch)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
        for name in _BY_MODULE:
            module = sys.modules.get(name)
            if module is not None and (name not in _patched or _patched[name][0] is not module):
                _patch(name, module)
    except Exception:  # watching must never break the user's cell: fail towards a rerun
        if _recording is not None:
            _recording.refuse(Code.NATIVE_UNWATCHED())


def stop(watch: files.FileWatch) -> None:
    """Settle the handles and descriptors the cell left open (the wrappers stay, idle)."""
    global _recording
    recording, _recording = _recording, None
    if recording is None or recording.watch is not watch:
        return
    try:
        _settle(recording)
    except Exception:
        recording.refuse(Code.NATIVE_UNCHECKED())
    if recording.refusals:
        _refusals[watch] = recording.refusals[0]


def restore() -> None:
    """Put every entry point back (when incrcell is unloaded)."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    while _patched:
        _, (_, wrapped) = _patched.popitem()
        for owner, attribute, original, wrapper in wrapped:
            if _own(owner, attribute) is wrapper:
                setattr(owner, attribute, original)


def refusal(watch: files.FileWatch) -> Reason | None:
    """Why what native code did during ``watch`` forbids caching the cell (None if nothing)."""
    return _refusals.get(watch)


def _settle(recording: _Recording) -> None:
    watch = recording.watch
    for path, digests in recording.handles.items():
        if any(files.file_digest(name) != digest for name, digest in digests.items()):
            watch.updates.add(path)  # read and modified through the handle
    for number in files.open_descriptors() - watch.descriptors:
        try:
            path = os.readlink(f"/proc/self/fd/{number}")
            if not path.startswith("/") or not watch._data(path):
                continue  # a socket, a pipe, or not data (IPython's history journal)
            with files._OPEN(f"/proc/self/fdinfo/{number}") as info:
                flags = next(
                    (int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0
                )
        except (OSError, ValueError):
            continue  # closed meanwhile
        if not os.path.isfile(path):
            continue
        if flags & os.O_ACCMODE == os.O_RDONLY:
            watch._opened(path, "r", None)
        else:
            watch._opened(path, "w", None)
            if path in watch.writes:  # a data file, not one the watch ignores
                recording.refuse(Code.FILE_LEFT_OPEN(path=os.path.relpath(path)))


# -- patching ----------------------------------------------------------------------
def _own(owner: Any, attribute: str) -> Any:
    return (
        vars(owner).get(attribute) if isinstance(owner, type) else getattr(owner, attribute, None)
    )


def _patch(name: str, module: types.ModuleType) -> None:
    wrapped = []
    for spec in _BY_MODULE[name]:
        for owner, attribute, original, wrapper in _resolve(spec, module):
            if _own(owner, attribute) is original:
                setattr(owner, attribute, wrapper)
                wrapped.append((owner, attribute, original, wrapper))
    _patched[name] = (module, wrapped)


def _resolve(spec: _Spec, module: types.ModuleType) -> list[tuple[Any, str, Any, Any]]:
    """Where to put the wrapper of ``spec`` in ``module``: [(owner, attribute, original,
    wrapper)], the table's place and the original's home (``__module__`` plus
    ``__qualname__``), which pickle and fingerprint look up."""
    *path, attribute = spec.attribute.split(".")
    owner: Any = module
    try:
        for part in path:
            owner = getattr(owner, part)
        if isinstance(owner, type):  # patch the class that defines it
            owner = next(k for k in owner.__mro__ if attribute in vars(k))
        original = _own(owner, attribute)
    except (AttributeError, StopIteration, ImportError):
        return []
    if original is None or not callable(original):
        return []
    wrapper = _wrap(spec, original)
    places = [(owner, attribute, original, wrapper)]
    home: Any = sys.modules.get(getattr(original, "__module__", None) or "")
    *parts, name = str(getattr(original, "__qualname__", "")).split(".")
    try:
        for part in parts:
            home = getattr(home, part)
    except AttributeError:
        return places
    if home is not None and home is not owner and _own(home, name) is original:
        places.append((home, name, original, wrapper))
    return places


def _wrap(spec: _Spec, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, reporting its files while a cell records; it keeps the original's
    module and qualified name, which now name it: pickles and fingerprints by name
    are the same as the original's."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        recording = _recording
        if recording is None:
            return original(*args, **kwargs)
        try:
            after = _before(recording, spec, args, kwargs)
        except Exception:  # recording must never break the user's call
            recording.refuse(Code.NATIVE_UNSEEN(call=spec.attribute))
            after = None
        result = original(*args, **kwargs)
        if after is not None:
            try:
                after()
            except Exception:
                recording.refuse(Code.NATIVE_UNSEEN(call=spec.attribute))
        return result

    setattr(wrapper, files.ORIGINAL, original)
    return wrapper


def _patch_imported(name: str, module: types.ModuleType) -> None:
    """Wrap a table module's entry points as soon as it is imported (see :data:`_FINDER`)."""
    try:
        _patch(name, module)
    except Exception:
        if _recording is not None:
            _recording.refuse(Code.NATIVE_UNPATCHED(module=name))


#: Installed by the first recorded cell, until :func:`restore`.
_FINDER = AfterImport(_BY_MODULE.__contains__, _patch_imported)


# -- what a call reads and writes --------------------------------------------------
def _argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], position: int, keyword: str, default: Any = None
) -> Any:
    if keyword and keyword in kwargs:
        return kwargs[keyword]
    return args[position] if position < len(args) else default


def _before(
    recording: _Recording, spec: _Spec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], None] | None:
    """Report what the call is about to read; return what to do after it (writes)."""
    if spec.lazy:
        _lazy_sources(recording, spec, args[0] if args else None)
    if spec.kind == _LAZY:
        return None
    value = _argument(args, kwargs, spec.position, spec.keyword)
    if spec.kind == _SQL:
        return _sql(recording, value) if isinstance(value, str) else None
    paths = _paths(recording, spec, value)
    if not paths:
        return None
    kind = spec.kind
    if spec.mode is not None:
        mode = _argument(args, kwargs, *spec.mode)
        if isinstance(mode, str) and ("w" in mode or "x" in mode or "-" in mode):
            kind = _WRITE
        elif mode == "r":
            kind = _READ
    if kind == _OPEN and spec.readonly and kwargs.get(spec.readonly):
        kind = _READ
    if kind == _READ:
        for path in paths:
            _read(recording, spec, path)
        return None
    if kind == _WRITE:
        trees = {path: _tree(path) for path in paths}

        def written() -> None:
            for path, before in trees.items():
                _written(recording, path, before)

        return written
    existing = [path for path in paths if os.path.isfile(path)]  # _OPEN: read and maybe modify
    for path in existing:
        digests = {
            name: files.file_digest(name)
            for name in (path, *(path + suffix for suffix in spec.companions))
        }
        with recording.lock:
            recording.handles.setdefault(path, digests)
        for name, digest in digests.items():
            if digest != files.MISSING:
                recording.watch._opened(name, "r", None)
    created = [path for path in paths if path not in existing]

    def opened() -> None:
        for path in created:
            if os.path.isfile(path):
                recording.watch._opened(path, "w", None)

    return opened


def _paths(recording: _Recording, spec: _Spec, value: Any) -> list[str]:
    """The local paths in a path argument (absolute); a remote one is refused."""
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _paths(recording, spec, item)]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str) or not value or value.startswith(":memory:"):
        return []  # a buffer or file object (its opening was seen), or an in-memory database
    if value.startswith("file:"):
        value = re.sub(r"^file:(//)?", "", value).split("?", 1)[0]
    elif "://" in value:
        recording.refuse(Code.REMOTE_DATA(url=value, call=spec.attribute))
        return []
    return [os.path.abspath(os.path.expanduser(value))]


def _read(recording: _Recording, spec: _Spec, path: str) -> None:
    """A read of ``path``: a file, a directory (its files and listing) or a glob."""
    watch = recording.watch
    if os.path.isdir(path):
        _listing(recording, spec, path)
        for top, _, names in os.walk(path):
            if top != path:
                _listing(recording, spec, top)
            for name in names:
                watch._opened(os.path.join(top, name), "r", None)
    elif not os.path.lexists(path) and _GLOB.search(path):
        _listing(recording, spec, _glob_base(path))
        for match in sorted(glob.glob(path, recursive=True)):
            _read(recording, spec, match)
    else:
        watch._opened(path, "r", None)


def _listing(recording: _Recording, spec: _Spec, directory: str) -> None:
    """The listing of ``directory`` is an input: key it through the watch, else refuse."""
    watch = recording.watch
    watch._opened(directory, "r", None)
    os.listdir(directory)  # through the watch's own wrappers, where it has them
    if not any(
        directory in found
        for found in vars(watch).values()
        if isinstance(found, (set, frozenset, dict))
    ):
        recording.refuse(Code.NATIVE_LISTING(path=os.path.relpath(directory), call=spec.attribute))


def _tree(path: str) -> dict[str, tuple[int, int, int]]:
    """Every file at or under ``path`` with its (mtime, size, inode)."""
    found = {}
    for name in _files_under(path):
        try:
            st = os.stat(name)
        except OSError:
            continue
        found[name] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return found


def _files_under(path: str) -> Iterator[str]:
    if os.path.isdir(path):
        for top, _, names in os.walk(path):
            yield from (os.path.join(top, name) for name in names)
    elif os.path.lexists(path):
        yield path


def _written(recording: _Recording, path: str, before: dict[str, tuple[int, int, int]]) -> None:
    """After a writer: ``path`` itself (a file) is written; in a directory, what changed."""
    watch = recording.watch
    if not os.path.isdir(path):
        if os.path.lexists(path):
            watch._opened(path, "w", None)
        return
    after = _tree(path)
    for name, stamp in after.items():
        if before.get(name) != stamp:
            watch._opened(name, "w", None)
    for name in before.keys() - after.keys():
        watch._opened(name, files._REMOVE, None)


def _sql(recording: _Recording, query: str) -> Callable[[], None] | None:
    """Quoted paths in SQL text: unchanged by the call, reads; created, writes;
    changed, read and modified."""
    spec = _Spec("duckdb", "sql", _SQL)
    candidates = [
        path
        for literal in _QUOTED.findall(query)
        if "/" in literal or "." in literal
        for path in _paths(recording, spec, literal.replace("''", "'"))
    ]
    patterns = [path for path in candidates if not os.path.lexists(path) and _GLOB.search(path)]
    trees = {path: _tree(path) for path in candidates if path not in patterns}
    for pattern in patterns:
        _listing(recording, spec, _glob_base(pattern))
        trees.update((path, _tree(path)) for path in glob.glob(pattern, recursive=True))
    if not trees:
        return None

    def after() -> None:
        watch = recording.watch
        for path, before in trees.items():
            if not before:
                if os.path.lexists(path):
                    _written(recording, path, {})
                continue
            now = _tree(path)
            for name, stamp in before.items():
                if now.get(name) == stamp:
                    watch._opened(name, "r", None)
                else:
                    watch.updates.add(name)
            for name in now.keys() - before.keys():
                watch._opened(name, "w", None)
            if os.path.isdir(path):
                _listing(recording, spec, path)

    return after


def _glob_base(pattern: str) -> str:
    """The directory a glob lists first: the part before its first wildcard."""
    return os.path.dirname(pattern[: _GLOB.search(pattern).start()]) or os.sep  # type: ignore[union-attr]


def _lazy_sources(recording: _Recording, spec: _Spec, frame: Any) -> None:
    """A lazy polars query reads its sources now: the ones its plan names."""
    try:
        plan = frame.explain(optimized=False)
    except Exception:
        recording.refuse(Code.MAYBE_UNNAMED_FILES(call=spec.attribute))
        return
    if "SCAN" not in plan:
        return  # in-memory frames only
    sources = _SCANNED.findall(plan)
    if not sources or plan.count("SCAN") != len(sources):
        recording.refuse(Code.UNNAMED_FILES(call=spec.attribute))
        return
    for listed in sources:
        for name in listed.split(", "):
            if name.startswith("...") or not os.path.lexists(name):
                recording.refuse(Code.UNNAMED_FILES(call=spec.attribute))
                return
            _read(recording, spec, os.path.abspath(name))


# -- paths named in the code ---------------------------------------------------------
# a quoted string on one line (one that could be a path has a dot or a slash in it)
_LITERAL = re.compile(r"""(['"])([^'"\n\\]{1,4096})\1""")


_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})


def _deferred(code: types.CodeType) -> bool:
    """Whether ``code``, defined by code that runs, runs only when called later: a function's
    body (optimised locals), not a class body or a comprehension, which run right away."""
    return bool(code.co_flags & inspect.CO_OPTIMIZED) and code.co_name not in _COMPREHENSIONS


def literal_reads(
    watch: files.FileWatch, source: str, codes: Iterable[types.CodeType] = ()
) -> None:
    """Existing files named by a string literal of the cell (``source``) or of the
    functions it calls (``codes``), which the cell did not write: reads.

    Conservative, for readers outside the table (``netCDF4.Dataset("x.nc")``,
    any C extension given a literal path): the cell is keyed on their content
    whether or not it opened them.  A path computed at run time is not found.
    """
    names: set[str] = set()
    todo = list(codes)
    executed_only: set[int] = set()
    # A cell without a quote has no string literal, hence no string constant of its own
    # to find (names, attributes and modules are not constants; folding only joins
    # literals): its code need not be compiled again.
    if "'" in source or '"' in source:
        try:
            # the code the cell runs itself: not the bodies of the functions it only defines
            # (a cell defining ``load()`` does not read what ``load`` opens; its callers do)
            todo.append(
                compile(
                    source,
                    "<cell>",
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True,
                )
            )
            executed_only = {id(todo[-1])}
        except (SyntaxError, ValueError):  # IPython syntax (``!ls``): every literal of its text
            names = {text for _, text in _LITERAL.findall(source) if "." in text or "/" in text}
    while todo:
        code = todo.pop()
        for constant in code.co_consts:
            if isinstance(constant, str) and ("." in constant or "/" in constant):
                names.add(constant)
            elif isinstance(constant, types.CodeType):
                if id(code) in executed_only and _deferred(constant):
                    continue
                if id(code) in executed_only:
                    executed_only.add(id(constant))
                todo.append(constant)
    for name in names:
        if len(name) > 4096 or "\0" in name or name.strip(".") == "":
            continue
        path = os.path.abspath(os.path.expanduser(name))
        if path not in watch.writes and path not in watch.existed and os.path.isfile(path):
            watch._opened(path, "r", None)
