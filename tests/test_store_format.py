"""The cache format's fast paths and how they fail safe.

Large values are mapped copy-on-write and verified in place (store/file.py, Store._read);
small values travel inside their entry's file (Store.put).  Every damage is a miss with
one line saying why, never a wrong value, never a crash; restored values are plain,
writeable, independent objects that fingerprint like the originals.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xxhash

from incrcell.fingerprint import ValueHasher
from incrcell.serialise import dumps, loads
from incrcell.store import FORMAT_VERSION, CacheWarning, Entry, Store, StoreError, open_store
from incrcell.store import file as file_module
from incrcell.store.codec import ENTRY, frame
from incrcell.store.entry import entry_bytes
from incrcell.store.signing import Signer

from kernel import LOAD, Kernel, states

KEY = b"k" * 32
OTHER = b"o" * 32
KEY_A, KEY_B = "a1" * 16, "b2" * 16
BIG = 400_000  # float64s: 3.2 MB, over the size that is mapped


def put(store: Store, key: str, **values: object) -> Entry:
    """What the engine stores for a cell that bound ``values``: their bundle, then the entry."""
    serialised = dumps((values, None), own=[*values.values(), None])
    bundle = xxhash.xxh3_128_hexdigest(serialised.stream + b"".join(serialised.buffers))
    store.put_value(bundle, serialised)
    entry = entry_of(key, bundle=bundle)
    store.put(entry)
    return entry


def entry_of(key: str, **fields: object) -> Entry:
    return Entry(
        **{
            "key": key,
            "source": f"# {key}",
            "variables": {},
            "deleted": [],
            "outputs": [],
            "result": None,
            "duration": 0.1,
            "created": time.time(),
            "components": {},
            **fields,
        }
    )


def restore(store: Store, key: str) -> dict[str, object]:
    """The values of the entry under ``key`` as the engine restores them."""
    entry = store.get(key)
    assert entry is not None and entry.bundle is not None
    stored = store.get_value(entry.bundle)
    return loads(stored.method, stored.stream, stored.buffers)[0]


def value_files(root: Path) -> list[Path]:
    return sorted((root / f"v{FORMAT_VERSION}" / "values").glob("*/*"))


def entry_files(root: Path) -> list[Path]:
    return sorted((root / f"v{FORMAT_VERSION}" / "entries").glob("*/*"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(root: Path) -> Store:
    return open_store(root, signer=Signer(KEY), housekeeping=False)


def fresh(root: Path) -> Store:
    """The next session's store (nothing remembered from the writer)."""
    return open_store(root, signer=Signer(KEY), housekeeping=False)


def big_array(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(BIG)


# -- large values: mapped copy-on-write ------------------------------------------------


def test_a_restored_array_is_a_plain_writeable_ndarray_whose_writes_stay_private(
    store: Store, root: Path
) -> None:
    original = big_array()
    put(store, KEY_A, a=original)
    (path,) = value_files(root)
    before = path.read_bytes()
    restored = restore(fresh(root), KEY_A)["a"]
    assert type(restored) is np.ndarray  # never a np.memmap
    assert restored.flags.writeable and restored.ctypes.data % 64 == 0
    np.testing.assert_array_equal(restored, original)
    restored[:] = -1.0
    assert path.read_bytes() == before  # copy-on-write: the file never sees it
    np.testing.assert_array_equal(restore(fresh(root), KEY_A)["a"], original)


def test_restored_values_fingerprint_like_the_originals(store: Store, root: Path) -> None:
    values = {
        "a": big_array(),
        "frame": pd.DataFrame({"x": big_array(1), "y": np.arange(BIG) % 7}),
        "small": {"k": [1, 2.5, "s"]},
    }
    put(store, KEY_A, **values)
    restored = restore(fresh(root), KEY_A)
    for name, value in values.items():
        with ValueHasher() as original, ValueHasher() as copy:
            assert original.hash(value) == copy.hash(restored[name]), name


def test_a_file_only_others_could_change_is_read_not_mapped(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(store, KEY_A, a=big_array())
    (path,) = value_files(root)
    path.chmod(0o620)  # group-writable: someone else could change it in place
    mapped = []
    real = file_module._map_private
    monkeypatch.setattr(file_module, "_map_private", lambda *a: mapped.append(a) or real(*a))
    restored = restore(fresh(root), KEY_A)["a"]
    np.testing.assert_array_equal(restored, big_array())
    assert not mapped and restored.flags.writeable


def damaged(path: Path, change) -> None:
    data = bytearray(path.read_bytes())
    data = change(data)
    path.write_bytes(bytes(data))


def flip_in_buffer(data: bytearray) -> bytearray:
    data[len(data) - BIG * 4] ^= 0x01  # one bit, deep inside the array's buffer
    return data


@pytest.mark.parametrize(
    "change, why",
    [
        (flip_in_buffer, "checksum mismatch"),
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data + b"\0" * 4096, "trailing bytes"),
    ],
    ids=["flipped bit in a big buffer", "truncated", "trailing bytes"],
)
def test_a_damaged_large_value_is_a_miss_never_a_wrong_value(
    store: Store, root: Path, change, why: str
) -> None:
    entry = put(store, KEY_A, a=big_array())
    (path,) = value_files(root)
    damaged(path, change)
    reader = fresh(root)
    assert reader.get(KEY_A) is not None
    with pytest.raises(StoreError, match=why):
        reader.get_value(entry.bundle or "")
    assert not path.exists()  # removed, so that the next run writes it anew


def test_a_buffer_swapped_in_from_another_entry_is_refused(store: Store, root: Path) -> None:
    first = put(store, KEY_A, a=big_array(0))
    second = put(store, KEY_B, a=big_array(1))
    path_of = {path.name: path for path in value_files(root)}
    mine, theirs = path_of[first.bundle or ""], path_of[second.bundle or ""]
    data, other = bytearray(mine.read_bytes()), theirs.read_bytes()
    assert len(data) == len(other)
    data[-BIG * 8 :] = other[-BIG * 8 :]  # the other entry's array, same shape and offset
    mine.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum mismatch"):
        fresh(root).get_value(first.bundle or "")


def test_a_large_value_from_a_foreign_signer_is_refused_before_it_is_read(root: Path) -> None:
    theirs = open_store(root, signer=Signer(OTHER), housekeeping=False)
    entry = put(theirs, KEY_A, a=big_array())
    with pytest.raises(StoreError, match="untrusted key"):
        fresh(root).get_value(entry.bundle or "")


def test_a_file_truncated_after_it_was_mapped_is_a_miss_not_a_crash(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process shrinks the file between the mapping and the checksum: reading
    the mapping past the new end would be SIGBUS."""
    entry = put(store, KEY_A, a=big_array())
    (path,) = value_files(root)
    real = file_module.FileBackend.map

    def map_then_truncate(self, file, size):
        mapped = real(self, file, size)
        os.truncate(path, 0)
        return mapped

    monkeypatch.setattr(file_module.FileBackend, "map", map_then_truncate)
    with pytest.raises(StoreError, match="changed while being read"):
        fresh(root).get_value(entry.bundle or "")


# -- small values: inside their entry's file -------------------------------------------


def test_a_small_cell_is_one_file_and_its_values_restore_independent_copies(
    store: Store, root: Path
) -> None:
    small = np.arange(100.0)
    put(store, KEY_A, x=1, lst=[1, 2], small=small)
    assert len(entry_files(root)) == 1 and not value_files(root)
    reader = fresh(root)
    first = restore(reader, KEY_A)
    assert first["x"] == 1 and first["lst"] == [1, 2]
    np.testing.assert_array_equal(first["small"], small)
    assert type(first["small"]) is np.ndarray and first["small"].flags.writeable
    first["small"][:] = 0
    first["lst"].append(3)
    again = restore(reader, KEY_A)  # the same process restoring it again
    np.testing.assert_array_equal(again["small"], small)
    assert again["lst"] == [1, 2]


def test_small_and_large_values_share_one_entry(store: Store, root: Path) -> None:
    """A large value is a file of its own (deduplicated across cells), a small one rides along."""
    array = big_array()
    put(store, KEY_A, a=array, n=3)
    put(store, KEY_B, n=3)
    assert len(value_files(root)) == 1 and len(entry_files(root)) == 2
    reader = fresh(root)
    np.testing.assert_array_equal(restore(reader, KEY_A)["a"], array)
    assert restore(reader, KEY_B) == {"n": 3}
    assert reader.verify().removed == []
    reader.delete([KEY_A])
    assert not value_files(root) and restore(fresh(root), KEY_B) == {"n": 3}


def test_an_entry_with_more_small_values_than_are_kept_restores_them_all(
    store: Store, root: Path
) -> None:
    """A cell that wrote many small files: every blob rides in its entry, and all of them
    are found after it is read, however many."""
    blobs = {}
    for index in range(150):
        serialised = dumps(f"file {index}".encode())
        digest = xxhash.xxh3_128_hexdigest(serialised.stream)
        store.put_value(digest, serialised)
        blobs[f"/work/out{index}.txt"] = digest
    store.put(entry_of(KEY_A, written=blobs))
    assert not value_files(root) and len(entry_files(root)) == 1
    reader = fresh(root)
    assert reader.get(KEY_A) is not None
    for index, digest in enumerate(blobs.values()):
        stored = reader.get_value(digest)
        assert loads(stored.method, stored.stream, stored.buffers) == f"file {index}".encode()


def test_a_damaged_entry_with_inline_values_is_a_miss_with_a_warning(
    store: Store, root: Path
) -> None:
    put(store, KEY_A, x=[1, 2, 3])
    (path,) = entry_files(root)
    damaged(path, lambda data: data[:-1] + bytes([data[-1] ^ 0xFF]))  # in the inline value
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        assert fresh(root).get(KEY_A) is None


def test_an_entry_whose_inline_table_does_not_match_its_parts_is_refused(
    store: Store, root: Path
) -> None:
    """Signed by us, so only the shape check stands between it and a wrong value."""
    entry = put(store, KEY_A, x=[1, 2, 3])
    bundle = entry.bundle or ""
    for inline in ({bundle: [1, 2]}, {bundle: [1, 0]}, {"zz": [1, 1]}):
        forged = Entry(**{**vars(entry), "inline": inline})
        chunks, _ = frame(ENTRY, 0, KEY_A, [entry_bytes(forged), b"x"], Signer(KEY))
        store.backend.write(f"entries/{KEY_A[:2]}/{KEY_A}", chunks)
        with pytest.warns(CacheWarning, match="not an entry"):
            assert fresh(root).get(KEY_A) is None


def test_an_entry_with_inline_values_from_a_foreign_signer_is_never_unpickled(
    root: Path, tmp_path: Path
) -> None:
    theirs = open_store(root, signer=Signer(OTHER), housekeeping=False)
    entry = put(theirs, KEY_A, x=1)
    reader = fresh(root)
    with pytest.warns(CacheWarning, match="untrusted key"):
        assert reader.get(KEY_A) is None
    with pytest.raises(StoreError):
        reader.get_value(entry.bundle or "")


def test_a_value_put_but_never_followed_by_its_entry_is_not_written(
    store: Store, root: Path
) -> None:
    serialised = dumps([1, 2])
    assert store.put_value("cd" * 16, serialised) > 0
    assert store.has_value("cd" * 16)
    assert not value_files(root) and not entry_files(root)
    assert not fresh(root).has_value("cd" * 16)


# -- through a real kernel ---------------------------------------------------------------


def test_a_notebook_restores_mapped_and_inline_values_after_a_restart(
    kernel: Kernel, cache_env: dict[str, str]
) -> None:
    cells = [
        LOAD,
        ("big", "import numpy as np\nbig = np.arange(1_000_000, dtype='float64')"),
        ("small", "n = 3\nwords = ['a', 'b']"),
        ("use", "total = float(big.sum()) + n\ntotal"),
    ]
    first = kernel.run_all(cells)
    assert all(e.status == "ok" for e in first), [e.error for e in first]
    plain = kernel.value("total")
    values = Path(cache_env["INCRCELL_CACHE_DIR"]) / f"v{FORMAT_VERSION}" / "values"
    assert len(list(values.glob("*/*"))) == 1  # big's bundle; the small ones are inline

    kernel.restart()
    second = kernel.run_all(cells)
    assert states(second) == ["ran", "restored", "restored", "restored"]
    assert kernel.value("total") == plain
    assert kernel.value("type(big).__name__, big.flags.writeable") == "('ndarray', True)"
    assert kernel.value("big[:4].tolist(), n, words") == "([0.0, 1.0, 2.0, 3.0], 3, ['a', 'b'])"
    # a write to a restored array stays in the kernel, the cache keeps the recorded value
    kernel.run("big[:] = 7", "poke")
    kernel.restart()
    third = kernel.run_all(cells[:2])
    assert states(third) == ["ran", "restored"]
    assert kernel.value("big[:4].tolist()") == "[0.0, 1.0, 2.0, 3.0]"
