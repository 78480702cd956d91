"""The cache store: every policy above the bytes, the same for every backend.

Three kinds of objects, all immutable once written and all framed by
:mod:`~incrcell.store.codec`:

* entries (``entries/ab/<cell key>``): what one cell execution left
  behind, as JSON (:class:`~incrcell.store.entry.Entry`);
* values (``values/ab/<value digest>``): one serialised value each, shared
  by every entry that bound an identical value (stored once, counted once);
  a small value (:data:`INLINE_MAX` bytes at most) instead travels inside the
  file of the entry that needs it, so that a trivial cell costs one file;
* notes (``notes/ab/<xxh3 of name>``): small JSON documents, e.g. the key
  components a cell last recorded, to explain a later miss.

How it fails safe:

* Nothing is interpreted before its checksum and its signature verify, and
  only under the name it was written for; a corrupt, foreign, misplaced or
  unreadable object is a miss (:meth:`Store.get` warns with one line of
  :class:`CacheWarning` and returns None; :meth:`Store.get_value` raises
  :class:`StoreError`), never a wrong value, and what fails verification is
  removed so that the next write can replace it.  The store hands out
  verified bytes, never objects: deserialising is the caller's.
* An entry is only written once its values are in, and :meth:`Store.get`
  checks that they still are.  :meth:`Store.has_value` verifies a value's
  checksum *and signature* (once per store) before a new entry may refer to
  it, so deduplication never references a value the current key rejects.
* The size is bounded (:attr:`Store.cap`): when a write takes the cache over
  it, a background thread evicts the least recently used entries (a hit
  counts as a use; this process's entries, the notebook being worked on, go
  last), and the values no remaining entry needs.  Values written or
  deduplicated against in the last minutes are never collected, so an entry
  being recorded by another process never loses its values; a value evicted
  between a lookup and its load is a miss.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import io
import os
import queue
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import suppress
from typing import Protocol, TypeVar

import xxhash

from .backend import Backend, Listing
from .behind import BEHIND, Settled, on_writer
from .codec import (
    ENTRY,
    HEADER_SIZE,
    KINDS,
    NOTE,
    VALUE,
    Digest,
    Unusable,
    aligned_buffer,
    check_header,
    check_signer,
    digest_of,
    frame,
    name_in,
    parts,
    resealed,
    unframe,
)
from .entry import NAME, Entry, entry_bytes, inline_parts, json_body, json_bytes, parse_entry
from .remote import Remote, RemoteDown, RemoteStatus, note_version
from .signing import Signer, signing_key, trusted_from_env

#: The cap when neither max_size nor a tenth of the free space says less.
DEFAULT_MAX_SIZE = 10 * 10**9
#: An automatic collection evicts down to this fraction of the cap, so that it
#: does not run again at the next write.
_LOW_WATER = 0.9
#: Values written or deduplicated against this recently are never collected:
#: an entry that refers to them may be being written by another process.
_GRACE_SECONDS = 600.0
#: How long the size estimate (last measurement + our own writes) stands before
#: the next write has it measured again, to count other processes' writes.
_REMEASURE_SECONDS = 60.0
#: How often writes have entries older than max_age looked for (it reads every entry).
_AGE_CHECK_SECONDS = 3600.0

#: What :meth:`Store._upload` returns when the object is in the remote afterwards.
_UP = ("uploaded", "already")
#: Versions of a remote note tried, newest first, before giving up on it.
_NOTE_TRIES = 3

_METHODS = {"pickle": 1}  # Payload.method -> its code in the header
_METHOD_NAMES = {code: name for name, code in _METHODS.items()}

# Reading a large file overlaps with hashing and signing the part already read.
_READ_CHUNK = 32 << 20
_HASHING = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="incrcell-verify")
#: A value this small (stream and buffers) goes inside its entry's file (see Store.put).
INLINE_MAX = 64 << 10
# Small values kept for get_value after their entries were read or written: a bound
# (64 KiB each at most; the last entry's are always kept), for entries never restored.
# A value forgotten is a miss, never a wrong value.
_INLINE_KEPT = 64
# A file this large is mapped rather than read where the backend can (see Store._read):
# below it, a read into a fresh buffer costs less than setting up a mapping.
_MAP_MIN = 256 << 10
# A value this large is written behind where the store may (see .behind): below it, the
# copy and the hand-over cost about what writing it in the cell does.
_BEHIND_MIN = 1 << 20

_T = TypeVar("_T")


class CacheWarning(UserWarning):
    """A cache file could not be used; the cell runs instead."""


class StoreError(Exception):
    """A value could not be read or written; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Payload(Protocol):
    """A serialised value as the store keeps it: a method name, a stream, out-of-band buffers.

    Read-only members, so that any object holding such attributes is one (``serialise.Serialised``
    holds ``bytes`` and a ``list``).
    """

    @property
    def method(self) -> str: ...
    @property
    def stream(self) -> bytes | memoryview: ...
    @property
    def buffers(self) -> Sequence[memoryview]: ...


@dataclasses.dataclass
class Stored:
    """A value's verified bytes (see :meth:`Store.get_value`); its buffers are writeable
    unless they were read-only when stored."""

    method: str
    stream: memoryview
    buffers: list[memoryview]


@dataclasses.dataclass
class EntryInfo:
    """One entry as the housekeeping sees it."""

    key: str
    source: str
    size: int  # its file and every value it needs (a value it shares counts for each entry)
    created: float
    used: float
    values: frozenset[str]


@dataclasses.dataclass
class Inventory:
    """Everything in the cache, verified, with sizes and last uses (see :meth:`Store.inventory`)."""

    entries: list[EntryInfo]
    values: dict[str, Listing]  # digest -> its object
    notes: list[Listing]
    unreadable: list[tuple[str, str]]  # entries that could not be read: what they need is unknown
    removed: list[tuple[str, str]]  # (object, why) removed on the way: corrupt, foreign, broken
    listings: dict[str, Listing]  # entry key -> its object

    @property
    def size(self) -> int:
        return (
            sum(item.size for item in self.listings.values())
            + sum(item.size for item in self.values.values())
            + sum(item.size for item in self.notes)
        )


@dataclasses.dataclass
class Usage:
    """What the cache holds, from a listing alone (see :meth:`Store.usage`)."""

    size: int
    cap: int
    entries: int
    values: int
    notes: int
    oldest_use: float | None  # of an entry
    newest_use: float | None


@dataclasses.dataclass
class Collection:
    """What :meth:`Store.gc` removed (or would remove, on a dry run)."""

    entries: int = 0
    values: int = 0
    notes: int = 0
    freed: int = 0
    size_before: int = 0
    size_after: int = 0
    removed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (object, why)
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # left in place


def _object(kind: int, name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"not a hex key or digest: {name!r}")
    return f"{KINDS[kind]}/{name[:2]}/{name}"


def _note_hash(name: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(bytes(name))


def _note_object(name: str) -> str:
    return _object(NOTE, _note_hash(name.encode()))


class _Housekeeper:
    """One daemon thread running the housekeeping jobs of every store in order, each at most
    once pending (a job is named by its store and what it does)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Hashable, Callable[[], object]]] = queue.Queue()
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, name: Hashable, job: Callable[[], object]) -> None:
        with self._lock:
            if name in self._pending:
                return
            self._pending.add(name)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="incrcell-housekeeping", daemon=True
                )
                self._thread.start()
        self._jobs.put((name, job))

    def _run(self) -> None:
        while True:
            name, job = self._jobs.get()
            with self._lock:
                self._pending.discard(name)
            try:
                job()
            except Exception:
                pass
            finally:
                self._jobs.task_done()

    def wait(self) -> None:
        """Until every job submitted so far is done (for tests and the command line)."""
        self._jobs.join()


_HOUSEKEEPER = _Housekeeper()


class Store:
    """The cache of cell executions on one :class:`~incrcell.store.backend.Backend`."""

    def __init__(
        self,
        backend: Backend,
        signer: Signer | None = None,
        *,
        max_size: int | None = None,
        max_age: float | None = None,
        housekeeping: bool = True,
        remote: Remote | None = None,
        write_behind: bool = False,
    ) -> None:
        """``signer`` defaults to one with :func:`signing_key` and the keys
        ``$INCRCELL_TRUSTED_KEYS`` trusts (which may raise KeyRefused, ValueError or
        OSError).  ``max_size`` None: :data:`DEFAULT_MAX_SIZE` or a tenth of the free space,
        whichever is smaller.  ``housekeeping``: sweep what dead writers left now, and
        measure the cache and collect (over the cap, or past max_age) after writes; all in a
        background thread, never on the caller's path.  ``remote``: a shared tier behind
        this one (see :mod:`.remote`): lookups go here first, then there.
        ``write_behind``: large values, and the entries needing them, are written by a
        background thread while the caller goes on (see :mod:`.behind`; the kernel's store).
        """
        self.backend: Backend = Settled(backend)
        self._write_behind = write_behind
        self._signer = signer if signer is not None else Signer(signing_key(), trusted_from_env())
        self.remote = remote
        self._fetched: set[str] = set()  # objects this store copied from the remote
        self._refused: dict[str, str] = {}  # remote objects that failed verification -> why
        # note name -> the remote's newest trusted version, fetched in the background (get_note)
        self._remote_notes: dict[str, dict | None] = {}
        self._note_versions: dict[str, dict] = {}  # remote note versions read -> their note
        if remote is not None:
            remote.start_listing()
        self.max_size = max_size
        self.max_age = max_age
        self._default_cap: int | None = None
        self._intact: set[str] = set()  # values whose checksum and signature verified here
        # values :meth:`has_value` just found absent: :meth:`put_value` need not look again
        # (forgotten at the next entry put, as _pending is)
        self._absent: set[str] = set()
        # small values put but not yet written: they go into the next entry put (the values
        # of one cell are put, then its entry; see Store.put)
        self._pending: OrderedDict[str, tuple[int, list[memoryview]]] = OrderedDict()
        # small values of the entries read lately (verified with them), for get_value
        self._inline: OrderedDict[str, tuple[int, list[memoryview]]] = OrderedDict()
        self._working: set[str] = set()  # entries this process used or wrote: collected last
        self._size: int | None = None  # estimate: the last measurement plus our writes since
        self._measured = 0.0  # time.monotonic() of the last measurement
        self._aged: float | None = None  # time.monotonic() of the last look for old entries
        self._housekeeping = housekeeping
        if housekeeping:
            _HOUSEKEEPER.submit((id(self), "sweep"), self.backend.sweep)

    @property
    def url(self) -> str:
        return self.backend.url

    # -- size and cap ------------------------------------------------------------

    @property
    def cap(self) -> int:
        """The size the cache is kept under."""
        if self.max_size is not None:
            return self.max_size
        if self._default_cap is None:
            free = self.backend.free_space()
            self._default_cap = (
                DEFAULT_MAX_SIZE if free is None else min(DEFAULT_MAX_SIZE, free // 10)
            )
        return self._default_cap

    def size(self) -> int:
        """Bytes the cache occupies: measured when first asked (and every minute of writes),
        kept up to date with our own writes in between."""
        if self._size is None:
            self._measure()
        return self._size or 0

    def _measure(self) -> None:
        self._measured = time.monotonic()
        self._size = sum(item.size for kind in KINDS.values() for item in self.backend.list(kind))

    def _grew(self, nbytes: int) -> None:
        """Count a write; over the cap (or after a while), have the background thread look."""
        if self._size is not None:
            self._size += nbytes
        if not self._housekeeping:
            return
        if self._size is None or time.monotonic() - self._measured > _REMEASURE_SECONDS:
            _HOUSEKEEPER.submit((id(self), "measure"), self._remeasure)
        elif self._size > self.cap:
            _HOUSEKEEPER.submit((id(self), "gc"), self._auto_gc)

    def _remeasure(self) -> None:
        self._measure()
        aging = self.max_age is not None and (
            self._aged is None or time.monotonic() - self._aged > _AGE_CHECK_SECONDS
        )
        if (self._size or 0) > self.cap or aging:
            self._auto_gc()

    def _auto_gc(self) -> None:
        if self.max_age is not None:
            self._aged = time.monotonic()
        self.gc(max_size=int(self.cap * _LOW_WATER) if (self._size or 0) > self.cap else None)

    def wait(self) -> None:
        """Until the background writes and housekeeping submitted so far are done."""
        BEHIND.drain()
        _HOUSEKEEPER.wait()

    # -- reading --------------------------------------------------------------

    def _read(self, obj: str) -> tuple[memoryview, Hashable, Digest | None]:
        """The whole object, its version, and the digest of its bytes after the header.

        Through the backend's fast local path, a large file is read in chunks
        while a worker thread hashes the chunks already read (both release the
        GIL), so verifying costs little more than reading; a file whose signer
        is not trusted is refused (Unusable) before it is hashed (a large one,
        before more than its header is read; a small one is read at once).  The
        digest is None when the backend has no such path or the object is
        too short to have a header (``unframe`` then computes or refuses).

        A file of :data:`_MAP_MIN` bytes or more is mapped copy-on-write where
        the backend can (:meth:`Backend.map`) and hashed in place: no buffer to
        allocate and fill, no copy; the values built on it share the page
        cache's pages until written to.
        """
        opened = self.backend.open(obj)
        if opened is None:
            data, version = self.backend.read(obj)
            return data, version, None
        file, size, version = opened
        with file:
            mapped = self.backend.map(file, size) if size >= _MAP_MIN else None
            if mapped is not None:
                # shrunk since it was mapped: a read past its end would be SIGBUS
                if os.fstat(file.fileno()).st_size != size:
                    raise Unusable("is corrupt (changed while being read)")
                try:
                    check_header(mapped, size)
                    check_signer(mapped, self._signer)
                except Unusable:
                    self.backend.delete(obj, version)
                    raise
                digests = Digest()
                digests.update(mapped[HEADER_SIZE:])
                return mapped, version, digests
            try:
                data = aligned_buffer(size)
            except MemoryError:  # a huge value on a small machine, or a huge stray file
                raise OSError(errno.ENOMEM, "too large for the memory available") from None
            # a small file (an entry, a note) in one read; a large one only once its header
            # says it is worth reading
            done = _read_into(file, data if size < _MAP_MIN else data[:HEADER_SIZE])
            if done < HEADER_SIZE:
                return data[:done], version, None
            try:
                check_header(data, size)
                check_signer(data, self._signer)
            except Unusable:  # not even worth reading on
                self.backend.delete(obj, version)
                raise
            digests = Digest()
            if done > HEADER_SIZE:
                digests.update(data[HEADER_SIZE:done])
            pending = None
            while done < len(data):
                count = _read_into(file, data[done : done + _READ_CHUNK])
                if not count:
                    break
                chunk = data[done : done + count]
                done += count
                if len(data) <= _READ_CHUNK:
                    digests.update(chunk)
                    continue
                if pending is not None:
                    pending.result()
                pending = _HASHING.submit(digests.update, chunk)
            if pending is not None:
                pending.result()
        return data[:done], version, digests

    def _load(
        self,
        kind: int,
        name: str,
        parse: Callable[[int, list[memoryview]], _T],
        *,
        fetch: bool = True,
    ) -> _T:
        """Read, verify and parse one object; removes it if it is corrupt or not authentic.
        An entry or value the local cache lacks is fetched from the remote (:meth:`_pull`);
        without ``fetch``, in the background: this call never waits for the network.

        Raises FileNotFoundError if absent, other OSError if unreadable,
        Unusable if corrupt or not authentic.
        """
        obj = _note_object(name) if kind == NOTE else _object(kind, name)
        self._news()
        try:
            data, version, digests = self._read(obj)
        except FileNotFoundError:
            if not fetch:
                if kind == ENTRY and self.remotely(name):
                    self.remote_prefetch([obj])
                raise
            pulled = kind != NOTE and self._pull(kind, name, obj)
            self._news()
            if not pulled:
                raise
            data, version, digests = self._read(obj)
        try:
            return parse(*unframe(data, kind, name, self._signer, digests))
        except Unusable:
            self.backend.delete(obj, version)
            raise

    def _pull(self, kind: int, name: str, obj: str, *, prefetching: bool = False) -> bool:
        """Copy ``obj`` from the remote into the local cache, verified first; whether it is
        now here.  Waits for its prefetch if there is one (unless this is it).  Raises
        Unusable (saying where it came from) if the remote's copy does not verify: nothing
        of it is kept.
        """
        remote = self.remote
        if remote is None:
            return False
        if not prefetching and remote.wait_for(obj) and self.backend.exists(obj):
            return True
        if obj in self._refused:  # never fetched twice (nor warned about twice by a prefetch)
            raise Unusable(self._refused[obj])
        if remote.absent(obj):
            return False
        try:
            data, _ = remote.call(remote.backend.read, obj)
        except (OSError, RemoteDown):
            return False
        try:
            unframe(data, kind, name, self._signer)
        except Unusable as exc:
            remote.count("refused")
            self._refused[obj] = f"from {remote.url} {exc}"
            raise Unusable(self._refused[obj]) from None
        try:
            self.backend.write(obj, [resealed(data, self._signer), data[HEADER_SIZE:]])
        except OSError:
            return False
        remote.known(obj)
        remote.count("fetched")
        remote.count("fetched_bytes", len(data))
        self._fetched.add(obj)
        self._grew(len(data))
        return True

    def _prefetch(self, obj: str) -> None:
        """Pull an entry or a value in the background (see :meth:`get`); its read will wait
        for it."""
        kind = next(code for code, prefix in KINDS.items() if obj.startswith(prefix + "/"))
        with suppress(Unusable, OSError):
            self._pull(kind, obj.rsplit("/", 1)[1], obj, prefetching=True)

    def get(self, key: str, *, fetch: bool = True, use: bool = True) -> Entry | None:
        """The entry for ``key``, marked as used; None if absent or unusable (warns, never
        raises).  One the local cache lacks comes from the remote, its values prefetched;
        without ``fetch`` (the sidebar's predictions) this never waits for the network: an
        entry the remote lists is fetched in the background, for a later call, and None is
        returned now.  Without ``use`` (a listing of what the cache holds) the entry is
        read but not marked as used: looking at the cache does not keep it from eviction."""
        self._say_unwritten()
        what = f"cache entry {_short(key)}"
        try:
            entry, inline = self._load(ENTRY, key, _parse_entry_inline, fetch=fetch)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _warn(f"{what} cannot be read ({exc.strerror or exc})")
            return None
        except Unusable as exc:
            _warn(f"{what} {exc}")
            return None
        obj = _object(ENTRY, key)
        missing = [
            _object(VALUE, digest)
            for digest in entry.digests()
            if not self.backend.exists(_object(VALUE, digest))
        ]
        remote = self.remote
        if missing and remote is not None and remote.available():
            # fetched concurrently, while the engine checks the entry; their reads wait
            self.remote_prefetch(missing)
        elif missing:
            if obj not in self._fetched:
                self.backend.delete(obj)
            _warn(f"{what} refers to a value no longer in the cache")
            return None
        if not use:
            return entry
        self.backend.touch(obj)
        self._working.add(key)
        self._keep_inline(inline)
        if remote is not None and fetch:  # a lookup for a prediction is not a restore
            remote.count("entries_remote" if obj in self._fetched else "entries_local")
        return entry

    def _keep_inline(self, values: dict[str, tuple[int, list[memoryview]]]) -> None:
        """Keep the small values of an entry just read or written, for :meth:`get_value`."""
        for digest, value in values.items():
            self._inline.pop(digest, None)
            self._inline[digest] = value
        # never those just kept: an entry may have more than the bound (files it wrote)
        while len(self._inline) > max(_INLINE_KEPT, len(values)):
            self._inline.popitem(last=False)  # atomic, whatever thread writes

    def remote_prefetch(self, objs: list[str]) -> None:
        if self.remote is not None:
            self.remote.prefetch(objs, self._prefetch)

    def origin(self, key: str) -> str:
        """Where the entry under ``key`` came from in this process: "remote" or "local"."""
        return "remote" if _object(ENTRY, key) in self._fetched else "local"

    def remotely(self, key: str) -> bool:
        """Whether the remote has the entry under ``key``, as far as its listing there is now
        says (never waits), and it was not refused here."""
        obj = _object(ENTRY, key)
        return (
            self.remote is not None
            and obj not in self._refused
            and not self.remote.absent(obj, wait=False)
        )

    def hit(self, key: str, *, wait: bool = True) -> bool:
        """Cheap existence check (the remote's from its listing, without a round trip; without
        ``wait``, from the listing there is now, if any): ``get`` may still find the entry
        unusable."""
        obj = _object(ENTRY, key)
        return (
            BEHIND.pending(self.backend.url, obj)  # being written: not waited for
            or self.backend.exists(obj)
            or (self.remote is not None and not self.remote.absent(obj, wait=wait))
        )

    def has_value(self, digest: str) -> bool:
        """Whether a value that verifies is stored under ``digest``, so it need not be written.

        The first time per store the value is read through to verify its
        checksum and its signature (a fraction of what re-serialising and
        writing it would cost); a corrupt or foreign one is removed and
        reported absent, so that the value is written anew rather than
        referenced by a fresh entry.  After that, an existence check.  Either
        way the value counts as used now, so that no collection removes it
        before the entry that refers to it is written.
        """
        obj = _object(VALUE, digest)
        if digest in self._pending or BEHIND.pending(self.backend.url, obj):
            return True
        if digest in self._intact:
            return self.backend.touch(obj)
        try:
            self._verify(VALUE, obj, digest)
        except (OSError, Unusable):
            self._absent.add(digest)
            return False
        self._intact.add(digest)
        return self.backend.touch(obj)

    def _verify(self, kind: int, obj: str, name: str | None) -> None:
        """Check an object's checksum, signature, kind and name without holding it in memory.

        ``name`` None: a note, stored under the hash of its name.  Raises
        Unusable (after removing the object) if it fails, OSError if it can't be read.
        """
        opened = self.backend.open(obj)
        if opened is None:
            data, version = self.backend.read(obj)
            file, size = None, len(data)
        else:
            file, size, version = opened
        try:
            if file is None:
                claimed: bytes | None = bytes(parts(data, kind, self._signer)[1][0])
            else:
                with file:
                    data = memoryview(file.read(1 << 16))
                    if check_header(data, size)[0] != kind:
                        raise Unusable("is corrupt (a different kind of cache file)")
                    check_signer(data, self._signer)
                    digests = Digest()
                    digests.update(data[HEADER_SIZE:])
                    chunk = memoryview(bytearray(1 << 22)) if size > len(data) else None
                    while chunk is not None and (count := file.readinto(chunk)):
                        digests.update(chunk[:count])
                    digests.check(data, self._signer)
                    claimed = name_in(data)
            if claimed is not None and (
                claimed != name.encode()
                if name is not None
                else _note_hash(claimed) != obj.rsplit("/", 1)[1]
            ):
                raise Unusable("is corrupt (stored under the wrong name)")
        except Unusable:
            self.backend.delete(obj, version)
            raise

    def get_value(self, digest: str) -> Stored:
        """The verified bytes of the value under ``digest``, marked as used.

        Raises StoreError if absent (evicted, say), unreadable, corrupt or not
        authentic.  It does not warn: the caller decides what happens instead
        and tells the user, with ``reason``.  A small value that travels inside
        its entry's file is found once that entry was read (:meth:`get`) or
        put here (or the value put, for the entry to come); each call gives
        fresh copies of its buffers (objects are built on them), and its stream
        read-only (unpickling only reads it).
        """
        what = f"cached value {_short(digest)}"
        inline = self._inline.get(digest) or self._pending.get(digest)
        if inline is not None:  # verified with its entry; fresh buffers, as a read would give
            method, body = inline
            parts = [part.toreadonly() for part in body[:1]] + [_copy(part) for part in body[1:]]
            try:
                return _parse_value(method, parts)
            except (Unusable, OSError) as exc:
                raise StoreError(f"{what} {exc}") from None
        try:
            stored = self._load(VALUE, digest, _parse_value)
        except FileNotFoundError:
            raise StoreError(f"{what} is not in the cache") from None
        except OSError as exc:
            raise StoreError(f"{what} cannot be read ({exc.strerror or exc})") from None
        except Unusable as exc:
            raise StoreError(f"{what} {exc}") from None
        self._intact.add(digest)
        return stored

    def get_note(self, name: str, *, fetch: bool = True) -> dict | None:
        """The note called ``name``; None if absent or unusable (warns, never raises).  One
        the local cache lacks is the remote's (:meth:`get_remote_note`); without ``fetch``,
        this never waits for the network: the remote's is fetched in the background, and
        answers a later call."""
        what = f"cache note {name!r}"
        try:
            return self._load(NOTE, name, _parse_note)
        except FileNotFoundError:
            if fetch:
                return self.get_remote_note(name)
            return self._remote_note_later(name)
        except OSError as exc:
            _warn(f"{what} cannot be read ({exc.strerror or exc})", instead="ignoring it")
        except Unusable as exc:
            _warn(f"{what} {exc}", instead="ignoring it")
        return None

    def _remote_note_later(self, name: str) -> dict | None:
        """The remote's note ``name`` if a background fetch brought it; else start one (if the
        listing there is now has it) and say None."""
        remote = self.remote
        if remote is None or name in self._remote_notes:
            return self._remote_notes.get(name)
        if remote.versions(_note_object(name), wait=False):
            self._remote_notes[name] = None  # one fetch at a time; this one answers
            remote.prefetch(
                [f"note:{name}"],
                lambda _: self._remote_notes.__setitem__(name, self.get_remote_note(name)),
            )
        return None

    def get_remote_note(self, name: str) -> dict | None:
        """The newest version of note ``name`` in the remote that verifies (notes are advisory:
        one that does not is skipped without a word); None if there is none.  (``%incrcell
        why`` compares the components the recording machine noted with this machine's.)"""
        remote = self.remote
        if remote is None:
            return None
        for version in remote.versions(_note_object(name))[:_NOTE_TRIES]:
            if version in self._note_versions:  # write-once: a version read is read for good
                return self._note_versions[version]
            try:
                data, _ = remote.call(remote.backend.read, version)
                note = _parse_note(*unframe(data, NOTE, name, self._signer))
            except (OSError, RemoteDown):
                return None
            except Unusable:
                remote.count("refused")
                continue
            self._note_versions[version] = note
            return note
        return None

    # -- writing --------------------------------------------------------------

    def _write(self, obj: str, chunks: Sequence[bytes | memoryview], what: str) -> int:
        """Write one object atomically, and have it uploaded (if the remote is writable);
        raises StoreError. KeyboardInterrupt propagates as is."""
        try:
            size = self.backend.write(obj, chunks)
        except Exception as exc:
            raise StoreError(f"{what} could not be written ({_describe(exc)})") from exc
        self._grew(size)
        if self.remote is not None and self.remote.writable:
            if not on_writer():  # said on the notebook's thread, at its next write
                self._news()
            self.remote.enqueue(obj, self._upload)
        return size

    def _news(self) -> None:
        """Say what the remote has to say (once per process), on the caller's thread."""
        if self.remote is not None:
            news = self.remote.news()
            if news is not None:
                _warn(news, instead="cells run or restore locally")

    def _upload(self, obj: str) -> str:
        """Upload one local object as it is (re-verified, its local seal removed), unless
        the remote has it; an entry only once the remote has its values.  Returns what
        happened: "uploaded", "already" (another writer's stays: write-once), "gone" (no
        longer here), "waiting" (an entry whose values are not up), "failed".
        """
        remote = self.remote
        assert remote is not None
        kind = next(code for code, prefix in KINDS.items() if obj.startswith(prefix + "/"))
        name = obj.rsplit("/", 1)[1]
        try:
            data, _, digest = self._read(obj)
            if kind == NOTE:
                claimed = name_in(data)
                if claimed is None:
                    return "failed"
                method, body = unframe(data, NOTE, claimed.decode(), self._signer, digest)
                if remote.has_version(obj, digest_of(data)):
                    remote.count("already")
                    return "already"
                target = note_version(obj, digest_of(data))
            else:
                method, body = unframe(data, kind, name, self._signer, digest)
                target = obj
        except FileNotFoundError:
            return "gone"
        except (OSError, Unusable, UnicodeDecodeError):
            remote.count("dropped")  # never make a bad object permanent in a write-once remote
            return "failed"
        try:
            if remote.is_known(target):
                remote.count("already")
                return "already"
            if kind == ENTRY:
                entry = parse_entry(method, body)
                for digest_name in entry.digests():
                    value = _object(VALUE, digest_name)
                    # a value deduplicated against here was never queued: up with it first
                    if not remote.is_known(value) and self._upload(value) not in _UP:
                        remote.count("dropped")
                        return "waiting"
            elif kind == VALUE and remote.call(remote.backend.exists, target):
                remote.known(target)
                remote.count("already")
                return "already"
            remote.call(remote.backend.write, target, [resealed(data, None), data[HEADER_SIZE:]])
        except FileExistsError:
            remote.known(target)
            remote.count("already")
            return "already"
        except (RemoteDown, OSError, Unusable):
            remote.count("dropped")
            return "failed"
        remote.known(target)
        remote.count("uploaded")
        remote.count("uploaded_bytes", len(data))
        return "uploaded"

    def push(self) -> dict[str, int]:
        """Upload what the remote lacks: every value, entry (after its values) and note here;
        returns how many objects each outcome of :meth:`_upload` had."""
        remote = self.remote
        if remote is None or not remote.writable:
            raise StoreError(
                "no writable remote: set INCRCELL_REMOTE and INCRCELL_REMOTE_MODE=readwrite"
            )
        listing = {kind: remote.listing(kind) for kind in ("entries", "notes")}
        if listing["entries"] is None:
            raise StoreError(
                f"the remote cache {remote.url} cannot be reached ({remote.status().error})"
            )
        for items in listing.values():
            for item in items or ():
                remote.known(item.name)
        done: dict[str, int] = {}
        for kind in (VALUE, ENTRY, NOTE):
            for item in self.backend.list(KINDS[kind]):
                outcome = self._upload(item.name)
                done[outcome] = done.get(outcome, 0) + 1
        return done

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait (at most ``timeout`` seconds) for the background writes and uploads queued so
        far; whether they are done.  The kernel calls it at shutdown; it also runs at process
        exit."""
        remote = self.remote
        return self._settle_all(timeout, lambda left: remote is None or remote.flush(left))

    def close(self, timeout: float | None = 30.0) -> bool:
        """Finish the background writes and uploads (at most ``timeout`` seconds; whether they
        are done) and let go of the remote's threads and exit handler; the local cache stays
        usable."""
        remote = self.remote
        return self._settle_all(timeout, lambda left: remote is None or remote.close(left))

    def _settle_all(self, timeout: float | None, then: Callable[[float | None], bool]) -> bool:
        """The background writes drained, then ``then`` with the time left of ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        written = BEHIND.drain(timeout)
        self._say_unwritten()
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return then(left) and written

    def _say_unwritten(self) -> None:
        """Say the background writes that failed since last said (see :mod:`.behind`)."""
        for reason in BEHIND.unsaid(self.backend.url):
            _warn(reason, instead="the cell that made it runs again next time")

    def remote_status(self) -> RemoteStatus | None:
        """Where entries came from, transfers and the upload backlog; None without a remote."""
        return self.remote.status() if self.remote is not None else None

    def put(self, entry: Entry) -> None:
        """Record ``entry``, whose values must already be stored (:meth:`put_value`); the
        small ones are written inside its file (small values put since the last entry and
        not needed by this one are dropped).  Raises StoreError."""
        what = f"cache entry {_short(entry.key)}"
        obj = _object(ENTRY, entry.key)
        # its ``inline`` is the store's to fill: whatever it held is ignored
        needed = sorted(
            (dataclasses.replace(entry, inline={}) if entry.inline else entry).digests()
        )
        self._say_unwritten()
        pending = ((d, self._pending.get(d)) for d in needed)
        inline = {d: value for d, value in pending if value is not None}
        url = self.backend.url
        outside = {d: _object(VALUE, d) for d in needed if d not in inline}
        behind = [o for o in outside.values() if BEHIND.pending(url, o)]
        missing = [d for d, o in outside.items() if o not in behind and not self.backend.exists(o)]
        if missing:
            raise StoreError(
                f"{what} refers to value {_short(missing[0])}, which is not in the cache"
            )
        try:
            body = entry_bytes(
                entry, {d: [method, len(value)] for d, (method, value) in inline.items()}
            )
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{what} is not JSON-serialisable ({exc})") from exc
        parts: list[bytes | memoryview] = [
            body,
            *(p for _, value in inline.values() for p in value),
        ]

        def write() -> int:
            return self._write(obj, frame(ENTRY, 0, entry.key, parts, self._signer)[0], what)

        if behind:  # written after them, unless one fails (see .behind)
            BEHIND.submit(url, obj, 0, write, what, after=behind)
        else:
            write()
        # what no entry claimed was put for a cell whose recording failed since, and was
        # looked up for one
        self._pending.clear()
        self._absent.clear()
        self._keep_inline(inline)
        self._working.add(entry.key)

    def put_value(self, digest: str, value: Payload) -> int:
        """Store a value unless one that verifies is already there (dedupe); returns bytes
        written, 0 if it was there.  Raises StoreError.

        Values are content-addressed: the object under a digest holds the same
        value whoever wrote it, so an existing one that verifies is kept as it is.
        A small one (:data:`INLINE_MAX`) is kept in memory instead, and written
        inside the file of the next entry :meth:`put` that needs it (its size is
        returned all the same); never followed by one, it is never written.
        """
        self._say_unwritten()
        obj = _object(VALUE, digest)
        # absent when just looked (has_value): written twice at worst, never lost
        if digest not in self._absent and self.has_value(digest):
            return 0
        self._absent.discard(digest)
        what = f"cached value {_short(digest)}"
        size = len(value.stream) + sum(buffer.nbytes for buffer in value.buffers)
        if size <= INLINE_MAX and value.method in _METHODS:
            # copied: the buffers are views of the live objects, which the user may change
            self._pending[digest] = (
                _METHODS[value.method],
                [_copy(memoryview(value.stream)), *map(_copy, value.buffers)],
            )
            return size
        parts, method = [value.stream, *value.buffers], value.method
        if self._write_behind and size >= _BEHIND_MIN and BEHIND.takes(size):
            # copied: the buffers are views of the live objects, which the next cell may change
            parts = [part if isinstance(part, bytes) else _copy(memoryview(part)) for part in parts]
            BEHIND.submit(
                self.backend.url,
                obj,
                size,
                lambda: self._write_value(obj, digest, method, parts, what),
                what,
            )
            return size
        return self._write_value(obj, digest, method, parts, what)

    def _write_value(
        self, obj: str, digest: str, method: str, parts: list[bytes | memoryview], what: str
    ) -> int:
        try:
            chunks, _ = frame(VALUE, _METHODS[method], digest, parts, self._signer)
        except Exception as exc:
            raise StoreError(f"{what} could not be written ({_describe(exc)})") from exc
        size = self._write(obj, chunks, what)
        self._intact.add(digest)
        return size

    def put_note(self, name: str, data: dict) -> None:
        """Record a small JSON document; raises StoreError."""
        what = f"cache note {name!r}"
        try:
            body = json_bytes(data)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{what} is not JSON-serialisable ({exc})") from exc
        self._write(_note_object(name), frame(NOTE, 0, name, [body], self._signer)[0], what)

    # -- housekeeping ---------------------------------------------------------

    def usage(self) -> Usage:
        """Size, cap, counts and last uses, from one listing (no file is read); measures the
        size anew."""
        listed = {kind: list(self.backend.list(kind)) for kind in KINDS.values()}
        entries = listed[KINDS[ENTRY]]
        self._measured = time.monotonic()
        self._size = sum(item.size for items in listed.values() for item in items)
        uses = [item.used for item in entries]
        return Usage(
            self._size,
            self.cap,
            len(entries),
            len(listed[KINDS[VALUE]]),
            len(listed[KINDS[NOTE]]),
            min(uses, default=None),
            max(uses, default=None),
        )

    def inventory(self) -> Inventory:
        """Every object, with each entry read and verified (what fails is removed and listed)."""
        values = {
            item.name.rsplit("/", 1)[1]: item
            for item in self.backend.list(KINDS[VALUE])
            if NAME.fullmatch(item.name.rsplit("/", 1)[1])
        }
        notes = list(self.backend.list(KINDS[NOTE]))
        found = Inventory([], values, notes, [], [], {})
        for item in self.backend.list(KINDS[ENTRY]):
            key = item.name.rsplit("/", 1)[1]
            if not NAME.fullmatch(key):
                continue  # not ours: leave it alone
            try:
                entry = self._load(ENTRY, key, parse_entry)
            except FileNotFoundError:
                continue
            except OSError as exc:
                found.unreadable.append((item.name, f"cannot be read ({exc.strerror or exc})"))
                continue
            except Unusable as exc:  # _load removed it
                found.removed.append((item.name, str(exc)))
                continue
            needs = entry.digests()
            if not needs <= values.keys():
                if self.backend.delete(item.name):
                    found.removed.append((item.name, "refers to a value no longer in the cache"))
                continue
            found.listings[key] = item
            found.entries.append(
                EntryInfo(
                    key,
                    entry.source,
                    item.size + sum(values[d].size for d in needs),
                    entry.created,
                    item.used,
                    frozenset(needs),
                )
            )
        return found

    def gc(
        self,
        max_size: int | None = None,
        max_age: float | None = None,
        *,
        dry_run: bool = False,
        release: frozenset[str] = frozenset(),
    ) -> Collection:
        """Evict least recently used entries (this process's last) until the cache is at most
        ``max_size`` (default :attr:`cap`) and none is unused for more than ``max_age`` seconds
        (default :attr:`max_age`); then the values no entry needs.

        A value shared by several entries is counted once and goes with the last
        of them.  A value used lately, after every entry that needs it, stays
        (a new entry referring to it may be being written), unless it is in
        ``release`` (the values of entries just deleted); if
        some entry could not be read, what it needs is unknown and no value
        goes.  Notes are evicted like entries, by last use.
        """
        limit = self.cap if max_size is None else max_size
        age = self.max_age if max_age is None else max_age
        found = self.inventory()
        now = time.time()
        result = Collection(removed=list(found.removed), unreadable=list(found.unreadable))
        if not dry_run:
            result.freed += self.backend.sweep()
        total = result.size_before = found.size
        refs: dict[str, int] = dict.fromkeys(found.values, 0)
        last_use: dict[str, float] = {}  # digest -> the last use of an entry that needs it
        for info in found.entries:
            for digest in info.values:
                refs[digest] += 1
                last_use[digest] = max(last_use.get(digest, 0.0), info.used)
        working = self._working.copy()
        candidates: list[tuple[bool, float, EntryInfo | Listing]] = [
            (info.key in working, info.used, info) for info in found.entries
        ]
        candidates += [(False, item.used, item) for item in found.notes]
        candidates.sort(key=lambda c: (c[0], c[1]))

        def remove(item: Listing, why: str) -> bool:
            if not dry_run and not self.backend.delete(item.name):
                return False
            result.removed.append((item.name, why))
            result.freed += item.size
            return True

        def unneeded(digest: str) -> bool:
            """No entry needs it; unless it was used after them (deduplicated against by
            an entry being written now), lately, it goes."""
            item = found.values[digest]
            if (
                digest not in release
                and item.used >= last_use.get(digest, 0.0) + 1
                and item.used > now - _GRACE_SECONDS
            ):
                return False
            return not found.unreadable and remove(item, "no entry needs it")

        for _, used, candidate in candidates:
            old = age is not None and used < now - age
            if not (old or total > limit):
                continue
            why = f"unused for {_days(now - used)}" if old else "least recently used"
            if isinstance(candidate, Listing):
                if remove(candidate, why):
                    result.notes += 1
                    total -= candidate.size
                continue
            if not remove(found.listings[candidate.key], why):
                continue
            result.entries += 1
            total -= found.listings[candidate.key].size
            for digest in candidate.values:
                refs[digest] -= 1
                if refs[digest] == 0 and unneeded(digest):
                    result.values += 1
                    total -= found.values[digest].size
        for digest, count in refs.items():
            if count == 0 and digest not in last_use and unneeded(digest):
                result.values += 1
                total -= found.values[digest].size
        result.size_after = total
        if not dry_run:
            self._measured, self._size = time.monotonic(), total
        return result

    def verify(self) -> Collection:
        """Check every object's checksum and signature; remove (and list) what fails."""
        found = self.inventory()
        result = Collection(removed=list(found.removed), unreadable=list(found.unreadable))
        for kind in (VALUE, NOTE):
            for item in self.backend.list(KINDS[kind]):
                name = item.name.rsplit("/", 1)[1]
                if kind == VALUE and not NAME.fullmatch(name):
                    continue
                try:
                    self._verify(kind, item.name, name if kind == VALUE else None)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    result.unreadable.append((item.name, f"cannot be read ({exc.strerror or exc})"))
                except Unusable as exc:
                    result.removed.append((item.name, str(exc)))
                    result.freed += item.size
        self._intact.clear()
        return result

    def delete(self, keys: Iterable[str]) -> int:
        """Delete entries, then the values no entry needs any more; returns entries deleted."""
        deleted, released = 0, set()
        for key in keys:
            with suppress(OSError, Unusable):
                released |= self._load(ENTRY, key, parse_entry).digests()
            deleted += self.backend.delete(_object(ENTRY, key))
        self.gc(max_size=1 << 62, max_age=float("inf"), release=frozenset(released))
        return deleted

    def clear(self) -> None:
        """Delete everything (best effort under concurrent writers)."""
        self.backend.clear()
        self._intact.clear()
        self._inline.clear()
        self._measured, self._size = time.monotonic(), 0


def _read_into(file: io.RawIOBase, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``file`` as far as the file goes; returns the bytes read."""
    done = 0
    while done < len(buffer):
        count = file.readinto(buffer[done:])
        if not count:
            break
        done += count
    return done


def _parse_note(method: int, body: list[memoryview]) -> dict:
    data = json_body(body)
    if not isinstance(data, dict):
        raise Unusable("is corrupt (not a note)")
    return data


def _parse_entry_inline(
    method: int, body: list[memoryview]
) -> tuple[Entry, dict[str, tuple[int, list[memoryview]]]]:
    entry = parse_entry(method, body)
    return entry, inline_parts(entry, body)


def _copy(part: memoryview) -> memoryview:
    """A fresh, writeable, aligned copy of ``part`` (read-only if ``part`` is)."""
    copy = aligned_buffer(part.nbytes)
    copy[:] = part.cast("B")
    return copy.toreadonly() if part.readonly else copy


def _parse_value(method: int, body: list[memoryview]) -> Stored:
    if method not in _METHOD_NAMES or not body:
        raise Unusable("is corrupt (not a value)")
    return Stored(_METHOD_NAMES[method], body[0], body[1:])


def _short(name: str) -> str:
    return name[:8] + "…" if len(name) > 8 else name


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def _warn(reason: str, instead: str = "running the cell instead") -> None:
    """One line for the user, attributed to the caller of the public method."""
    warnings.warn(f"incrcell: {reason}; {instead}.", CacheWarning, stacklevel=3)
