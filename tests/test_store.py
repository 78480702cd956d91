"""The on-disk cache: round trips, and failing safe under corruption, untrusted signers,
crashes and races."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import multiprocessing
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xxhash

from incrcell import files as files_module
from incrcell.reasons import Code
from incrcell.serialise import Serialised, dumps, loads
from incrcell.store import FORMAT_VERSION, CacheWarning, Entry, Store, StoreError, open_store
from incrcell.store import cache as cache_module
from incrcell.store import file as file_module
from incrcell.store.codec import ENTRY
from incrcell.store.entry import parse_entry
from incrcell.store.signing import (
    KEY_ENV,
    KeyRefused,
    Signer,
    fingerprint,
    private_text,
    signing_key,
)

KEY = b"k" * 32
OTHER = b"o" * 32  # someone else's private key
KEY_A = "a1" * 16
KEY_B = "b2" * 16
KEY_C = "c3" * 16


def digest_of(serialised: Serialised) -> str:
    return xxhash.xxh3_128_hexdigest(serialised.stream + b"".join(serialised.buffers))


def make_entry(
    key: str,
    bundle: str | None = None,
    *,
    variables: dict[str, str] | None = None,
    result: str | None = None,
    written: dict[str, str] | None = None,
) -> Entry:
    return Entry(
        key=key,
        source="x = f(y)",
        variables=variables or {},
        deleted=["tmp"],
        outputs=[{"output_type": "stream", "name": "stdout", "text": "héllo\n"}],
        result=result,
        duration=0.25,
        created=time.time(),
        components={"source": "abc", "inputs": {"y": "0123"}},
        bundle=bundle,
        written=written or {},
    )


def bundle_of(**values: object) -> tuple[str, Serialised]:
    """Digest and pickle of the one stored value holding all of a cell's values, as the
    engine makes it."""
    serialised = dumps((values, None), own=[*values.values(), None])
    return digest_of(serialised), serialised


def record(store: Store, key: str, **values: object) -> Entry:
    """What the engine does after running a cell: the bundle of its values first, then the entry."""
    bundle, serialised = bundle_of(**values)
    store.put_value(bundle, serialised)
    # content digests of the values: the store keeps them but never interprets them
    variables = {name: digest_of(dumps(value)) for name, value in values.items()}
    entry = make_entry(key, bundle, variables=variables)
    store.put(entry)
    return entry


def values(store: Store, entry: Entry) -> dict[str, object]:
    """The values ``entry`` bound, read back from its bundle."""
    assert entry.bundle is not None
    bound, _ = load(store, entry.bundle)
    return bound


def load(store: Store, digest: str, resolve=None) -> object:
    """The value under ``digest``, deserialised as the engine does it."""
    stored = store.get_value(digest)
    return loads(stored.method, stored.stream, stored.buffers, resolve)


def file_blob(store: Store, data: bytes) -> str:
    """Store the bytes of a file a cell wrote (see ``Entry.written``); returns the blob's digest."""
    serialised = dumps(data)
    digest = digest_of(serialised)
    store.put_value(digest, serialised)
    return digest


def files(root: Path, kind: str, temp: bool = False) -> list[Path]:
    if temp:
        return sorted((root / f"v{FORMAT_VERSION}" / "tmp").glob(".tmp-*"))
    return sorted((root / f"v{FORMAT_VERSION}" / kind).glob("*/*"))


@pytest.fixture(autouse=True)
def values_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value in a file of its own: these tests are of the value files (the small
    values that travel inside their entry's file: tests/test_store_format.py)."""
    monkeypatch.setattr(cache_module, "INLINE_MAX", 0)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(root: Path) -> Store:
    return open_store(root, signer=Signer(KEY))


@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- round trips ------------------------------------------------------------------


def test_entry_round_trip(store: Store, no_warnings: None) -> None:
    entry = record(store, KEY_A, x=1, y=[1, 2, 3])
    assert store.hit(KEY_A)
    assert store.get(KEY_A) == entry
    assert not store.hit(KEY_B)
    assert store.get(KEY_B) is None  # a plain miss is silent
    assert values(store, entry)["y"] == [1, 2, 3]
    assert load(store, entry.bundle) == ({"x": 1, "y": [1, 2, 3]}, None)  # one blob for all


def test_objects_shared_between_values_stay_shared(store: Store) -> None:
    shared = [1, 2]
    entry = record(store, KEY_A, a=shared, b={"in": shared})
    restored = values(store, entry)
    assert restored["b"]["in"] is restored["a"]


def test_restored_arrays_are_equal_writeable_aligned_and_independent(store: Store) -> None:
    array = np.random.default_rng(0).random((1000, 300))
    serialised = dumps(array)
    digest = digest_of(serialised)
    written = store.put_value(digest, serialised)
    assert written >= array.nbytes
    restored = load(store, digest)
    np.testing.assert_array_equal(restored, array)
    assert restored.flags.writeable
    assert restored.ctypes.data % 64 == 0
    restored[:] = 0
    np.testing.assert_array_equal(load(store, digest), array)


def test_read_only_arrays_come_back_read_only(store: Store) -> None:
    array = np.arange(10.0)
    array.flags.writeable = False
    serialised = dumps(array)
    store.put_value(digest_of(serialised), serialised)
    assert not load(store, digest_of(serialised)).flags.writeable


def test_frames_and_notebook_code_round_trip(store: Store) -> None:
    namespace = {"__name__": "__main__"}
    exec("def double(x):\n    return 2 * x\n", namespace)
    frame = pd.DataFrame({"a": np.arange(100), "b": ["s"] * 100})
    entry = record(store, KEY_A, frame=frame, double=namespace["double"])
    restored = values(store, entry)
    pd.testing.assert_frame_equal(restored["frame"], frame)
    assert restored["double"](21) == 42


def test_identical_values_are_stored_once(store: Store, root: Path) -> None:
    digest, serialised = bundle_of(a=np.arange(1000))
    assert store.put_value(digest, serialised) > 0
    assert store.put_value(digest, serialised) == 0
    store.put(make_entry(KEY_A, digest))
    store.put(make_entry(KEY_B, digest))
    assert len(files(root, "values")) == 1
    assert store.has_value(digest)
    assert store.get(KEY_A).bundle == store.get(KEY_B).bundle == digest


def test_an_entry_is_only_written_once_its_values_are_in(store: Store) -> None:
    with pytest.raises(StoreError, match="not in the cache"):
        store.put(make_entry(KEY_A, "ff" * 16))
    assert not store.hit(KEY_A)
    bundle = record(store, KEY_B, x=1).bundle
    with pytest.raises(
        StoreError, match="not in the cache"
    ):  # a file it wrote, whose bytes are not in
        store.put(make_entry(KEY_A, bundle, written={"/tmp/out.txt": "ee" * 16}))
    assert not store.hit(KEY_A)


def test_entry_whose_value_vanished_is_a_miss(store: Store, root: Path) -> None:
    entry = record(store, KEY_A, x=1)
    os.unlink(files(root, "values")[0])
    with pytest.warns(CacheWarning, match="no longer in the cache"):
        assert store.get(KEY_A) is None
    assert not store.hit(KEY_A)  # the dangling entry is gone
    with pytest.raises(StoreError, match="not in the cache"):
        store.get_value(entry.bundle)


def test_entry_whose_written_file_vanished_is_a_miss(store: Store, root: Path) -> None:
    bundle, serialised = bundle_of(x=1)
    store.put_value(bundle, serialised)
    blob = file_blob(store, b"the bytes a cell wrote")
    store.put(make_entry(KEY_A, bundle, written={"/tmp/out.txt": blob}))
    (root / f"v{FORMAT_VERSION}" / "values" / blob[:2] / blob).unlink()
    with pytest.warns(CacheWarning, match="no longer in the cache"):
        assert store.get(KEY_A) is None
    assert not store.hit(KEY_A)


def test_files_are_private(store: Store, root: Path) -> None:
    record(store, KEY_A, x=1)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    for path in files(root, "entries") + files(root, "values"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_names_must_be_hex(store: Store) -> None:
    for bad in ("../../etc/passwd", "ABCDEF0123", "ab"):
        with pytest.raises(ValueError):
            store.hit(bad)


def test_entries_must_be_json(store: Store) -> None:
    entry = dataclasses.replace(make_entry(KEY_A), outputs=[{"data": object()}])
    with pytest.raises(StoreError, match="JSON"):
        store.put(entry)


# -- corrupt, foreign and unreadable files ------------------------------------------


def flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1 :]


CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "flipped byte": (flip_middle_byte, r"corrupt \(checksum mismatch\)"),
    "truncated": (lambda data: data[: len(data) // 2], r"corrupt \(truncated\)"),
    "empty": (lambda data: b"", r"corrupt \(truncated\)"),
    "garbage": (lambda data: os.urandom(len(data)), r"corrupt \(not an incrcell cache file\)"),
    "trailing bytes": (lambda data: data + b"\0", r"corrupt \(trailing bytes\)"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_entries_are_misses_with_a_warning(
    store: Store, root: Path, corruption: str
) -> None:
    mutate, message = CORRUPTIONS[corruption]
    entry = record(store, KEY_A, x=np.arange(10))
    path = files(root, "entries")[0]
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.warns(CacheWarning, match=message) as warned:
        assert store.get(KEY_A) is None
    assert warned[0].filename == __file__  # attributed to the caller
    assert str(warned[0].message).endswith("; running the cell instead.")
    assert not path.exists()  # removed, so that the next put can replace it
    store.put(entry)
    assert store.get(KEY_A) == entry


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_values_raise_store_error(
    store: Store, root: Path, corruption: str, no_warnings: None
) -> None:
    mutate, message = CORRUPTIONS[corruption]
    digest, serialised = bundle_of(x=np.arange(10_000))
    store.put_value(digest, serialised)
    path = files(root, "values")[0]
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(StoreError, match=message) as raised:
        store.get_value(digest)
    assert "\n" not in raised.value.reason
    assert store.put_value(digest, serialised) > 0  # not deduplicated against the bad file
    np.testing.assert_array_equal(load(store, digest)[0]["x"], np.arange(10_000))


@pytest.mark.parametrize("where", [0.01, 0.5, 0.99])
def test_large_values_are_verified_while_they_are_read(
    store: Store, root: Path, where: float, no_warnings: None
) -> None:
    """Files over one read chunk are hashed and signed chunk by chunk as they are read:
    a flipped byte anywhere is still caught, and an intact file loads."""
    big = np.arange(12_000_000, dtype=np.float64)  # 96 MB: several chunks
    digest, serialised = bundle_of(big=big)
    store.put_value(digest, serialised)
    np.testing.assert_array_equal(load(store, digest)[0]["big"], big)
    path = files(root, "values")[0]
    with open(path, "r+b") as file:
        file.seek(int(path.stat().st_size * where))
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(StoreError, match="checksum mismatch"):
        store.get_value(digest)


def test_a_corrupt_value_is_not_deduplicated_against(store: Store, root: Path) -> None:
    """After a corrupt entry, the engine re-records the cell: the value must be rewritten."""
    value = np.arange(10_000)
    entry = record(store, KEY_A, x=value)
    entry_file, value_file = files(root, "entries")[0], files(root, "values")[0]
    entry_file.write_bytes(b"garbage")
    value_file.write_bytes(flip_middle_byte(value_file.read_bytes()))
    fresh = open_store(root, signer=Signer(KEY))  # the next session
    with pytest.warns(CacheWarning):
        assert fresh.get(KEY_A) is None
    digest = entry.bundle
    assert not fresh.has_value(digest)  # the checksum caught it...
    assert not value_file.exists()  # ...and the file is gone
    assert record(fresh, KEY_A, x=value) == dataclasses.replace(
        entry, created=fresh.get(KEY_A).created
    )
    np.testing.assert_array_equal(values(open_store(root, signer=Signer(KEY)), entry)["x"], value)


def test_has_value_reads_a_file_once_per_store(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serialised = dumps(np.arange(1000))
    digest = digest_of(serialised)
    store.put_value(digest, serialised)
    checks = []
    real_check = Store._verify
    monkeypatch.setattr(Store, "_verify", lambda *args: checks.append(args) or real_check(*args))
    fresh = open_store(root, signer=Signer(KEY))
    assert (
        fresh.has_value(digest)
        and fresh.has_value(digest)
        and fresh.put_value(digest, serialised) == 0
    )
    assert len(checks) == 1
    assert store.has_value(digest) and len(checks) == 1  # the writer knows its file is intact
    files(root, "values")[0].unlink()
    assert not fresh.has_value(digest)  # still an existence check every time


def test_files_signed_by_an_untrusted_key_are_misses_naming_it(root: Path) -> None:
    theirs = open_store(root, signer=Signer(OTHER))
    entry = record(theirs, KEY_A, x=1)
    theirs.put_note("lineage", {"cell": 1})
    ours = open_store(root, signer=Signer(KEY))
    named = f"signed by an untrusted key {fingerprint(Signer(OTHER).public)}"
    with pytest.warns(CacheWarning, match=re.escape(named)):
        assert ours.get(KEY_A) is None
    with pytest.raises(StoreError, match=re.escape(named)):
        ours.get_value(entry.bundle)
    with pytest.warns(CacheWarning, match=re.escape(named)):
        assert ours.get_note("lineage") is None


@pytest.mark.parametrize("how", ["public key", "fingerprint"])
def test_files_signed_by_a_trusted_key_are_used(root: Path, how: str) -> None:
    theirs = Signer(OTHER)
    entry = record(open_store(root, signer=theirs), KEY_A, x=[1, 2])
    pin = theirs.public if how == "public key" else theirs.fingerprint
    ours = open_store(root, signer=Signer(KEY, trusted=[pin]))
    assert ours.get(KEY_A) == entry and values(ours, entry)["x"] == [1, 2]
    again = open_store(root, signer=Signer(KEY, trusted=[pin]))  # verified without our seal
    assert again.get(KEY_A) == entry


class Exploit:
    """Unpickling this writes a file: proof that an untrusted pickle was run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_untrusted_pickles_are_never_run(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = Serialised("pickle", pickle.dumps(Exploit(marker), protocol=5), [])
    open_store(root, signer=Signer(OTHER)).put_value("ee" * 16, evil)
    ours = open_store(root, signer=Signer(KEY))
    with pytest.raises(StoreError, match="untrusted key"):
        ours.get_value("ee" * 16)
    assert not marker.exists()


def test_tampering_that_fixes_up_the_checksum_fails_the_signature(store: Store, root: Path) -> None:
    serialised = dumps(list(range(100)))
    digest = digest_of(serialised)
    store.put_value(digest, serialised)
    path = files(root, "values")[0]
    data = bytearray(flip_middle_byte(path.read_bytes()))
    data[24:56] = hashlib.sha256(data[184:]).digest()
    path.write_bytes(data)
    with pytest.raises(StoreError, match="signature does not verify"):
        store.get_value(digest)


def test_a_forged_file_claiming_a_trusted_signer_is_refused(root: Path) -> None:
    """The attacker signs with their own key but writes the trusted key into the header."""
    ours = open_store(root, signer=Signer(KEY))
    digest, serialised = bundle_of(x=1)
    open_store(root, signer=Signer(OTHER)).put_value(digest, serialised)
    path = files(root, "values")[0]
    data = bytearray(path.read_bytes())
    data[56:88] = Signer(KEY).public
    path.write_bytes(data)
    with pytest.raises(StoreError, match="signature does not verify"):
        ours.get_value(digest)


def test_a_valid_file_under_another_name_is_refused(store: Store, root: Path) -> None:
    first, second = dumps("first"), dumps("second")
    store.put_value(digest_of(first), first)
    store.put_value(digest_of(second), second)
    source, target = (
        root / f"v{FORMAT_VERSION}" / "values" / d[:2] / d
        for d in (digest_of(first), digest_of(second))
    )
    target.write_bytes(source.read_bytes())
    with pytest.raises(StoreError, match="wrong name"):
        store.get_value(digest_of(second))


def test_unreadable_files_are_misses_and_left_alone(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = record(store, KEY_A, x=1)

    def denied(name):
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(store.backend, "open", denied)  # works as root too
    with pytest.warns(CacheWarning, match="cannot be read \\(Permission denied\\)"):
        assert store.get(KEY_A) is None
    with pytest.raises(StoreError, match="Permission denied"):
        store.get_value(entry.bundle)
    monkeypatch.undo()
    assert store.get(KEY_A) == entry


def test_values_that_cannot_be_loaded_here_raise_store_error_and_are_kept(
    store: Store, no_warnings: None
) -> None:
    """The store hands out verified bytes; loading them (and failing to) is the engine's."""
    stream = b"cincrcell_no_such_module\nthing\n."  # a global from a module this environment lacks
    store.put_value("dd" * 16, Serialised("pickle", stream, []))
    assert bytes(store.get_value("dd" * 16).stream) == stream
    with pytest.raises(ModuleNotFoundError):
        load(store, "dd" * 16)
    assert store.has_value("dd" * 16)


def test_a_value_too_large_for_memory_is_a_miss(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = record(store, KEY_A, x=1)

    def no_memory(size: int) -> memoryview:
        raise MemoryError

    monkeypatch.setattr(cache_module, "aligned_buffer", no_memory)
    with pytest.warns(CacheWarning, match="too large for the memory available"):
        assert store.get(KEY_A) is None
    with pytest.raises(StoreError, match="too large for the memory available"):
        store.get_value(entry.bundle)


# -- crashes, full disks and races --------------------------------------------------

SLOW_WRITER = """
import os, sys, time
import numpy as np
from incrcell.serialise import dumps
from incrcell.store import Signer, open_store

real_writev = os.writev
def slow_writev(fd, buffers):
    time.sleep(0.01)
    return real_writev(fd, [memoryview(buffers[0]).cast("B")[: 1 << 16]])
os.writev = slow_writev
open_store(sys.argv[1], signer=Signer(b"k" * 32)).put_value(sys.argv[2], dumps(np.ones(4_000_000)))
"""


def test_a_writer_killed_mid_write_leaves_a_clean_miss(
    store: Store, root: Path, tmp_path: Path
) -> None:
    script = tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER)
    digest = "cc" * 16
    writer = subprocess.Popen([sys.executable, str(script), str(root), digest])
    try:
        deadline = time.monotonic() + 60
        while not any(path.stat().st_size > 0 for path in files(root, "values", temp=True)):
            assert writer.poll() is None and time.monotonic() < deadline, (
                "the writer never started writing"
            )
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert files(root, "values") == []
    assert not store.has_value(digest)
    with pytest.raises(StoreError, match="not in the cache"):
        store.get_value(digest)
    assert store.get(KEY_A) is None
    [temp] = files(root, "values", temp=True)
    open_store(root, signer=Signer(KEY)).wait()  # the next start sweeps it: its writer is gone
    assert not temp.exists()


def test_temp_files_of_live_or_remote_writers_stay_for_an_hour(store: Store, root: Path) -> None:
    temps = root / f"v{FORMAT_VERSION}" / "tmp"
    temps.mkdir(parents=True, exist_ok=True)
    live = temps / f".tmp-{os.getpid()}-{file_module._HOST}-abc"
    remote = temps / ".tmp-1-0123abcd-abc"  # another host's: its process cannot be asked
    for temp in (live, remote):
        temp.write_bytes(b"half a value")
    open_store(root, signer=Signer(KEY)).wait()
    assert live.exists() and remote.exists()
    an_hour_ago = time.time() - 3601
    os.utime(remote, (an_hour_ago, an_hour_ago))
    open_store(root, signer=Signer(KEY)).wait()
    assert live.exists() and not remote.exists()


def full_disk_after(limit: int, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Let ``limit`` bytes through os.writev (the file backend's one write call), then fail."""
    real_writev = os.writev
    written = 0

    def writev(fd: int, buffers) -> int:
        nonlocal written
        if written >= limit:
            raise error
        allowed, views = limit - written, []
        for buffer in buffers:
            view = memoryview(buffer).cast("B")[:allowed]
            allowed -= view.nbytes
            views.append(view)
        count = real_writev(fd, views)
        written += count
        return count

    monkeypatch.setattr(os, "writev", writev)


def test_a_full_disk_is_a_store_error_and_leaves_nothing_behind(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = record(store, KEY_A, x=np.arange(100))
    serialised = dumps(np.arange(100_000))
    digest = digest_of(serialised)
    full_disk_after(10_000, monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_value(digest, serialised)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put(make_entry(KEY_A, kept.bundle, variables=kept.variables))
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_note("lineage", {"x": "y" * 20_000})
    monkeypatch.undo()
    assert files(root, "values", temp=True) == files(root, "entries", temp=True) == []
    assert not store.has_value(digest)
    assert store.get(KEY_A) == kept  # the earlier entry is intact
    assert store.get_note("lineage") is None


def test_an_interrupted_write_cleans_up_and_propagates(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serialised = dumps(np.arange(100_000))
    full_disk_after(1000, monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        store.put_value(digest_of(serialised), serialised)
    monkeypatch.undo()
    assert files(root, "values", temp=True) == files(root, "values") == []


def concurrent_writer(root: str, barrier) -> None:
    store = open_store(root, signer=Signer(KEY))
    bundle, serialised = bundle_of(big=np.arange(1_000_000.0), small=list(range(1000)))
    barrier.wait()
    store.put_value(bundle, serialised)
    written = {"/tmp/out.bin": file_blob(store, bytes(range(256)) * 1000)}
    store.put(make_entry(KEY_A, bundle, written=written))


def test_concurrent_writers_leave_one_valid_entry(store: Store, root: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    writers = [
        context.Process(target=concurrent_writer, args=(str(root), barrier)) for _ in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    entry = store.get(KEY_A)
    assert entry is not None
    restored = values(store, entry)
    np.testing.assert_array_equal(restored["big"], np.arange(1_000_000.0))
    assert restored["small"] == list(range(1000))
    assert load(store, entry.written["/tmp/out.bin"]) == bytes(range(256)) * 1000
    assert (
        len(files(root, "values")) == 2 and len(files(root, "entries")) == 1
    )  # the bundle, the file
    assert files(root, "values", temp=True) == files(root, "entries", temp=True) == []


# -- housekeeping ---------------------------------------------------------------------


def test_delete_collects_values_no_entry_needs(store: Store, root: Path) -> None:
    shared = np.arange(50)
    first = record(store, KEY_A, shared=shared)
    second = record(store, KEY_B, shared=shared)
    own = record(store, KEY_C, own=1)
    assert first.bundle == second.bundle != own.bundle
    orphan, young = dumps("written, but its entry never was"), dumps("its entry is on the way")
    for value in (orphan, young):
        store.put_value(digest_of(value), value)
    an_hour_ago = time.time() - 3600
    os.utime(
        files(root, "values")[[p.name for p in files(root, "values")].index(digest_of(orphan))],
        (an_hour_ago, an_hour_ago),
    )
    assert store.delete([KEY_A, KEY_C, "99" * 16]) == 2
    assert not store.hit(KEY_A) and not store.hit(KEY_C)
    assert not store.has_value(own.bundle)
    assert not store.has_value(digest_of(orphan))
    assert store.has_value(digest_of(young))  # another kernel may be writing its entry
    assert store.get(KEY_B) == second
    np.testing.assert_array_equal(values(store, second)["shared"], shared)


def test_delete_keeps_the_files_an_entry_wrote(store: Store, root: Path, no_warnings: None) -> None:
    first_bundle, first_values = bundle_of(x=1)
    second_bundle, second_values = bundle_of(x=2)
    store.put_value(first_bundle, first_values)
    store.put_value(second_bundle, second_values)
    shared = file_blob(store, b"both cells wrote this")
    own = file_blob(store, b"only the first cell wrote this")
    deleted = {"/tmp/gone.txt": files_module.MISSING}  # a file the cell deleted: no blob
    first = make_entry(
        KEY_A, first_bundle, written={"/tmp/out.txt": shared, "/tmp/own.txt": own, **deleted}
    )
    second = make_entry(KEY_B, second_bundle, written={"/tmp/out.txt": shared, **deleted})
    store.put(first)  # MISSING is not taken for a value that must be in the cache
    store.put(second)
    assert first.digests() == {first_bundle, shared, own}
    assert files_module.MISSING not in second.digests()
    assert store.get(KEY_A) == first and store.get(KEY_B) == second
    assert (
        store.delete([]) == 0
    )  # a collection keeps both entries (MISSING is no dangling reference)...
    assert len(files(root, "values")) == 4  # ...and every blob they need
    assert store.get(KEY_A) == first and store.get(KEY_B) == second
    assert store.delete([KEY_A]) == 1
    assert not store.has_value(first_bundle) and not store.has_value(own)
    assert store.get(KEY_B) == second
    assert load(store, shared) == b"both cells wrote this"
    assert store.delete([KEY_B]) == 1
    assert files(root, "values") == []


def test_delete_removes_corrupt_entries_and_their_values(store: Store, root: Path) -> None:
    entry = record(store, KEY_A, x=1)
    path = files(root, "entries")[0]
    path.write_bytes(flip_middle_byte(path.read_bytes()))
    assert store.delete([]) == 0
    assert not path.exists()
    # what it needed is unknown: its values go once no one can be writing an entry for them
    [value] = files(root, "values")
    an_hour_ago = time.time() - 3600
    os.utime(value, (an_hour_ago, an_hour_ago))
    assert store.delete([]) == 0
    assert not store.has_value(entry.bundle)


def test_clear_and_size(store: Store, root: Path) -> None:
    assert store.size() == 0
    record(store, KEY_A, x=np.arange(10_000))
    store.put_note("lineage", {"a": 1})
    on_disk = sum(
        path.stat().st_size for path in (root / f"v{FORMAT_VERSION}").rglob("*") if path.is_file()
    )
    assert store.size() == on_disk > 80_000
    store.clear()
    assert store.size() == 0
    assert store.get(KEY_A) is None and store.get_note("lineage") is None
    record(store, KEY_B, y=2)  # still usable afterwards
    assert store.hit(KEY_B)


def test_notes_round_trip(store: Store, root: Path, no_warnings: None) -> None:
    assert store.get_note("cell-1") is None
    store.put_note("cell-1", {"components": {"source": "ab"}, "n": 1})
    store.put_note("céll/2 ✓", {"n": 2})
    assert store.get_note("cell-1") == {"components": {"source": "ab"}, "n": 1}
    assert store.get_note("céll/2 ✓") == {"n": 2}
    store.put_note("cell-1", {"n": 3})
    assert store.get_note("cell-1") == {"n": 3}
    assert len(files(root, "notes")) == 2


def test_a_note_under_another_notes_name_is_refused(store: Store, root: Path) -> None:
    store.put_note("one", {"n": 1})
    store.put_note("two", {"n": 2})
    one, two = (
        root / f"v{FORMAT_VERSION}" / "notes" / h[:2] / h
        for h in (xxhash.xxh3_128_hexdigest(n.encode()) for n in ("one", "two"))
    )
    two.write_bytes(one.read_bytes())
    with pytest.warns(CacheWarning, match="wrong name"):
        assert store.get_note("two") is None


# -- the signing key ------------------------------------------------------------------


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    signing_key.cache_clear()
    yield tmp_path / "config"
    signing_key.cache_clear()


def test_signing_key_file_is_created_private_and_reused(config_home: Path) -> None:
    key = signing_key()
    path = config_home / "incrcell" / "signing.key"
    assert path.read_bytes() == key and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    signing_key.cache_clear()
    assert signing_key() == key


def test_signing_key_from_the_environment(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, private_text(OTHER))
    assert signing_key() == OTHER
    assert not (config_home / "incrcell" / "signing.key").exists()
    signing_key.cache_clear()
    monkeypatch.setenv(KEY_ENV, "a shared secret of the old kind")
    with pytest.raises(KeyRefused, match="incrcell key generate"):
        signing_key()


@pytest.mark.parametrize(
    "damage",
    [
        "empty",
        "short",
        "group-writable",
        "world-writable",
        "group-readable",
        "symlink",
        "dangling symlink",
        "directory",
    ],
)
def test_an_unsafe_or_damaged_signing_key_is_refused_never_replaced(
    config_home: Path, tmp_path: Path, damage: str
) -> None:
    path = config_home / "incrcell" / "signing.key"
    path.parent.mkdir(parents=True)
    real = tmp_path / "elsewhere.key"
    real.write_bytes(b"s" * 32)
    real.chmod(0o600)
    if damage in ("empty", "short"):
        path.write_bytes(b"" if damage == "empty" else b"s" * 31)
    elif damage.endswith(("writable", "readable")):
        path.write_bytes(b"s" * 32)
        path.chmod({"group-writable": 0o620, "world-writable": 0o602}.get(damage, 0o640))
    elif damage == "symlink":
        path.symlink_to(real)
    elif damage == "dangling symlink":
        path.symlink_to(tmp_path / "gone.key")
    else:
        path.mkdir()
    before = os.lstat(path)
    with pytest.raises(KeyRefused) as refused:
        signing_key()
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    assert any(fix in message for fix in ("chmod 600", "remove it", "replace it"))
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_size) == (
        before.st_ino,
        before.st_mode,
        before.st_size,
    )
    with pytest.raises(StoreError, match="nothing is cached until then"):
        open_store(tmp_path / "cache")


def key_in_a_fresh_process(_: int) -> bytes:
    return signing_key()


def test_processes_racing_to_create_the_key_agree(config_home: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = set(pool.map(key_in_a_fresh_process, range(8)))
    assert keys == {(config_home / "incrcell" / "signing.key").read_bytes()}


def test_the_default_signer_uses_the_signing_key(config_home: Path, root: Path) -> None:
    entry = record(open_store(root), KEY_A, x=1)
    assert open_store(root, signer=Signer(signing_key())).get(KEY_A) == entry


def test_writes_after_clear_recreate_the_directories(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache", signer=Signer(b"k" * 32))
    store.put_note("a", {"n": 1})
    store.clear()
    store.put_note("a", {"n": 2})  # its shard directory was removed by clear()
    assert store.get_note("a") == {"n": 2}


# -- every backend: the same policy -----------------------------------------------------

_SPACES = iter(range(10**6))


@pytest.fixture(params=["file", "memory"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    """Opens "the same cache" again (a kernel restart), on each backend."""
    url = str(tmp_path / "cache") if request.param == "file" else f"memory://test{next(_SPACES)}"

    def open_(**options: object) -> Store:
        return open_store(url, signer=options.pop("signer", Signer(KEY)), **options)

    return open_


def test_every_backend_round_trips_dedupes_and_refuses_foreign_files(
    opener: Callable[..., Store], no_warnings: None
) -> None:
    store = opener()
    entry = record(store, KEY_A, x=np.arange(10), y="y")
    again = opener()
    assert again.get(KEY_A) == entry
    restored = values(again, entry)
    np.testing.assert_array_equal(restored["x"], np.arange(10))
    assert restored["x"].flags.writeable
    assert again.put_value(entry.bundle, bundle_of(x=np.arange(10), y="y")[1]) == 0
    assert again.get_note("n") is None
    again.put_note("n", {"a": 1})
    assert opener().get_note("n") == {"a": 1}
    theirs = opener(signer=Signer(OTHER))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert theirs.get(KEY_A) is None
    with pytest.raises(StoreError, match="untrusted key"):
        theirs.get_value(entry.bundle)


def test_a_value_signed_with_another_key_is_never_deduplicated_against(
    opener: Callable[..., Store],
) -> None:
    """After a key change, a new entry must not refer to a value the current key rejects."""
    bundle, serialised = bundle_of(x=list(range(100)))
    opener(signer=Signer(OTHER)).put_value(bundle, serialised)
    ours = opener()
    assert not ours.has_value(bundle)
    assert ours.put_value(bundle, serialised) > 0  # written anew, with our key
    ours.put(make_entry(KEY_A, bundle))
    assert values(opener(), opener().get(KEY_A))["x"] == list(range(100))


def sized(store: Store, key: str, nbytes: int) -> Entry:
    """An entry with one value of about ``nbytes``."""
    return record(store, key, x=np.full(nbytes // 8, int(key[:2], 16), dtype=np.int64))


def age(store: Store, key: str, seconds_ago: float) -> None:
    """Make ``key``'s entry look last used ``seconds_ago`` (and its values before it)."""
    backend = store.backend
    name = f"entries/{key[:2]}/{key}"
    if hasattr(backend, "root"):
        os.utime(Path(backend.root, name), (time.time() - seconds_ago,) * 2)
        for digest in store._load(ENTRY, key, parse_entry).digests():  # read, not used
            value = Path(backend.root, f"values/{digest[:2]}/{digest}")
            os.utime(value, (time.time() - seconds_ago - 1,) * 2)
    else:
        objects = backend._objects
        objects[name][1] = time.time() - seconds_ago
        for other, found in objects.items():
            if other.startswith("values/"):
                found[1] = min(found[1], time.time() - seconds_ago - 1)


KEYS = [f"{i:02x}" * 16 for i in range(16, 26)]


def test_eviction_is_least_recently_used_and_a_hit_counts_as_a_use(
    opener: Callable[..., Store], no_warnings: None
) -> None:
    store = opener(housekeeping=False)
    for index, key in enumerate(KEYS[:4]):
        sized(store, key, 100_000)
        age(store, key, 1000 - index * 100)  # KEYS[0] oldest
    assert opener(housekeeping=False).get(KEYS[0]) is not None  # a restore: now the newest
    # the sidebar's Cache view reading an entry: not a use
    assert opener(housekeeping=False).get(KEYS[1], use=False) is not None
    fresh = opener(housekeeping=False)
    done = fresh.gc(max_size=250_000)
    assert (done.entries, done.values) == (2, 2)
    assert [fresh.hit(key) for key in KEYS[:4]] == [True, False, False, True]
    assert fresh.size() == done.size_after <= 250_000
    assert fresh.usage().size == done.size_after


def test_a_shared_value_is_counted_once_and_goes_with_the_last_entry(
    opener: Callable[..., Store],
) -> None:
    store = opener(housekeeping=False)
    shared = np.zeros(50_000)
    for key in KEYS[:2]:
        record(store, key, shared=shared)
    usage = store.usage()
    assert usage.values == 1 and usage.size < 2 * shared.nbytes  # stored and counted once
    age(store, KEYS[0], 500)
    done = store.gc(max_size=usage.size - 1)  # one entry must go
    assert (done.entries, done.values) == (1, 0) and store.hit(KEYS[1])
    assert values(store, store.get(KEYS[1]))["shared"].nbytes == shared.nbytes
    done = store.gc(max_size=1000)
    assert (done.entries, done.values) == (1, 1)
    assert store.usage().values == 0


def test_the_entries_of_the_notebook_being_worked_on_go_last(opener: Callable[..., Store]) -> None:
    other = opener(housekeeping=False)
    for key in KEYS[:2]:
        sized(other, key, 100_000)
    ours = opener(housekeeping=False)
    for key in KEYS[2:4]:
        sized(ours, key, 100_000)
        age(ours, key, 5000)  # ours are older than the other notebook's...
    done = ours.gc(max_size=250_000)
    assert done.entries == 2
    assert [ours.hit(key) for key in KEYS[:4]] == [False, False, True, True]  # ...yet stay


def test_max_age_evicts_entries_unused_for_longer(opener: Callable[..., Store]) -> None:
    store = opener(housekeeping=False)
    for key in KEYS[:3]:
        sized(store, key, 1000)
    age(store, KEYS[0], 40 * 86400)
    done = opener(housekeeping=False).gc(max_age=30 * 86400)
    assert done.entries == 1 and [store.hit(k) for k in KEYS[:3]] == [False, True, True]
    assert "unused for 40 days" in done.removed[0][1]


def test_a_write_over_the_cap_evicts_in_the_background(opener: Callable[..., Store]) -> None:
    store = opener(max_size=350_000)
    store.wait()
    for index, key in enumerate(KEYS[:6]):
        sized(store, key, 100_000)
        age(store, key, 1000 - index)
        store.wait()
    assert store.size() <= 350_000
    assert store.hit(KEYS[5]) and not store.hit(KEYS[0])
    assert opener(housekeeping=False).usage().size <= 350_000


def test_a_value_evicted_between_lookup_and_load_is_a_miss(opener: Callable[..., Store]) -> None:
    store = opener(housekeeping=False)
    entry = sized(store, KEYS[0], 1000)
    assert store.get(KEYS[0]) == entry
    age(store, KEYS[0], 100)
    other = opener(housekeeping=False)
    other.gc(max_size=0)
    with pytest.raises(StoreError, match="not in the cache"):
        store.get_value(entry.bundle)


def test_values_being_referred_to_by_an_entry_in_writing_are_kept(
    opener: Callable[..., Store],
) -> None:
    """gc between a writer's values and its entry (values first) never takes the values."""
    writer = opener(housekeeping=False)
    bundle, serialised = bundle_of(x=list(range(1000)))
    writer.put_value(bundle, serialised)
    opener(housekeeping=False).gc(max_size=0)
    writer.put(make_entry(KEY_A, bundle))  # would raise if the value had gone
    # deduplicating against a value whose only entry is old makes it recent again
    age(writer, KEY_A, 5000)
    assert writer.has_value(bundle)
    opener(housekeeping=False).gc(max_size=0)
    writer.put(make_entry(KEY_B, bundle))
    assert values(writer, writer.get(KEY_B))["x"] == list(range(1000))


def test_verify_removes_and_reports_what_fails(store: Store, root: Path) -> None:
    good = record(store, KEY_A, x=1)
    bad = record(store, KEY_B, y=np.arange(1000))
    store.put_note("n", {"a": 1})
    value = root / f"v{FORMAT_VERSION}" / "values" / bad.bundle[:2] / bad.bundle
    data = bytearray(value.read_bytes())
    data[-1] ^= 1
    value.write_bytes(bytes(data))
    done = open_store(root, signer=Signer(KEY)).verify()
    assert [why for _, why in done.removed] == ["is corrupt (checksum mismatch)"]
    assert not value.exists()
    fresh = open_store(root, signer=Signer(KEY))
    assert fresh.get(KEY_A) == good and fresh.get_note("n") == {"a": 1}
    with pytest.warns(CacheWarning, match="no longer in the cache"):
        assert fresh.get(KEY_B) is None
    assert open_store(root, signer=Signer(OTHER)).verify().removed  # untrusted: all of it


@pytest.mark.parametrize("kind", ["entries", "values", "notes"])
def test_special_files_in_the_cache_never_block(store: Store, root: Path, kind: str) -> None:
    name = {"entries": KEY_A, "values": "ab" * 16, "notes": xxhash.xxh3_128_hexdigest(b"n")}[kind]
    path = root / f"v{FORMAT_VERSION}" / kind / name[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)  # a reader opening it blockingly would wait for a writer forever
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "entries":
            assert store.get(KEY_A) is None
        elif kind == "values":
            assert not store.has_value(name)
            with pytest.raises(StoreError, match="not a regular file"):
                store.get_value(name)
        else:
            assert store.get_note("n") is None
    assert kind == "values" or "not a regular file" in str(caught[0].message)
    store.verify()
    store.gc()


def test_an_unusable_cache_location_says_so_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError) as refused:
        open_store(blocker / "cache", signer=Signer(KEY))
    assert "cannot be used (Not a directory)" in refused.value.reason
    with pytest.raises(StoreError, match="unknown cache location"):
        open_store("s3://bucket/cache", signer=Signer(KEY))


def test_an_unusable_cache_warns_once_per_session(
    config_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from harness import Session

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    session = Session(blocker / "cache", monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = [session.run(f"x{i} = {i}") for i in range(3)]
    assert [str(w.message) for w in caught if issubclass(w.category, CacheWarning)] == [
        f"incrcell: the cache directory {blocker / 'cache'} cannot be used (Not a directory); "
        "set INCRCELL_CACHE_DIR or run %incrcell config cache_dir=PATH."
    ]
    assert all(
        o.record.reason is not None
        and o.record.reason.code is Code.CACHE_UNUSABLE
        and "cannot be used" in o.record.reason.details["detail"]
        for o in outcomes
    )
    assert session.ns["x2"] == 2


# -- faults, through a real kernel ----------------------------------------------------------


def test_a_kernel_says_once_why_it_caches_nothing(
    workdir: Path, cache_env: dict[str, str], tmp_path: Path
) -> None:
    """An unusable cache directory, then a key others can write: one line each, cells run."""
    from kernel import LOAD, Kernel, incrcell_lines

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cells = [LOAD, ("a", "x = 1"), ("b", "y = x + 1\ny")]

    kernel = Kernel(workdir, {**cache_env, "INCRCELL_CACHE_DIR": str(blocker / "cache")})
    try:
        first = kernel.run_all(cells)
        assert [e.status for e in first] == ["ok"] * 3 and kernel.value("y") == "2"
        [line] = incrcell_lines(first)
        assert "cannot be used (Not a directory)" in line and "INCRCELL_CACHE_DIR" in line
        kernel.shutdown()
        key = Path(cache_env["XDG_CONFIG_HOME"]) / "incrcell" / "signing.key"
        key.parent.mkdir(parents=True)
        key.write_bytes(b"s" * 32)
        key.chmod(0o666)
        kernel = Kernel(workdir, cache_env)
        runs = [kernel.run_all(cells) for _ in range(2)]
        assert kernel.value("y") == "2" and not any(e.restored for e in runs[1])
        [line] = incrcell_lines(runs[0] + runs[1])
        assert "writable by others" in line and f"chmod 600 {key}" in line
        assert key.read_bytes() == b"s" * 32  # never replaced
    finally:
        kernel.shutdown()


def test_status_shows_the_size_against_the_cap_that_config_sets(kernel) -> None:
    from kernel import LOAD

    kernel.run_all([LOAD, ("a", "import numpy as np\nx = np.ones(100_000)")])
    configured = kernel.run("%incrcell config max_size=500MB max_age=30d").stdout
    assert "max_size = 500.0 MB" in configured and "max_age = 30d" in configured
    status = kernel.run("%incrcell status").stdout.splitlines()[0]
    assert "kB of 500.0 MB in " in status, status  # 800 kB of values
    refused = kernel.run("%incrcell config max_size=lots")
    assert refused.status == "error" and "expected a size like 20GB" in refused.error["evalue"]


def test_the_engine_runs_on_the_store_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """memory://: a restart is a new engine on the same name; nothing touches the disk."""
    import builtins
    import types

    from incrcell.config import Config
    from incrcell.engine import RESTORED, Engine

    from harness import run_cell

    cells = ["import numpy as np\nx = np.arange(5)", "y = x * 2\nprint(y.sum())"]
    states = []
    for _ in range(2):
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        monkeypatch.setitem(sys.modules, "__main__", module)
        engine = Engine(
            Config(cache_dir=tmp_path / "unused"),
            store=open_store("memory://engine-test", signer=Signer(KEY)),
        )
        outcomes = [
            run_cell(engine, module.__dict__, source, f"c{i}", i + 1)
            for i, source in enumerate(cells)
        ]
        states.append([o.record.state for o in outcomes])
        assert module.__dict__["y"].tolist() == [0, 2, 4, 6, 8]
    assert states[1] == [RESTORED, RESTORED]
    assert not (tmp_path / "unused").exists()


def test_delete_takes_its_entries_values_but_not_those_of_an_entry_in_writing(
    opener: Callable[..., Store],
) -> None:
    store = opener(housekeeping=False)
    mine = record(store, KEY_A, x=list(range(10)))
    writer = opener(housekeeping=False)  # another kernel, between its values and its entry
    bundle, serialised = bundle_of(y=list(range(20)))
    writer.put_value(bundle, serialised)
    assert store.delete([KEY_A]) == 1
    assert not store.has_value(mine.bundle)
    writer.put(make_entry(KEY_B, bundle))  # its value is still there
    assert values(writer, writer.get(KEY_B))["y"] == list(range(20))
