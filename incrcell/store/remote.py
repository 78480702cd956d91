"""The remote tier's policy: what the store needs to put a shared bucket behind its local cache.

:class:`Remote` wraps a write-once :class:`~incrcell.store.backend.Backend`
(``s3://``) with everything that keeps a slow or dead remote out of the
notebook's way; the store (:mod:`.cache`) decides what to fetch, verify and
upload, and calls it.

* **A circuit breaker.**  Every request is bounded by the backend's timeouts;
  the first failure (network, timeout, server, credentials) makes the remote
  unavailable for :data:`COOLDOWN` seconds (everything is local until then),
  with one warning per process, never an exception into a cell.
* **A listing that answers "absent".**  One LIST of the remote's entries and
  notes, refreshed every :data:`LIST_TTL` seconds, made in the background as
  soon as the store opens: a Run All of 50 cells that the remote lacks pays
  one round trip, not 50, and a hit pays one GET for its entry.
* **Prefetch.**  An entry fetched from the remote has its values fetched at
  once, concurrently (:meth:`Remote.prefetch`); the value reads wait for them.
* **Background uploads.**  Writes enqueue the object's name in a bounded
  queue served by one daemon thread (a full queue drops the newest: it stays
  local, and ``incrcell cache push`` uploads it later); :meth:`Remote.flush`
  waits for the queue with a bounded wait, and runs at process exit.
* **Counters** (:meth:`Remote.status`): where entries came from, transfers, backlog.

Notes are the only mutable objects (a cell's lineage note holds the key it
had last), and the remote is write-once, so each version of a note is an
object of its own there, named by when it was uploaded and what it holds
(:func:`note_version`); a reader takes the newest it trusts.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

from .backend import Backend, Listing

#: Seconds the remote is left alone after a failure.
COOLDOWN = 60.0
#: Seconds a listing of the remote's entries and notes answers "absent" for.
LIST_TTL = 30.0
#: Uploads waiting at most; more are dropped (they stay local; `incrcell cache push`).
QUEUE_SIZE = 10_000
#: Seconds :meth:`Remote.flush` waits at process exit.
EXIT_WAIT = 30.0
#: Concurrent fetches (prefetching an entry's values).
FETCHERS = 4
#: The kinds whose names the listing holds (values are fetched by name once an entry
#: refers to them: an entry is only uploaded after its values).
LISTED = ("entries", "notes")

READ, READWRITE = "read", "readwrite"
#: What stops the upload worker (no object is called that).
_STOP = ""
MODES = (READ, READWRITE)


class RemoteDown(Exception):
    """The remote is unavailable (now, or since a recent failure); the caller goes on locally."""


def note_version(obj: str, digest: str) -> str:
    """The remote name of a new version of the note stored locally as ``obj``, whose file's
    digest is ``digest``: ``<obj>.<milliseconds since the epoch, 13 digits>.<digest>``, so
    that names sort by age (the writer's clock: S3's own times have one-second steps)."""
    return f"{obj}.{time.time_ns() // 1_000_000:013d}.{digest}"


def _version_of(name: str) -> tuple[str, str] | None:
    """(the note's local object, its digest) of a remote note version's name."""
    parts = name.split(".")
    return (parts[0], parts[2]) if len(parts) == 3 else None


@dataclasses.dataclass
class RemoteStatus:
    """What the remote tier did in this process (see :meth:`Remote.status`)."""

    url: str
    mode: str
    available: bool
    error: str | None  # the last failure, while the breaker is open
    entries_local: int  # entries found in the local cache...
    entries_remote: int  # ... and fetched from the remote
    fetched: int  # objects downloaded (verified and copied into the local cache)
    fetched_bytes: int
    refused: int  # remote objects that failed verification (untrusted signer, forged, corrupt)
    uploaded: int
    uploaded_bytes: int
    already: int  # uploads another writer had made first (write-once: theirs stays)
    pending: int  # the upload backlog: queued and in flight
    dropped: int  # uploads not queued (queue full, or failed): `incrcell cache push` does them
    requests: int  # round trips made


class Remote:
    """A write-once backend behind the local cache, with the policy above (see the module)."""

    def __init__(self, backend: Backend, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"remote_mode is {' or '.join(MODES)}, not {mode!r}")
        self.backend = backend
        self.mode = mode
        self._warning: str | None = None  # to say once, on the caller's thread (see news)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._error: str | None = None
        self._warned = False
        self._listing: dict[str, list[Listing]] | None = None  # kind -> objects
        self._names: set[str] = set()  # their names
        self._note_versions: dict[str, list[str]] = {}  # a note's versions, newest first
        self._listed_at = 0.0
        self._listing_job: concurrent.futures.Future | None = None
        self._known: set[str] = set()  # objects known to be in the remote (uploaded, fetched)
        self._versions: dict[str, set[str]] = {}  # a note's local object -> digests up there
        self._fetchers = concurrent.futures.ThreadPoolExecutor(
            FETCHERS, thread_name_prefix="incrcell-fetch"
        )
        self._prefetched: dict[str, concurrent.futures.Future] = {}
        self._queue: queue.Queue[str] = queue.Queue(QUEUE_SIZE)
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._upload: Callable[[str], object] | None = None
        self.counts = dict.fromkeys(
            (
                "entries_local",
                "entries_remote",
                "fetched",
                "fetched_bytes",
                "refused",
                "uploaded",
                "uploaded_bytes",
                "already",
                "dropped",
                "requests",
            ),
            0,
        )

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def writable(self) -> bool:
        return self.mode == READWRITE

    def count(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counts[name] += by

    # -- the circuit breaker ------------------------------------------------------

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def call(self, function: Callable, *args):
        """``function(*args)`` on the backend, through the breaker.

        FileNotFoundError and FileExistsError are answers, passed on; any other
        failure opens the breaker (one warning per process) and raises RemoteDown,
        as does a call while it is open.
        """
        if not self.available():
            raise RemoteDown(self._error or "unavailable")
        self.count("requests")
        try:
            return function(*args)
        except (FileNotFoundError, FileExistsError):
            raise
        except Exception as exc:
            self.trip(exc)
            raise RemoteDown(self._error or "unavailable") from None

    def trip(self, exc: BaseException) -> None:
        """Leave the remote alone for :data:`COOLDOWN` seconds; say so once per process."""
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or repr(exc)
        with self._lock:
            self._down_until = time.monotonic() + COOLDOWN
            self._error = reason
            if not self._warned:
                self._warned = True
                self._warning = (
                    f"the remote cache {self.url} cannot be reached ({reason}); using the "
                    f"local cache only, trying again every {COOLDOWN:.0f} s"
                )

    def news(self) -> str | None:
        """The one warning of this process about the remote, once (the breaker may open in
        a background thread; the store says it on the notebook's thread)."""
        if self._warning is None:
            return None
        with self._lock:
            warning, self._warning = self._warning, None
        return warning

    # -- the listing --------------------------------------------------------------

    def start_listing(self) -> None:
        """Have the listing made (again, if it is older than :data:`LIST_TTL`) in the background."""
        with self._lock:
            fresh = self._listing is not None and time.monotonic() - self._listed_at < LIST_TTL
            if fresh or (self._listing_job is not None and not self._listing_job.done()):
                return
            self._listing_job = self._fetchers.submit(self._list)

    def _list(self) -> None:
        try:
            found = {kind: self.call(lambda k=kind: list(self.backend.list(k))) for kind in LISTED}
        except (RemoteDown, OSError):
            return
        names = {item.name for items in found.values() for item in items}
        versions: dict[str, list[str]] = {}  # a note's local object -> its versions' names
        for item in found["notes"]:
            self.known(item.name)
            version = _version_of(item.name)
            if version is not None:
                versions.setdefault(version[0], []).append(item.name)
        for listed in versions.values():
            listed.sort(reverse=True)
        with self._lock:
            self._listing, self._names, self._listed_at = found, names, time.monotonic()
            self._note_versions = versions

    def listing(self, kind: str, *, wait: bool = True) -> list[Listing] | None:
        """The objects of ``kind`` (one of :data:`LISTED`) the remote held a moment ago; None if
        that is unknown (the remote is down; or, without ``wait``, not listed yet).  Waits
        for a listing in progress unless ``wait`` is false."""
        self.start_listing()
        job = self._listing_job
        if wait and self._listing is None and job is not None:
            concurrent.futures.wait([job])
        with self._lock:
            listing = self._listing
        return None if listing is None or not self.available() else listing.get(kind, [])

    def absent(self, obj: str, *, wait: bool = True) -> bool:
        """Whether ``obj`` (an entry) is certainly not worth a round trip: not in the listing
        (without ``wait``: not in the listing there is now, if any)."""
        if obj in self._known:
            return False
        kind = obj.split("/", 1)[0]
        if kind not in LISTED:
            return not self.available()
        return self.listing(kind, wait=wait) is None or obj not in self._names

    def versions(self, obj: str, *, wait: bool = True) -> list[str]:
        """The remote names of the versions of the note stored locally as ``obj``, newest first
        (without ``wait``: as far as the listing there is now knows)."""
        if self.listing("notes", wait=wait) is None:
            return []
        return self._note_versions.get(obj, [])  # indexed once per listing: a miss asks

    def known(self, obj: str) -> None:
        version = _version_of(obj) if obj.startswith("notes/") else None
        with self._lock:
            self._known.add(obj)
            if version is not None:
                self._versions.setdefault(version[0], set()).add(version[1])

    def has_version(self, obj: str, digest: str) -> bool:
        """Whether the remote holds a version of note ``obj`` with exactly this file."""
        return digest in self._versions.get(obj, ())

    def is_known(self, obj: str) -> bool:
        return obj in self._known

    # -- fetching -----------------------------------------------------------------

    def prefetch(self, objs: Iterable[str], job: Callable[[str], object]) -> None:
        """Run ``job(obj)`` for each of ``objs`` concurrently; :meth:`wait_for` waits for one."""
        for obj in objs:
            with self._lock:
                if obj in self._prefetched:
                    continue
                self._prefetched[obj] = self._fetchers.submit(job, obj)

    def wait_for(self, obj: str) -> bool:
        """Wait for the prefetch of ``obj`` if there is one (each request is bounded by the
        backend's timeouts); whether there was one."""
        with self._lock:
            future = self._prefetched.pop(obj, None)
        if future is None:
            return False
        concurrent.futures.wait([future])
        return True

    # -- uploading ----------------------------------------------------------------

    def enqueue(self, obj: str, upload: Callable[[str], object]) -> None:
        """Upload ``obj`` in the background with ``upload(obj)``; never blocks."""
        with self._lock:
            self._upload = upload
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._serve, name="incrcell-upload", daemon=True
                )
                self._worker.start()
                atexit.register(self.flush, EXIT_WAIT)
            try:
                self._queue.put_nowait(obj)
            except queue.Full:
                self.counts["dropped"] += 1
                return
            self._pending += 1

    def _serve(self) -> None:
        while True:
            obj = self._queue.get()
            if obj == _STOP:
                return
            try:
                if self._upload is not None:
                    self._upload(obj)
            except Exception:
                self.count("dropped")
            finally:
                with self._lock:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.notify_all()

    def flush(self, timeout: float | None = EXIT_WAIT) -> bool:
        """Wait until the uploads queued so far are done, at most ``timeout`` seconds; whether
        they are.  (The kernel calls it at shutdown; it also runs at process exit.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float | None = EXIT_WAIT) -> bool:
        """Finish the uploads queued so far (at most ``timeout`` seconds; whether they are
        done), then let go: no exit handler, worker or fetcher refers to this object any more
        (``%unload_ext`` leaves nothing alive).  Uploads still queued stay local (``incrcell
        cache push``)."""
        done = self.flush(timeout)
        atexit.unregister(self.flush)
        with self._lock:
            worker, self._worker = self._worker, None
            self._upload = None
            self._prefetched.clear()
        if worker is not None:
            while True:  # make room for the stop (what is dropped stays local)
                try:
                    self._queue.put_nowait(_STOP)
                    break
                except queue.Full:
                    with suppress(queue.Empty):
                        self._queue.get_nowait()
                        with self._lock:
                            self._pending -= 1
                            self.counts["dropped"] += 1
            worker.join(timeout)  # idle after the flush: it stops at once
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        return done

    def status(self) -> RemoteStatus:
        with self._lock:
            counts = dict(self.counts)
            pending = self._pending
            error = self._error if not self.available() else None
        return RemoteStatus(
            url=self.url,
            mode=self.mode,
            available=self.available(),
            error=error,
            pending=pending,
            **counts,
        )
