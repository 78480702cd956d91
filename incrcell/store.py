"""The content-addressed on-disk cache of cell executions.

Three kinds of files, all immutable once written and all in one framing:

* entries (``v1/entries/ab/<cell key>``): what one cell execution left
  behind, as JSON: which values it bound, its outputs, ...
* values (``v1/values/ab/<value digest>``): one pickled value each, shared
  by every entry that bound an identical value;
* notes (``v1/notes/ab/<xxh3 of name>``): small JSON documents, e.g. the key
  components a cell last recorded, to explain a later miss.

How it fails safe:

* A file is only ever interpreted after its xxh3-128 checksum (truncation,
  bit rot) and its HMAC signature (anyone without our key) verify, and only
  under the name it was written for: a corrupt, foreign, misplaced or
  unreadable file is a miss (:meth:`FileStore.get` warns with one line of
  :class:`CacheWarning` and returns None; :meth:`FileStore.get_value` raises
  :class:`StoreError`), never a wrong value. A file that fails verification
  is removed so that the next write can replace it.
* Writes go to a temp file in the target directory and are renamed into
  place, so readers see a complete file or none, concurrent writers of the
  same file each leave a complete one, and a crash leaves at most a temp
  file, swept up later. There is no fsync: a process crash loses nothing
  (the page cache survives it) and what an OS crash or power cut can leave
  behind (empty or zero-filled files) fails the checksum. Paying a full
  device flush on every cell execution would buy nothing more.
* An entry is only written once its values are in, and :meth:`FileStore.get`
  checks that they still are. :meth:`FileStore.has_value` verifies a value's
  checksum (once per store), so that a value whose file went bad is written
  anew instead of being deduplicated against and referenced by a new entry.

File layout (little endian); parts start at 64-byte-aligned offsets so that
numpy arrays restored from them are aligned::

    0   8s  MAGIC b"INCRCELL"
    8   u16 format version
    10  u8  kind        1 entry, 2 value, 3 note
    11  u8  method      values: 1 pickle (protocol 5, notebook code nested by value); else 0
    12  u32 part count  n
    16  u64 file size
    24  16s xxh3-128 of bytes [0:24] and [72:]
    40  32s HMAC-SHA256 of bytes [0:24] and [72:]
    72  n * (u64 length, u64 flags)   flags bit 0: read-only buffer
    ... parts: the file's own name (UTF-8), then the body: JSON for entries
        and notes; the pickle stream and its out-of-band buffers for values.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import errno
import hmac
import json
import os
import re
import shutil
import stat as stat_module
import struct
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import xxhash

from incrcell import serialise
from incrcell.serialise import Serialised
from incrcell.signing import Signer, signing_key

FORMAT_VERSION = 3

MAGIC = b"INCRCELL"
_PREFIX = struct.Struct("<8sHBBIQ")  # magic, version, kind, method, part count, file size
_CHECKSUM = slice(24, 40)
_SIGNATURE = slice(40, 72)
_HEADER_SIZE = 72
_PART = struct.Struct("<QQ")  # length, flags
_READONLY = 1
_ALIGN = 64
_PADDING = bytes(_ALIGN)

_ENTRY, _VALUE, _NOTE = 1, 2, 3
_KIND_DIRS = {_ENTRY: "entries", _VALUE: "values", _NOTE: "notes"}
_METHODS = {"pickle": 1}  # serialise.Serialised.method -> its code in the header
_METHOD_NAMES = {code: name for name, code in _METHODS.items()}

_NAME = re.compile(r"[0-9a-f]{8,128}")  # keys and digests: lowercase hex
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600.0

_T = TypeVar("_T")


class CacheWarning(UserWarning):
    """A cache file could not be used; the cell runs instead."""


class StoreError(Exception):
    """A value could not be read or written; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class Entry:
    """What one cell execution left behind, as JSON-serialisable data (never pickled itself)."""

    key: str  # hex cell key
    source: str  # the cell's raw source (for display in status/why)
    variables: dict[str, str]  # name -> content digest (hex) of the value it bound
    deleted: list[str]  # names the cell unbound
    outputs: list[dict]  # output events in order (JSON dicts; opaque to the store)
    result: str | None  # content digest of the cell's Out value, if any
    duration: float  # seconds the cell took to run
    created: float  # time.time() when recorded
    components: dict  # what went into the key (opaque JSON, for explaining misses)
    # notebook definitions (functions, classes) the values refer to by name, with the
    # digest they had when recorded: a restore needs exactly those (see serialise)
    requires: dict[str, str] = dataclasses.field(default_factory=dict)
    # files the cell read, with the content digest they had (see files.py), and the
    # working directory they were found from (relative paths resolve against it)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str = ""
    # the stored value (see Store.put_value) holding ``({name: value}, Out value, {generator:
    # state after}, {interpreter item: value after})``: all in one pickle, so that objects shared between them stay shared
    bundle: str | None = None
    # global random generators the cell drew from (see randomness.py) -> digest of the state
    # it needs before (None: it seeded the generator before drawing)
    random: dict[str, str | None] = dataclasses.field(default_factory=dict)
    # name -> the packages hashing its value noted (ValueHasher.packages_of), so that a
    # restored value's digest can key the next cells without hashing it again
    packages: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # paths the cell wrote: path -> stored value holding a file's bytes (written back on a
    # hit), files.MISSING for a path it deleted, or a directory's or symlink's state
    # (files.DIRECTORY, TREE, LINK + target)
    written: dict[str, str] = dataclasses.field(default_factory=dict)
    # names the cell changed through objects they share with what it changed, not inputs
    # (``m`` when it writes ``col = m[:, 1]`` in place): name -> digest of their content
    # before it ran, which a restore requires (a restore brings their content after back)
    through: dict[str, str] = dataclasses.field(default_factory=dict)
    # directory listings, globs and existence/size/stat checks it made ("<what> <path>", see
    # files.observe) -> what they showed: inputs like the files it read
    probes: dict[str, str] = dataclasses.field(default_factory=dict)
    # the source of the in-memory files (IPython cells) its functions were compiled from:
    # filename -> text, registered in linecache on a restore (see engine.code_sources)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    # interpreter state the cell changed (see interpreter.py) -> digest of its value before,
    # which a restore needs; the values after are the fourth element of the bundle
    interpreter: dict[str, str] = dataclasses.field(default_factory=dict)

    def digests(self) -> set[str]:
        """The stored values this entry needs."""
        found = {digest for digest in self.written.values() if _NAME.fullmatch(digest)}
        if self.bundle is not None:
            found.add(self.bundle)
        return found


class Store(ABC):
    """Where cell executions are cached: the interface every backend implements."""

    @abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry for ``key``; None if absent or unusable (warns, never raises)."""

    @abstractmethod
    def put(self, entry: Entry) -> None:
        """Record ``entry``, whose values must already be stored; raises StoreError."""

    @abstractmethod
    def hit(self, key: str) -> bool:
        """Cheap existence check: ``get`` may still find the entry unusable."""

    @abstractmethod
    def has_value(self, digest: str) -> bool:
        """Whether an intact value is stored under ``digest`` (so it need not be written)."""

    @abstractmethod
    def put_value(self, digest: str, value: Serialised) -> int:
        """Store a value; returns bytes written, 0 if it was already there. Raises StoreError."""

    @abstractmethod
    def get_value(self, digest: str, resolve: Callable[[str], object] | None = None) -> object:
        """The value stored under ``digest``; raises StoreError if it can't be had."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> int:
        """Delete entries, then the values no entry needs any more; returns entries deleted."""

    @abstractmethod
    def clear(self) -> None:
        """Delete everything."""

    @abstractmethod
    def size(self) -> int:
        """Bytes the cache occupies."""

    @abstractmethod
    def get_note(self, name: str) -> dict | None:
        """The note called ``name``; None if absent or unusable (warns, never raises)."""

    @abstractmethod
    def put_note(self, name: str, data: dict) -> None:
        """Record a small JSON document; raises StoreError."""


class _Unusable(Exception):
    """A file that is not a valid, authentic cache file of the kind and name asked for."""


# Reading a large file overlaps with hashing and signing the part already read.
_READ_CHUNK = 32 << 20
_HASHING = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="incrcell-verify")


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _frame(
    kind: int, method: int, name: str, body: Sequence[bytes | memoryview], signer: Signer
) -> tuple[list[bytes | memoryview], int]:
    """The chunks of a cache file, in write order, and its size."""
    parts = [memoryview(part).cast("B") for part in (name.encode(), *body)]
    table = b"".join(_PART.pack(part.nbytes, _READONLY if part.readonly else 0) for part in parts)
    chunks: list[bytes | memoryview] = [table]
    end = _HEADER_SIZE + len(table)
    for part in parts:
        start = _aligned(end)
        if start > end:
            chunks.append(_PADDING[: start - end])
        chunks.append(part)
        end = start + part.nbytes
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, kind, method, len(parts), end)
    checksum = xxhash.xxh3_128(prefix)
    for chunk in chunks:
        checksum.update(chunk)
    header = prefix + checksum.digest() + signer.sign(prefix, *chunks)
    return [header, *chunks], end


def _check_header(header: memoryview | bytes, file_size: int) -> tuple[int, int, int]:
    """The (kind, method, part count) of a file whose first bytes are ``header``.

    Only checks what the fixed-size prefix says about the file as a whole.
    """
    if len(header) < _HEADER_SIZE:
        raise _Unusable("is corrupt (truncated)")
    magic, version, kind, method, count, size = _PREFIX.unpack_from(header)
    if magic != MAGIC:
        raise _Unusable("is corrupt (not an incrcell cache file)")
    if version != FORMAT_VERSION:
        raise _Unusable(f"is corrupt (format version {version}, expected {FORMAT_VERSION})")
    if size != file_size:
        raise _Unusable("is corrupt (truncated)" if size > file_size else "is corrupt (trailing bytes)")
    return kind, method, count


class _Digests:
    """The checksum and the signature of a file's signed bytes, fed in order.

    The signed bytes are the prefix and everything after the header (the
    checksum and signature fields themselves are skipped).
    """

    def __init__(self, signer: Signer) -> None:
        self.checksum = xxhash.xxh3_128()
        self.mac = signer.mac()

    def update(self, chunk: memoryview) -> None:
        self.checksum.update(chunk)
        self.mac.update(chunk)


def _unframe(data: memoryview, kind: int, name: str, signer: Signer,
             digests: _Digests | None = None) -> tuple[int, list[memoryview]]:
    """Check a whole file's integrity, authenticity and identity; returns (method, body parts).

    ``digests``: those of ``data``'s signed bytes if the caller computed them
    already (see :func:`_read`).  Only the fixed-size prefix is looked at
    before the checksum and the signature have verified; nothing else is
    interpreted until then.
    """
    file_kind, method, count = _check_header(data, len(data))
    if digests is None:
        digests = _Digests(signer)
        digests.update(data[: _PREFIX.size])
        digests.update(data[_HEADER_SIZE:])
    if digests.checksum.digest() != data[_CHECKSUM]:
        raise _Unusable("is corrupt (checksum mismatch)")
    if not hmac.compare_digest(digests.mac.digest(), bytes(data[_SIGNATURE])):
        raise _Unusable("signature does not verify (written with another signing key)")
    if file_kind != kind:
        raise _Unusable("is corrupt (a different kind of cache file)")
    end = _HEADER_SIZE + count * _PART.size
    if end > len(data):
        raise _Unusable("is corrupt (inconsistent part table)")
    parts = []
    for index in range(count):
        length, flags = _PART.unpack_from(data, _HEADER_SIZE + index * _PART.size)
        start = _aligned(end)
        end = start + length
        part = data[start:end]
        parts.append(part.toreadonly() if flags & _READONLY else part)
    if count == 0 or end != len(data):
        raise _Unusable("is corrupt (inconsistent part table)")
    if parts[0] != name.encode():
        raise _Unusable("is corrupt (stored under the wrong name)")
    return method, parts[1:]


def _aligned_buffer(size: int) -> memoryview:
    """A writeable buffer of ``size`` bytes whose start is 64-byte aligned in memory."""
    raw = bytearray(size + _ALIGN)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % _ALIGN
    return memoryview(raw)[start : start + size]


def _read(path: str, signer: Signer) -> tuple[memoryview, tuple[int, int], _Digests | None]:
    """The whole file, read into a fresh buffer, its identity, and its digests.

    A large file is read in chunks while a worker thread hashes and signs the
    chunks already read (both release the GIL), so verifying costs little
    more than reading.  The digests are None if the file is too short to
    have a header (``_unframe`` then says it is truncated).

    Not mmap: the checksum reads every byte anyway, and a mapping of a file
    another process truncates kills the kernel with SIGBUS.
    """
    with open(path, "rb", buffering=0, opener=_regular_file) as file:
        stat = os.fstat(file.fileno())
        try:
            data = _aligned_buffer(stat.st_size)
        except MemoryError:  # a huge value on a small machine, or a huge stray file
            raise OSError(errno.ENOMEM, "too large for the memory available") from None
        done = _read_into(file, data[:_HEADER_SIZE])
        if done < _HEADER_SIZE:
            return data[:done], (stat.st_dev, stat.st_ino), None
        digests = _Digests(signer)
        digests.update(data[: _PREFIX.size])
        pending = None
        while done < len(data):
            count = _read_into(file, data[done: done + _READ_CHUNK])
            if not count:
                break
            chunk = data[done: done + count]
            done += count
            if len(data) <= _READ_CHUNK:
                digests.update(chunk)
                continue
            if pending is not None:
                pending.result()
            pending = _HASHING.submit(digests.update, chunk)
        if pending is not None:
            pending.result()
    return data[:done], (stat.st_dev, stat.st_ino), digests


def _regular_file(path: str, flags: int) -> int:
    """The ``opener`` of every cache file read: a descriptor, unless it is not a regular file.

    Opened non-blocking, so that a named pipe, a device or a socket put where a
    cache file should be never hangs the kernel: it is refused like an
    unreadable file (a miss with one line), before anything is read from it.
    """
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_into(file: Any, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``file`` as far as the file goes; returns the bytes read."""
    done = 0
    while done < len(buffer):
        count = file.readinto(buffer[done:])
        if not count:
            break
        done += count
    return done


def _check_integrity(path: str, kind: int) -> None:
    """Check a file's checksum, reading it in chunks rather than holding it in memory.

    Raises _Unusable (after removing the file) if it is corrupt, OSError if
    it can't be read.
    """
    with open(path, "rb", buffering=0, opener=_regular_file) as file:
        stat = os.fstat(file.fileno())
        header = file.read(_HEADER_SIZE)
        try:
            if _check_header(header, stat.st_size)[0] != kind:
                raise _Unusable("is corrupt (a different kind of cache file)")
            checksum = xxhash.xxh3_128(header[: _PREFIX.size])
            chunk = memoryview(bytearray(1 << 22))
            while count := file.readinto(chunk):
                checksum.update(chunk[:count])
            if checksum.digest() != header[_CHECKSUM]:
                raise _Unusable("is corrupt (checksum mismatch)")
        except _Unusable:
            _remove_if_same(path, (stat.st_dev, stat.st_ino))
            raise


def _remove_if_same(path: str, identity: tuple[int, int]) -> None:
    """Remove the file at ``path`` if it is still the one that was read.

    A concurrent writer may have replaced a bad file with a good one since.
    """
    with suppress(OSError):
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) == identity:
            os.unlink(path)


def _write_all(fd: int, chunk: bytes | memoryview) -> None:
    view = memoryview(chunk).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _json_bytes(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _json_body(body: list[memoryview]) -> object:
    try:
        return json.loads(bytes(body[0])) if len(body) == 1 else None
    except ValueError:
        return None


def _parse_note(method: int, body: list[memoryview]) -> dict:
    data = _json_body(body)
    if not isinstance(data, dict):
        raise _Unusable("is corrupt (not a note)")
    return data


def _parse_value(method: int, body: list[memoryview]) -> tuple[str, memoryview, list[memoryview]]:
    if method not in _METHOD_NAMES or not body:
        raise _Unusable("is corrupt (not a value)")
    return _METHOD_NAMES[method], body[0], body[1:]


def _parse_entry(method: int, body: list[memoryview]) -> Entry:
    """An Entry from its file's body, refusing anything that doesn't have the right shape."""
    data = _json_body(body)
    fields = {field.name for field in dataclasses.fields(Entry)}
    if not isinstance(data, dict) or data.keys() != fields:
        raise _Unusable("is corrupt (not an entry)")
    entry = Entry(**data)
    shapes = [
        isinstance(entry.key, str),
        isinstance(entry.source, str),
        isinstance(entry.variables, dict)
        and all(
            isinstance(name, str) and isinstance(digest, str) for name, digest in entry.variables.items()
        ),
        isinstance(entry.deleted, list) and all(isinstance(name, str) for name in entry.deleted),
        isinstance(entry.outputs, list) and all(isinstance(output, dict) for output in entry.outputs),
        entry.result is None or isinstance(entry.result, str),
        entry.bundle is None or isinstance(entry.bundle, str),
        isinstance(entry.duration, (int, float)),
        isinstance(entry.created, (int, float)),
        isinstance(entry.components, dict),
        isinstance(entry.requires, dict)
        and all(isinstance(name, str) and isinstance(d, str) for name, d in entry.requires.items()),
        isinstance(entry.files, dict)
        and all(isinstance(path, str) and isinstance(d, str) for path, d in entry.files.items()),
        isinstance(entry.cwd, str),
        isinstance(entry.random, dict) and all(
            isinstance(name, str) and (d is None or isinstance(d, str))
            for name, d in entry.random.items()),
        isinstance(entry.packages, dict) and all(
            isinstance(name, str) and isinstance(p, list) and all(isinstance(t, str) for t in p)
            for name, p in entry.packages.items()),
        isinstance(entry.written, dict)
        and all(isinstance(path, str) and isinstance(d, str) for path, d in entry.written.items()),
        isinstance(entry.probes, dict)
        and all(isinstance(probe, str) and isinstance(d, str) for probe, d in entry.probes.items()),
        isinstance(entry.through, dict)
        and all(isinstance(name, str) and isinstance(d, str) for name, d in entry.through.items()),
        isinstance(entry.sources, dict)
        and all(isinstance(path, str) and isinstance(t, str) for path, t in entry.sources.items()),
        isinstance(entry.interpreter, dict)
        and all(isinstance(i, str) and isinstance(d, str) for i, d in entry.interpreter.items()),
    ]
    if not all(shapes) or not all(_NAME.fullmatch(digest) for digest in entry.digests()):
        raise _Unusable("is corrupt (not an entry)")
    return entry


def _short(name: str) -> str:
    return name[:8] + "…" if len(name) > 8 else name


class FileStore(Store):
    """A :class:`Store` in a local directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike, signer: Signer | None = None) -> None:
        """Open (creating it, mode 0700) the cache at ``root``.

        ``signer`` defaults to one with :func:`signing_key`, which may raise
        OSError if no key can be read or created.
        """
        self._signer = signer if signer is not None else Signer(signing_key())
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._base = os.path.join(os.fspath(root), f"v{FORMAT_VERSION}")
        self._intact: set[str] = set()  # values whose checksum has verified (see has_value)
        self._directories: set[str] = set()  # shard directories known to exist

    # -- paths ----------------------------------------------------------------

    def _path(self, kind: int, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a hex key or digest: {name!r}")
        return os.path.join(self._base, _KIND_DIRS[kind], name[:2], name)

    def _note_path(self, name: str) -> str:
        return self._path(_NOTE, xxhash.xxh3_128_hexdigest(name.encode()))

    # -- reading --------------------------------------------------------------

    def _load(self, kind: int, name: str, parse: Callable[[int, list[memoryview]], _T]) -> _T:
        """Read, verify and parse one file; removes it if it is corrupt or not authentic.

        Raises FileNotFoundError if absent, other OSError if unreadable,
        _Unusable if corrupt or not authentic.
        """
        path = self._note_path(name) if kind == _NOTE else self._path(kind, name)
        data, identity, digests = _read(path, self._signer)
        try:
            return parse(*_unframe(data, kind, name, self._signer, digests))
        except _Unusable:
            _remove_if_same(path, identity)
            raise

    def get(self, key: str) -> Entry | None:
        what = f"cache entry {_short(key)}"
        try:
            entry = self._load(_ENTRY, key, _parse_entry)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _warn(f"{what} cannot be read ({exc.strerror or exc})")
            return None
        except _Unusable as exc:
            _warn(f"{what} {exc}")
            return None
        if not all(os.path.exists(self._path(_VALUE, digest)) for digest in entry.digests()):
            with suppress(OSError):
                os.unlink(self._path(_ENTRY, key))
            _warn(f"{what} refers to a value no longer in the cache")
            return None
        return entry

    def hit(self, key: str) -> bool:
        return os.path.exists(self._path(_ENTRY, key))

    def has_value(self, digest: str) -> bool:
        """Whether an intact value is stored under ``digest``, so it need not be written.

        The first time per store a value's file is read through to verify its
        checksum (a fraction of what re-serialising and writing it would
        cost); a corrupt file is removed and reported absent, so that the value
        is written anew rather than referenced by a fresh entry. After that, an
        existence check. (The signature is only checked when the value is
        read: a file with a foreign signature counts as present here.)
        """
        path = self._path(_VALUE, digest)
        if digest in self._intact:
            return os.path.exists(path)
        try:
            _check_integrity(path, _VALUE)
        except (OSError, _Unusable):
            return False
        self._intact.add(digest)
        return True

    def get_value(self, digest: str, resolve: Callable[[str], object] | None = None) -> object:
        """The value under ``digest``, its arrays writeable unless they were read-only.

        ``resolve`` supplies notebook code the value refers to by name (see serialise.loads).

        Raises StoreError if absent, unreadable, corrupt, not authentic or not
        loadable here (e.g. a module is missing). It does not warn: the caller
        decides what happens instead and tells the user, with ``reason``.
        """
        what = f"cached value {_short(digest)}"
        try:
            method, stream, buffers = self._load(_VALUE, digest, _parse_value)
        except FileNotFoundError:
            raise StoreError(f"{what} is not in the cache") from None
        except OSError as exc:
            raise StoreError(f"{what} cannot be read ({exc.strerror or exc})") from None
        except _Unusable as exc:
            raise StoreError(f"{what} {exc}") from None
        self._intact.add(digest)
        try:
            return serialise.loads(method, stream, buffers, resolve)
        except Exception as exc:  # whatever a reducer raises: this value can't be had here
            raise StoreError(f"{what} cannot be loaded ({_describe(exc)})") from exc

    def get_note(self, name: str) -> dict | None:
        what = f"cache note {name!r}"
        try:
            return self._load(_NOTE, name, _parse_note)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _warn(f"{what} cannot be read ({exc.strerror or exc})", instead="ignoring it")
        except _Unusable as exc:
            _warn(f"{what} {exc}", instead="ignoring it")
        return None

    # -- writing --------------------------------------------------------------

    def _write(self, path: str, chunks: Sequence[bytes | memoryview], what: str) -> None:
        """Atomically create or replace ``path``; raises StoreError and leaves nothing behind.

        KeyboardInterrupt and other BaseExceptions also clean up, then propagate as they are.
        """
        directory = os.path.dirname(path)
        tmp = None
        try:
            if directory not in self._directories:  # a syscall or three saved per file
                os.makedirs(directory, mode=0o700, exist_ok=True)
                self._directories.add(directory)
            try:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
            except FileNotFoundError:  # removed since (clear(), or another process)
                self._directories.clear()
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                with suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, Exception):
                raise StoreError(f"{what} could not be written ({_describe(exc)})") from exc
            raise

    def put(self, entry: Entry) -> None:
        what = f"cache entry {_short(entry.key)}"
        path = self._path(_ENTRY, entry.key)
        missing = [digest for digest in entry.digests() if not os.path.exists(self._path(_VALUE, digest))]
        if missing:
            raise StoreError(f"{what} refers to value {_short(missing[0])}, which is not in the cache")
        try:
            # shallow: asdict() would deep-copy every output first, for nothing
            body = _json_bytes({f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)})
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{what} is not JSON-serialisable ({exc})") from exc
        self._write(path, _frame(_ENTRY, 0, entry.key, [body], self._signer)[0], what)

    def put_value(self, digest: str, value: Serialised) -> int:
        """Store a value unless an intact file for ``digest`` is already there (dedupe).

        Values are content-addressed: the file under a digest holds the same
        value whoever wrote it, so an existing intact file is kept as it is.
        """
        path = self._path(_VALUE, digest)
        if self.has_value(digest):
            return 0
        what = f"cached value {_short(digest)}"
        try:
            chunks, size = _frame(
                _VALUE, _METHODS[value.method], digest, [value.stream, *value.buffers], self._signer
            )
        except Exception as exc:
            raise StoreError(f"{what} could not be written ({_describe(exc)})") from exc
        self._write(path, chunks, what)
        self._intact.add(digest)
        return size

    def put_note(self, name: str, data: dict) -> None:
        what = f"cache note {name!r}"
        try:
            body = _json_bytes(data)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{what} is not JSON-serialisable ({exc})") from exc
        self._write(self._note_path(name), _frame(_NOTE, 0, name, [body], self._signer)[0], what)

    # -- housekeeping ---------------------------------------------------------

    def _files(self, kind: int) -> Iterator[os.DirEntry]:
        """Every cache file of one kind, removing temp files abandoned by killed writers on the way."""
        stale = time.time() - _STALE_TMP_SECONDS
        try:
            shards = [
                shard.path
                for shard in os.scandir(os.path.join(self._base, _KIND_DIRS[kind]))
                if shard.is_dir(follow_symlinks=False)
            ]
        except FileNotFoundError:
            return
        for shard in shards:
            try:
                files = list(os.scandir(shard))
            except FileNotFoundError:
                continue
            for file in files:
                if not file.name.startswith(_TMP_PREFIX):
                    yield file
                    continue
                with suppress(OSError):
                    if file.stat(follow_symlinks=False).st_mtime < stale:
                        os.unlink(file.path)

    def delete(self, keys: Iterable[str]) -> int:
        deleted = 0
        for key in keys:
            with suppress(FileNotFoundError):
                os.unlink(self._path(_ENTRY, key))
                deleted += 1
        self._collect()
        return deleted

    def _collect(self) -> None:
        """Remove unusable entries, entries whose values are gone, and values no entry needs.

        If some entry can't be read at all (permissions), what it needs is
        unknown and no value is removed.
        """
        values = {file.name: file.path for file in self._files(_VALUE) if _NAME.fullmatch(file.name)}
        needed: set[str] = set()
        complete = True
        for file in self._files(_ENTRY):
            if not _NAME.fullmatch(file.name):
                continue  # not ours: leave it alone
            try:
                digests = self._load(_ENTRY, file.name, _parse_entry).digests()
            except FileNotFoundError:
                continue
            except OSError:
                complete = False
                continue
            except _Unusable:
                continue  # _load removed it
            if digests <= values.keys():
                needed |= digests
            else:
                with suppress(OSError):
                    os.unlink(file.path)
        if complete:
            for digest in values.keys() - needed:
                with suppress(OSError):
                    os.unlink(values[digest])

    def clear(self) -> None:
        """Delete every file of this format version (best effort under concurrent writers)."""
        shutil.rmtree(self._base, ignore_errors=True)

    def size(self) -> int:
        total = 0
        for kind in _KIND_DIRS:
            for file in self._files(kind):
                with suppress(OSError):
                    total += file.stat(follow_symlinks=False).st_size
        return total


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {serialise.one_line(exc)}"


def _warn(reason: str, instead: str = "running the cell instead") -> None:
    """One line for the user, attributed to the caller of the public method."""
    warnings.warn(f"incrcell: {reason}; {instead}.", CacheWarning, stacklevel=3)
