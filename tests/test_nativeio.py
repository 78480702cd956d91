"""Files read and written by native code (pyarrow, SQLite, HDF5, DuckDB, polars).

Kernel tests: a restart between versions, states and values as a plain run.
Unit tests: a FileWatch in this process, what nativeio reports to it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from incrcell import nativeio
from incrcell.files import FileWatch
from incrcell.reasons import Code

from kernel import LOAD, Kernel, ok, states

h5py = pytest.importorskip("h5py")
pq = pytest.importorskip("pyarrow.parquet")


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(rows), "b": np.arange(rows) * 0.5})


# -- through real kernels ---------------------------------------------------------
def test_parquet_read_in_the_cell_and_in_a_helper_sees_a_new_row(kernel: Kernel, workdir: Path):
    _frame(2).to_parquet(workdir / "t.parquet")
    cells = [
        LOAD,
        # pandas and pyarrow are imported by the very cell that reads
        ("read", "import pandas as pd\ndf = pd.read_parquet('t.parquet')\nlen(df)"),
        (
            "helper",
            "import pyarrow.parquet as pq\n"
            "def rows(path):\n    return pq.read_table(path).num_rows",
        ),
        ("use", "n = rows('t.parquet')\nn"),
    ]
    first = ok(kernel.run_all(cells))
    assert states(first) == ["ran"] * 4 and first[1].result == "2" and first[3].result == "2"

    kernel.restart()
    assert states(ok(kernel.run_all(cells))) == ["ran", "restored", "restored", "restored"]

    _frame(3).to_parquet(workdir / "t.parquet")
    kernel.restart()
    third = ok(kernel.run_all(cells))
    assert states(third) == ["ran", "ran", "restored", "ran"]
    assert third[1].result == "3" and third[3].result == "3"
    assert kernel.value("len(df)") == "3" and kernel.value("n") == "3"
    assert "t.parquet` changed" in kernel.run("%incrcell why 4").stdout


def test_sqlite_in_a_helper_sees_a_row_inserted_outside(kernel: Kernel, workdir: Path):
    db = workdir / "shop.db"
    with sqlite3.connect(db) as con:
        con.execute("create table items (name text, price real)")
        con.execute("insert into items values ('tea', 2.5)")
    con.close()
    cells = [
        LOAD,
        (
            "helper",
            "import sqlite3\ndef total():\n    con = sqlite3.connect('shop.db')\n"
            "    try:\n        return con.execute('select sum(price) from items').fetchone()[0]\n"
            "    finally:\n        con.close()",
        ),
        ("use", "t = total()\nt"),
    ]
    assert ok(kernel.run_all(cells))[2].result == "2.5"
    kernel.restart()
    assert states(ok(kernel.run_all(cells))) == ["ran", "restored", "restored"]

    with sqlite3.connect(db) as con:
        con.execute("insert into items values ('cake', 4.0)")
    con.close()
    kernel.restart()
    third = ok(kernel.run_all(cells))
    # the helper's cell only defines total(): what total() opens is its callers' input
    assert states(third) == ["ran", "restored", "ran"] and third[2].result == "6.5"
    assert "shop.db` changed" in kernel.run("%incrcell why 3").stdout


def test_a_cell_inserting_into_sqlite_is_uncacheable(kernel: Kernel, workdir: Path):
    with sqlite3.connect(workdir / "shop.db") as con:
        con.execute("create table items (name text)")
    con.close()
    cells = [
        LOAD,
        (
            "insert",
            "import sqlite3\ncon = sqlite3.connect('shop.db')\n"
            "con.execute(\"insert into items values ('x')\")\ncon.commit()\ncon.close()\n"
            "del con",
        ),
        (
            "count",
            "import sqlite3\nwith sqlite3.connect('shop.db') as c:\n"
            "    rows = c.execute('select count(*) from items').fetchone()[0]\nrows",
        ),
    ]
    assert ok(kernel.run_all(cells))[2].result == "1"
    assert "reads and writes file `shop.db`" in kernel.run("%incrcell status").stdout
    kernel.restart()
    second = ok(kernel.run_all(cells))
    # a plain run inserts again: the insert runs, and the count sees two rows
    assert states(second) == ["ran", "ran", "ran"] and second[2].result == "2"


def test_h5py_read_sees_the_dataset_change(kernel: Kernel, workdir: Path):
    with h5py.File(workdir / "d.h5", "w") as f:
        f["x"] = np.arange(4)
    cells = [
        LOAD,
        (
            "helper",
            "import h5py\ndef total(path):\n    with h5py.File(path) as f:\n"
            "        return int(f['x'][:].sum())",
        ),
        ("read", "s = total('d.h5')\ns"),
    ]
    assert ok(kernel.run_all(cells))[2].result == "6"
    kernel.restart()
    assert states(ok(kernel.run_all(cells))) == ["ran", "restored", "restored"]
    with h5py.File(workdir / "d.h5", "a") as f:
        f["x"][0] = 100
    kernel.restart()
    third = ok(kernel.run_all(cells))
    assert states(third) == ["ran", "restored", "ran"] and third[2].result == "106"


def test_partitioned_parquet_directory_gaining_a_file_is_not_restored(
    kernel: Kernel, workdir: Path
):
    (workdir / "parts").mkdir()
    _frame(2).to_parquet(workdir / "parts" / "p0.parquet")
    cells = [
        LOAD,
        ("imp", "import pyarrow.dataset as ds"),
        ("read", "rows = ds.dataset('parts', format='parquet').to_table().num_rows\nrows"),
    ]
    assert ok(kernel.run_all(cells))[2].result == "2"
    _frame(3).to_parquet(workdir / "parts" / "p1.parquet")
    kernel.restart()
    second = ok(kernel.run_all(cells))
    assert not second[2].restored and second[2].result == "5"
    assert kernel.value("rows") == "5"


def test_a_cell_writing_parquet_writes_it_back_when_restored(kernel: Kernel, workdir: Path):
    cells = [
        LOAD,
        ("imp", "import pandas as pd"),
        ("write", "pd.DataFrame({'a': [1, 2, 3]}).to_parquet('out.parquet')"),
        ("read", "back = len(pd.read_parquet('out.parquet'))\nback"),
    ]
    assert ok(kernel.run_all(cells))[3].result == "3"
    written = (workdir / "out.parquet").read_bytes()
    (workdir / "out.parquet").unlink()
    kernel.restart()
    second = ok(kernel.run_all(cells))
    assert states(second) == ["ran", "restored", "restored", "restored"]
    assert (workdir / "out.parquet").read_bytes() == written
    assert pd.read_parquet(workdir / "out.parquet")["a"].tolist() == [1, 2, 3]


# -- in this process ----------------------------------------------------------------
@pytest.fixture
def here(tmp_path: Path):
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


def _watch(action) -> FileWatch:
    watch = FileWatch().start()
    try:
        action()
    finally:
        watch.stop()
    return watch


def test_idle_wrappers_pass_through_and_restore_puts_the_originals_back(here: Path):
    nativeio.restore()  # wrapped by an earlier test
    original = pd.read_parquet
    _frame(2).to_parquet("t.parquet")
    watch = _watch(lambda: None)
    assert pd.read_parquet is not original and pd.read_parquet.__wrapped__ is original
    assert len(pd.read_parquet("t.parquet")) == 2  # no watch: nothing reported anywhere
    assert watch.reads == set()
    nativeio.restore()
    assert pd.read_parquet is original


def test_readers_writers_and_handles(here: Path):
    _frame(2).to_parquet("t.parquet")
    with sqlite3.connect("shop.db") as con:
        con.execute("create table t (x)")
    con.close()

    def cell():
        pq.read_table("t.parquet")
        _frame(1).to_parquet("out.parquet")
        c = sqlite3.connect("shop.db")
        c.execute("select * from t").fetchall()
        c.close()

    watch = _watch(cell)
    assert watch.reads == {str(here / "t.parquet"), str(here / "shop.db")}
    assert watch.writes == {str(here / "out.parquet")} and not watch.updates
    assert nativeio.refusal(watch) is None

    def modify():
        c = sqlite3.connect("shop.db")
        c.execute("insert into t values (1)")
        c.commit()
        c.close()
        with h5py.File("new.h5", "w") as f:
            f["x"] = [1]

    watch = _watch(modify)
    assert watch.updates == {str(here / "shop.db")} and str(here / "new.h5") in watch.writes


def test_a_file_left_open_for_writing_refuses_and_one_left_open_for_reading_is_read(here: Path):
    Path("in.bin").write_bytes(b"x")
    kept = []
    watch = _watch(lambda: kept.append(os.open("in.bin", os.O_RDONLY)))
    os.close(kept.pop())
    assert str(here / "in.bin") in watch.reads and nativeio.refusal(watch) is None
    watch = _watch(lambda: kept.append(os.open("out.bin", os.O_WRONLY | os.O_CREAT)))
    os.close(kept.pop())
    assert nativeio.refusal(watch) == Code.FILE_LEFT_OPEN(path="out.bin")


def test_remote_sources_and_unkeyable_listings_fail_safe(here: Path):
    Path("parts").mkdir()
    _frame(2).to_parquet("parts/p0.parquet")
    watch = _watch(lambda: pq.ParquetDataset("parts"))
    assert str(here / "parts" / "p0.parquet") in watch.reads
    if not any(
        str(here / "parts") in v for v in vars(watch).values() if isinstance(v, (set, dict))
    ):
        refused = nativeio.refusal(watch)
        assert refused is not None and refused.code is Code.NATIVE_LISTING
        assert refused.details["path"] == "parts"

    def remote():
        # any error: what pyarrow raises without the network or credentials varies
        with pytest.raises(Exception):  # noqa: B017
            pq.read_table("s3://no-such-bucket-incrcell/t.parquet")

    refused = nativeio.refusal(_watch(remote))
    assert refused is not None and refused.code is Code.REMOTE_DATA


def test_wrappers_pickle_and_hash_as_the_original(here: Path):
    import pickle

    from incrcell.fingerprint import ValueHasher

    nativeio.restore()  # wrapped by an earlier test
    original = pq.read_table
    _watch(lambda: None)
    bound = pq.read_table  # as `from pyarrow.parquet import read_table` after a recorded cell
    assert bound is not original
    assert pickle.loads(pickle.dumps(bound)) is bound
    with ValueHasher() as hasher:
        wrapped = hasher.hash(bound)
    nativeio.restore()
    with ValueHasher() as hasher:
        assert hasher.hash(original) == wrapped
    _frame(2).to_parquet("t.parquet")
    assert bound("t.parquet").num_rows == 2


def test_duckdb_sql_paths_and_polars_lazy_scans(here: Path):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    _frame(2).to_parquet("t.parquet")
    lazy = pl.scan_parquet("t.parquet")  # scanned outside: read when collected

    def cell():
        duckdb.sql("select count(*) from 't.parquet'").fetchall()
        duckdb.sql("copy (select 1 as a) to 'd.parquet'")
        lazy.collect()
        pl.DataFrame({"a": [1]}).lazy().collect()  # in memory: nothing to read

    watch = _watch(cell)
    assert watch.reads == {str(here / "t.parquet")}
    assert watch.writes == {str(here / "d.parquet")} and nativeio.refusal(watch) is None


def test_a_library_imported_during_the_recording_is_watched(here: Path, monkeypatch):
    import sys

    _frame(2).to_parquet("t.parquet")
    for name in [m for m in sys.modules if m == "pyarrow.feather"]:
        monkeypatch.delitem(sys.modules, name)

    def cell():
        import pyarrow.feather as feather

        feather.write_feather(_frame(1), "f.feather")

    watch = _watch(cell)
    assert str(here / "f.feather") in watch.writes


_NATIVE_READER = (
    "import ctypes\n"
    "def read_native(path):\n"
    "    # fopen in C: no Python open, no table entry\n"
    "    libc = ctypes.CDLL(None)\n"
    "    libc.fopen.restype = ctypes.c_void_p\n"
    "    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]\n"
    "    libc.fread.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]\n"
    "    libc.fclose.argtypes = [ctypes.c_void_p]\n"
    "    handle = libc.fopen(path.encode(), b'rb')\n"
    "    buffer = ctypes.create_string_buffer(64)\n"
    "    size = libc.fread(buffer, 1, 64, handle)\n"
    "    libc.fclose(handle)\n"
    "    return buffer.raw[:size].decode()\n"
    "def load():\n"
    "    return read_native('inner.txt')"
)


def test_files_named_by_literals_are_inputs_of_native_readers(kernel: Kernel, workdir: Path):
    (workdir / "blob.txt").write_text("one")
    (workdir / "inner.txt").write_text("uno")
    cells = [
        LOAD,
        ("reader", _NATIVE_READER),
        ("direct", "text = read_native('blob.txt')\ntext"),
        ("through", "inner = load()\ninner"),
    ]
    first = ok(kernel.run_all(cells))
    assert first[2].result == "'one'" and first[3].result == "'uno'"
    kernel.restart()
    assert states(ok(kernel.run_all(cells)))[2:] == ["restored", "restored"]
    (workdir / "blob.txt").write_text("two")
    (workdir / "inner.txt").write_text("dos")
    kernel.restart()
    third = ok(kernel.run_all(cells))
    assert states(third)[2:] == ["ran", "ran"]
    assert third[2].result == "'two'" and third[3].result == "'dos'"


def test_literal_reads_skip_what_the_cell_wrote_and_what_does_not_exist(here: Path):
    Path("in.csv").write_text("a")
    Path("out.csv").write_text("b")
    watch = FileWatch()
    watch.writes.add(str(here / "out.csv"))

    def helper():
        return "sub/in.csv", "in.csv"

    nativeio.literal_reads(
        watch, "x = f('in.csv', \"out.csv\", 'missing.csv', 'plain')", [helper.__code__]
    )
    assert watch.reads == {str(here / "in.csv")}


def test_a_file_opened_between_cells_is_not_the_next_cells(here: Path):
    _watch(lambda: None)
    kept = os.open("log.txt", os.O_WRONLY | os.O_CREAT)  # e.g. by a cell that is not recorded
    try:
        watch = _watch(lambda: None)
    finally:
        os.close(kept)
    assert nativeio.refusal(watch) is None and not watch.writes
