"""The cheaper write path stores and verifies what it did before: directories made on demand,
chunks written whole through partial writes, an entry's body encoded without copying it,
and the namespace not walked for a cell that wrote plain atoms."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path

import pytest
from test_store import make_entry

from incrcell import persist
from incrcell.engine import RAN, RESTORED, Restore
from incrcell.serialise import dumps
from incrcell.store import Entry, Store, StoreError
from incrcell.store import file as file_module
from incrcell.store.codec import ENTRY, frame, unframe
from incrcell.store.entry import entry_bytes, json_bytes, parse_entry
from incrcell.store.file import FileBackend
from incrcell.store.signing import Signer

from harness import Session, cache_dir  # noqa: F401  (cache_dir is a fixture)

KEY = b"k" * 32
KEY_A = "a1" * 16
KEY_A2 = "a1" + "00" * 15
KEY_B = "b2" * 16


def _entry(key: str, bundle: str | None = None, **fields: object) -> Entry:
    """test_store's entry, with ``fields`` changed."""
    return dataclasses.replace(make_entry(key, bundle), **fields)  # type: ignore[arg-type]


def _store(root: Path) -> Store:
    return Store(FileBackend(root), Signer(KEY), housekeeping=False)


def test_writes_make_the_directories_they_find_missing(tmp_path: Path) -> None:
    """The first write makes the temp and shard directories; a shard or the whole cache
    removed behind the store's back (another process's clear) is made again."""
    store = _store(tmp_path / "cache")
    for key in (KEY_A, KEY_A2):  # the same shard
        bundle = key[::-1]
        store.put_value(bundle, dumps(1))
        store.put(_entry(key, bundle))
        store.put_note(f"lineage:{key}", {"key": key})
        assert store.get(key) is not None
        assert store.get_note(f"lineage:{key}") == {"key": key}
        shutil.rmtree(tmp_path / "cache" / "entries" / key[:2])
        shutil.rmtree(tmp_path / "cache" / "tmp")
    shutil.rmtree(tmp_path / "cache")
    store.put(_entry(KEY_B))
    assert store.get(KEY_B) is not None
    assert (tmp_path / "cache" / "entries" / KEY_B[:2]).stat().st_mode & 0o777 == 0o700
    assert os.listdir(tmp_path / "cache" / "tmp") == []


def test_a_write_into_a_path_that_is_no_directory_fails_and_leaves_no_temp(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    (tmp_path / "entries").write_text("not a directory")
    with pytest.raises(StoreError):
        store.put(_entry(KEY_A))
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize("partial", [False, True])
def test_write_all_writes_every_byte_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, partial: bool
) -> None:
    """Through a ``writev`` that writes a random prefix of what it is given, and past the
    most buffers one call takes (empty ones among them)."""
    rnd = random.Random(5)
    writev = os.writev

    def prefix(fd: int, views: list) -> int:
        data = b"".join(bytes(view) for view in views)
        return os.write(fd, data[: rnd.randint(1, len(data))]) if data else writev(fd, [])

    if partial:
        monkeypatch.setattr(file_module.os, "writev", prefix)
    for trial in range(40):
        count = rnd.choice([0, 1, 3, file_module._IOV_MAX + 5])
        chunks = [os.urandom(rnd.choice([0, 0, 1, 7, 64, 300])) for _ in range(count)]
        mixed = [c if rnd.random() < 0.5 else memoryview(bytearray(c)) for c in chunks]
        with (tmp_path / f"f{trial}").open("w+b") as file:
            size = file_module._write_all(file.fileno(), mixed)
            file.seek(0)
            assert file.read() == b"".join(chunks)
        assert size == sum(map(len, chunks))


def test_write_all_takes_any_buffer(tmp_path: Path) -> None:
    """A buffer of wider items or more dimensions is written as its bytes."""
    np = pytest.importorskip("numpy")
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    with (tmp_path / "f").open("w+b") as file:
        assert file_module._write_all(file.fileno(), [b"ab", memoryview(array)]) == 2 + 96
        file.seek(0)
        assert file.read() == b"ab" + array.tobytes()


def test_an_entry_is_stored_with_the_inline_values_the_store_found(tmp_path: Path) -> None:
    """The body holds the store's ``inline`` (whatever the entry passed in held), and the
    entry passed in is left as it was."""
    store = _store(tmp_path)
    value = dumps([1, 2])
    store.put_value("cd" * 16, value)
    entry = _entry(KEY_A, "cd" * 16, inline={"ef" * 16: [1, 1]})
    before = dataclasses.replace(entry)
    store.put(entry)
    assert entry == before
    found = store.get(KEY_A)
    assert found is not None
    assert found.inline == {"cd" * 16: [1, 1]}
    assert dataclasses.replace(found, inline={}, created=entry.created) == dataclasses.replace(
        entry, inline={}
    )


def test_entry_bytes_is_the_json_of_every_field() -> None:
    entry = _entry(KEY_A, "cd" * 16, files={"/tmp/x": "00" * 16})
    fields = dataclasses.asdict(entry)
    assert entry_bytes(entry) == json_bytes(fields)
    fields["inline"] = {"cd" * 16: [1, 2]}
    assert entry_bytes(entry, {"cd" * 16: [1, 2]}) == json_bytes(fields)
    assert json_bytes({"é": [1.5, None, "\u2028"]}) == '{"é":[1.5,null,"\u2028"]}'.encode()
    body = entry_bytes(entry)
    assert parse_entry(0, [memoryview(body)]) == entry


def test_frame_round_trips_parts_of_every_kind() -> None:
    """Bytes, writeable and read-only views, and empty parts come back as they went,
    read-only where they were."""
    signer = Signer(KEY)
    body = [b"", b"x" * 65, memoryview(bytearray(b"y" * 3)), memoryview(b"z" * 130)]
    chunks, size = frame(ENTRY, 0, KEY_A, body, signer)
    data = memoryview(bytearray(b"".join(bytes(c) for c in chunks)))
    assert len(data) == size
    _, parts = unframe(data, ENTRY, KEY_A, signer)
    assert [bytes(p) for p in parts] == [bytes(p) for p in body]
    assert [p.readonly for p in parts] == [True, True, False, True]


def test_cells_writing_plain_atoms_restore_and_alias_as_before(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell whose values are all plain atoms skips the namespace walk: its restore is as
    before, and a later cell writing a list that holds another name's object still stores
    it as a reference to that name."""
    cells = [
        ("a", "a = [1, 2]"),
        ("atoms", "n = 3\ns = 'x' * n\nf = 1.5\nnone = None\nflag = True\nraw = b'r'"),
        ("pair", "pair = [a, n]"),
    ]
    first = Session(cache_dir, monkeypatch).run_all(cells)
    assert [o.record.state for o in first.values()] == [RAN, RAN, RAN]
    second = Session(cache_dir, monkeypatch)
    again = second.run_all(cells)
    assert [o.record.state for o in again.values()] == [RESTORED, RESTORED, RESTORED]
    ns = second.ns
    assert (ns["n"], ns["s"], ns["f"], ns["none"], ns["flag"], ns["raw"]) == (
        3,
        "xxx",
        1.5,
        None,
        True,
        b"r",
    )
    assert ns["pair"] == [[1, 2], 3] and ns["pair"][0] is ns["a"]


def test_the_entry_of_an_atom_cell_is_what_a_full_walk_stores(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same entry (variables, requires, bundle, inline values) with the walk forced."""

    def record(cache: Path) -> Entry:
        session = Session(cache, monkeypatch)
        session.run_all([("a", "a = [1]"), ("b", "b = 2\nc = 'two'\nb")])
        outcome = session.run("b = 2\nc = 'two'\nb", "b")
        assert isinstance(outcome.plan, Restore)
        return dataclasses.replace(outcome.plan.entry, created=0.0, duration=0.0)

    skipped = record(cache_dir)
    with monkeypatch.context() as forced:
        forced.setattr(persist, "ATOMS", ())  # no value counts as an atom: always walked
        walked = record(tmp_path / "walked")
    assert skipped == walked
