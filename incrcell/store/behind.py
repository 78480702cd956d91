"""Writing a cache's large values in the background, while the next cell runs.

Recording a cell that leaves large arrays or frames checksums, signs and writes
hundreds of megabytes: done inside the cell, the user waits for all of it.
With write-behind, :meth:`~incrcell.store.cache.Store.put_value` copies the
value's bytes (the snapshot: the next cell may change the live objects in
place), and one writer thread checksums, signs and writes them, then the
entry of the cell that needs them, in that order, while the next cell runs.

What holds, and how it fails safe:

* In this process every read of an object first waits for a pending write of
  it, and every listing for all of them (:class:`Settled` is the backend every
  store sees): a lookup never misses what was just written, and no store,
  housekeeping included, sees half of it.
* Another process sees an object once it is whole (the backend's atomic
  write), until then not at all: a miss, so its cell runs.
* A write that fails (a full disk) is not lost silently: the store says it, in
  one line, at its next call on the caller's thread (:meth:`WriteBehind.unsaid`),
  and the entry written after it is not written, so the cell runs next time.
* At most :data:`LIMIT` bytes of copies wait: a value bigger than that is
  written inside the cell as before, and a cell whose values would pass the
  limit waits for older writes first.
* The interpreter's exit waits for the writes queued (the executor's threads
  are joined at exit); a killed process loses them, and their cells run again.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Any

from .backend import Backend, Listing

_THREAD_NAME = "incrcell-writer"


def _limit() -> int:
    """Bytes of copies allowed to wait: 512 MiB, or a sixteenth of the memory if less."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        memory = 0
    return min(512 << 20, memory // 16) if memory > 0 else 128 << 20


LIMIT = _limit()


class WriteBehind:
    """One writer thread for every store of the process; a write is named by its backend's
    url and its object, so every store of one cache waits for the same writes."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Future[None]] = {}
        self._bytes = 0  # of the copies the pending writes hold
        self._failed: set[tuple[str, str]] = set()
        self._unsaid: dict[str, list[str]] = {}  # url -> failures not said yet
        self._pool: ThreadPoolExecutor | None = None

    def takes(self, nbytes: int) -> bool:
        """Whether a value of ``nbytes`` may be written behind (not bigger than the limit)."""
        return nbytes <= self.limit

    def pending(self, url: str, obj: str) -> bool:
        return (url, obj) in self._pending

    def submit(
        self,
        url: str,
        obj: str,
        nbytes: int,
        write: Callable[[], object],
        what: str,
        after: Sequence[str] = (),
    ) -> None:
        """Have ``write()`` (which raises on failure, saying why) run on the writer thread
        after every write submitted before; not if one of the objects ``after`` failed.
        ``nbytes``: the copies it holds (waits while the limit would be passed)."""
        self.settle(url, obj)  # one write of an object at a time
        while True:
            with self._lock:
                waiting = list(self._pending.values())
                if not waiting or self._bytes + nbytes <= self.limit:
                    break
            wait_for(waiting[:1])
        where = (url, obj)
        with self._lock:  # held until the future is registered: _run's cleanup waits for it
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=_THREAD_NAME)
            self._bytes += nbytes
            self._pending[where] = self._pool.submit(
                self._run, where, nbytes, write, what, [(url, o) for o in after]
            )

    def forked(self) -> None:
        """In a forked child: forget the parent's writes (no thread of its runs here: waiting
        for them would hang; the parent writes them) and its lock, which may be held."""
        self._lock = threading.Lock()
        self._pool, self._bytes = None, 0
        self._pending.clear()

    def _run(
        self,
        where: tuple[str, str],
        nbytes: int,
        write: Callable[[], object],
        what: str,
        after: list[tuple[str, str]],
    ) -> None:
        try:
            if any(dependency in self._failed for dependency in after):
                with self._lock:  # not said: the failure of what it needs was
                    self._failed.add(where)
                return
            write()
            with self._lock:
                self._failed.discard(where)
        except Exception as exc:  # said on the caller's thread (see unsaid)
            reason = getattr(exc, "reason", None) or f"{what} could not be written ({exc})"
            with self._lock:
                self._failed.add(where)
                self._unsaid.setdefault(where[0], []).append(reason)
        finally:
            with self._lock:
                self._bytes -= nbytes
                del self._pending[where]

    def unsaid(self, url: str) -> list[str]:
        """The failures of the writes to ``url`` not said yet (then forgotten)."""
        if url not in self._unsaid:
            return []
        with self._lock:
            return self._unsaid.pop(url, [])

    def settle(self, url: str, obj: str) -> None:
        """Until a pending write of ``obj`` is done (at once if there is none)."""
        future = self._pending.get((url, obj))
        if future is not None and not on_writer():
            wait_for([future])

    def drain(self, timeout: float | None = None) -> bool:
        """Until every write submitted so far is done (at most ``timeout`` seconds; whether
        they are)."""
        if on_writer():
            return True
        with self._lock:
            waiting = list(self._pending.values())
        return not wait_for(waiting, timeout).not_done


def on_writer() -> bool:
    """Whether the caller is the writer thread (which must not wait for its own writes)."""
    return threading.current_thread().name.startswith(_THREAD_NAME)


BEHIND = WriteBehind()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=BEHIND.forked)


class Settled(Backend):
    """``backend`` as the stores of this process see it: each access to an object waits for
    its pending write, each listing or clearing for all of them; writes go straight to it
    (those of the writer thread included)."""

    def __init__(self, backend: Backend, behind: WriteBehind = BEHIND) -> None:
        self.inner = backend
        self.url = backend.url
        self.behind = behind

    def __getattr__(self, name: str) -> Any:  # what else the backend offers (its root...)
        return getattr(self.inner, name)

    def read(self, name: str) -> tuple[memoryview, Hashable]:
        self.behind.settle(self.url, name)
        return self.inner.read(name)

    def open(self, name: str) -> tuple[io.RawIOBase, int, Hashable] | None:
        self.behind.settle(self.url, name)
        return self.inner.open(name)

    def map(self, file: io.RawIOBase, size: int) -> memoryview | None:
        return self.inner.map(file, size)

    def write(self, name: str, chunks: Sequence[bytes | memoryview]) -> int:
        self.behind.settle(self.url, name)
        return self.inner.write(name, chunks)

    def exists(self, name: str) -> bool:
        self.behind.settle(self.url, name)
        return self.inner.exists(name)

    def touch(self, name: str) -> bool:
        self.behind.settle(self.url, name)
        return self.inner.touch(name)

    def delete(self, name: str, version: Hashable | None = None) -> bool:
        self.behind.settle(self.url, name)
        return self.inner.delete(name, version)

    def list(self, prefix: str) -> Iterator[Listing]:
        self.behind.drain()
        return self.inner.list(prefix)

    def clear(self) -> None:
        self.behind.drain()
        self.inner.clear()

    def free_space(self) -> int | None:
        return self.inner.free_space()

    def sweep(self) -> int:  # what dead writers left: never a pending write of this process
        return self.inner.sweep()
