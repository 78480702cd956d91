"""Write-behind (incrcell/store/behind.py): a store's large values, and the entries needing
them, are written by a background thread while the caller goes on; every read in the process
waits for the writes of what it reads, a failure is said, and the copy is a snapshot."""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_store import KEY, KEY_A, KEY_B, bundle_of, files, full_disk_after, make_entry, values

from incrcell.serialise import dumps
from incrcell.store import CacheWarning, Store, open_store
from incrcell.store.behind import BEHIND
from incrcell.store.cache import _object
from incrcell.store.codec import ENTRY, VALUE
from incrcell.store.signing import Signer

BIG = 400_000  # float64s: 3.2 MB, over the size written behind


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    opened = open_store(root, signer=Signer(KEY), write_behind=True)
    yield opened
    BEHIND.drain()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """While not set, the writer thread's writes wait (other threads' go through)."""
    opened = threading.Event()
    real_writev = os.writev

    def writev(fd: int, buffers) -> int:
        if threading.current_thread().name.startswith("incrcell-writer"):
            assert opened.wait(60), "the gate was never opened"
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    yield opened
    opened.set()


def put(store: Store, key: str, array: np.ndarray) -> str:
    """The engine's two calls for a cell leaving ``array``: its bundle, then its entry."""
    bundle, serialised = bundle_of(a=array)
    store.put_value(bundle, serialised)
    store.put(make_entry(key, bundle, variables={"a": "00"}))
    return bundle


def test_a_value_is_copied_when_put_and_a_read_waits_for_its_write(
    store: Store, root: Path, gate: threading.Event
) -> None:
    array = np.arange(BIG, dtype=np.float64)
    bundle = put(store, KEY_A, array)
    array[:] = -1  # the next cell changes the live object while its write waits
    # neither is on disk yet, and both are known to be coming
    assert files(root, "values") == files(root, "entries") == []
    assert BEHIND.pending(store.backend.url, _object(VALUE, bundle))
    assert BEHIND.pending(store.backend.url, _object(ENTRY, KEY_A))
    assert store.has_value(bundle)  # a later cell with the same value need not write it
    assert store.hit(KEY_A)  # the sidebar's predictions: coming, and not waited for
    threading.Timer(0.2, gate.set).start()
    entry = store.get(KEY_A)  # waits for both
    assert entry is not None
    assert np.array_equal(values(store, entry)["a"], np.arange(BIG, dtype=np.float64))
    assert len(files(root, "values")) == len(files(root, "entries")) == 1


def test_another_store_of_the_same_cache_waits_too(
    store: Store, root: Path, gate: threading.Event
) -> None:
    put(store, KEY_A, np.ones(BIG))
    other = open_store(root, signer=Signer(KEY))  # a fresh session in the same process
    threading.Timer(0.2, gate.set).start()
    entry = other.get(KEY_A)
    assert entry is not None and values(other, entry)["a"].sum() == BIG
    assert [item.name.rsplit("/", 1)[1] for item in other.backend.list("entries")] == [KEY_A]


def test_a_failed_write_is_said_at_the_next_call_and_its_entry_is_not_written(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_disk_after(0, monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    put(store, KEY_A, np.ones(BIG))  # returns: the write fails later, behind
    BEHIND.drain()
    with pytest.warns(CacheWarning, match="No space left on device") as said:
        assert store.get(KEY_B) is None
    assert len(said) == 1  # the value's failure; the entry after it is simply not written
    assert files(root, "values") == files(root, "entries") == files(root, "", temp=True) == []
    monkeypatch.undo()
    assert store.get(KEY_A) is None  # a miss: the cell runs again
    put(store, KEY_A, np.ones(BIG))
    entry = store.get(KEY_A)
    assert entry is not None and values(store, entry)["a"].sum() == BIG


def test_copies_waiting_are_bounded(
    store: Store, root: Path, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(dumps(np.ones(BIG)).buffers[0])
    monkeypatch.setattr(BEHIND, "limit", size * 3 // 2)
    first = put(store, KEY_A, np.zeros(BIG))
    threading.Timer(0.2, gate.set).start()
    # a second value would pass the limit: its put waits for the first write
    put(store, KEY_B, np.ones(BIG))
    assert not BEHIND.pending(store.backend.url, _object(VALUE, first))
    assert store.get(KEY_A) is not None and store.get(KEY_B) is not None
    # a value bigger than the limit is written in the call, as without write-behind
    monkeypatch.setattr(BEHIND, "limit", size // 2)
    gate.clear()
    bundle, serialised = bundle_of(a=np.full(BIG, 2.0))
    store.put_value(bundle, serialised)
    assert not BEHIND.pending(store.backend.url, _object(VALUE, bundle))
    assert store.has_value(bundle)
    gate.set()


def test_a_forked_child_does_not_wait_for_its_parents_writes(
    store: Store, root: Path, gate: threading.Event
) -> None:
    put(store, KEY_A, np.ones(BIG))  # pending until the gate opens, which the child never sees
    pid = os.fork()
    if pid == 0:  # the child: a lookup is a miss at once (its parent writes the entry)
        signal.alarm(30)
        os._exit(0 if open_store(root, signer=Signer(KEY)).get(KEY_A) is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    gate.set()
    assert store.get(KEY_A) is not None
