"""The file watch: which files a piece of code opened, and whether to write."""

from __future__ import annotations

import builtins
import io
import os
import pathlib

import numpy as np
import pandas as pd

from incrcell import files
from incrcell.files import MISSING, FileWatch, changed_files, file_digest
from incrcell.reasons import Code


def watched(tmp_path: pathlib.Path, action) -> FileWatch:
    watch = FileWatch(ignore=[tmp_path / "ignored"]).start()
    try:
        action()
    finally:
        watch.stop()
    return watch


def test_reads_and_writes_through_every_kind_of_open(tmp_path: pathlib.Path) -> None:
    text, csv, npy, raw = (tmp_path / n for n in ("a.txt", "b.csv", "c.npy", "d.bin"))
    text.write_text("hello")
    pd.DataFrame({"x": [1, 2]}).to_csv(csv, index=False)
    np.save(npy, np.arange(3))
    raw.write_bytes(b"\0")

    def read_all() -> None:
        open(text).read()
        pd.read_csv(csv)
        np.load(npy)
        os.close(os.open(raw, os.O_RDONLY))

    assert watched(tmp_path, read_all).reads == {str(text), str(csv), str(npy), str(raw)}

    def write_all() -> None:
        pathlib.Path(tmp_path / "new.txt").write_text("x")
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "new.csv")
        os.close(os.open(tmp_path / "flags.bin", os.O_WRONLY | os.O_CREAT))
        open(text, "a").write("!")

    watch = watched(tmp_path, write_all)
    assert watch.writes == {
        str(tmp_path / "new.txt"),
        str(tmp_path / "new.csv"),
        str(tmp_path / "flags.bin"),
        str(text),
    }
    assert watch.reads == set()


def test_installed_code_system_files_and_ignored_directories_are_not_data(tmp_path) -> None:
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "cache").write_text("x")

    def noise() -> None:
        open(np.__file__).read()  # installed code
        open("/proc/self/status").read()
        open(tmp_path / "ignored" / "cache").read()
        os.listdir(tmp_path)

    watch = watched(tmp_path, noise)
    assert watch.reads == set() and watch.writes == set()


def test_nothing_is_recorded_outside_a_watch_and_uninstall_restores_the_originals(tmp_path) -> None:
    files.uninstall()
    originals = builtins.open, io.open, os.open, os.remove, os.rename, os.listdir, io.FileIO
    watch = FileWatch()
    (tmp_path / "a").write_text("x")
    open(tmp_path / "a").read()
    assert watch.reads == set()
    watch.start().stop()
    # the wrappers stay while incrcell is loaded, and record nothing without a watch
    assert builtins.open is not originals[0] and os.remove is not originals[3]
    open(tmp_path / "a").read()
    os.listdir(tmp_path)
    assert watch.reads == set() and watch.probes == {}
    files.uninstall()
    assert (
        builtins.open,
        io.open,
        os.open,
        os.remove,
        os.rename,
        os.listdir,
        io.FileIO,
    ) == originals


def test_deleting_and_renaming_count_as_writes(tmp_path) -> None:
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("y")
    watch = FileWatch().start()
    try:
        os.remove(tmp_path / "a")
        os.rename(tmp_path / "b", tmp_path / "c")
    finally:
        watch.stop()
    assert watch.writes == {str(tmp_path / name) for name in "abc"} and watch.reads == set()


def test_file_digest_follows_content_not_timestamps(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_text("one")
    first = file_digest(str(path))
    os.utime(path, (1, 1))
    assert file_digest(str(path)) == first
    path.write_text("two")
    assert file_digest(str(path)) != first
    path.unlink()
    assert file_digest(str(path)) == MISSING
    assert changed_files({str(path): first}) == [str(path)]
    assert changed_files({str(path): MISSING}) == []


def test_tool_caches_are_not_data(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "matplotlib").mkdir(parents=True)
    watch = watched(
        tmp_path, lambda: (tmp_path / "xdg" / "matplotlib" / "fontlist.json").write_text("{}")
    )
    assert watch.writes == set()


def test_modules_holding_the_original_open_are_patched(tmp_path: pathlib.Path, monkeypatch) -> None:
    import bz2
    import sys
    import types

    (tmp_path / "a.bz2").write_bytes(bz2.compress(b"data"))
    (tmp_path / "b.txt").write_text("b")
    module = types.ModuleType("kept_open")
    module.reader = files._OPEN  # taken before any watch, like bz2's _builtin_open
    monkeypatch.setitem(sys.modules, "kept_open", module)

    def read() -> None:
        bz2.open(tmp_path / "a.bz2").read()
        module.reader(tmp_path / "b.txt").read()
        io.FileIO(tmp_path / "b.txt").close()

    watch = watched(tmp_path, read)
    assert watch.reads == {str(tmp_path / "a.bz2"), str(tmp_path / "b.txt")}
    with open(tmp_path / "b.txt", "rb") as file:  # FileIO stays the type of every file
        assert isinstance(file.raw, io.FileIO) and issubclass(type(file.raw), io.FileIO)
    files.uninstall()
    assert module.reader is files._OPEN


def test_listings_globs_and_checks_are_inputs(tmp_path: pathlib.Path, monkeypatch) -> None:
    import glob

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "part-1.txt").write_text("1")
    (tmp_path / "saved.pkl").write_text("s")

    def look() -> None:
        sorted(os.listdir("runs"))
        glob.glob("part-*.txt")
        os.path.exists("saved.pkl")
        pathlib.Path("missing.pkl").is_file()
        list(os.walk("runs"))

    watch = watched(tmp_path, look)
    probes = watch.probes
    assert files.probe_changed(probes) is None
    os.utime("saved.pkl", (1, 1))  # touching a checked file is not a change
    (tmp_path / "other.txt").write_text("o")  # nor a file the glob does not match
    assert files.probe_changed(probes) is None
    (tmp_path / "part-2.txt").write_text("2")
    assert files.probe_changed(probes) == Code.FILES_MATCHING_CHANGED(pattern="part-*.txt")
    os.remove("part-2.txt")
    (tmp_path / "runs" / "r2").mkdir()
    assert files.probe_changed(probes) == Code.DIRECTORY_CHANGED(path="runs")
    os.rmdir("runs/r2")
    (tmp_path / "missing.pkl").write_text("now")
    assert files.probe_changed(probes) == Code.PATH_CREATED(path="missing.pkl")
    os.remove("missing.pkl")
    os.remove("saved.pkl")
    assert files.probe_changed(probes) == Code.PATH_DELETED(path="saved.pkl")


def test_directory_changes_are_outputs_put_back_as_a_plain_run_leaves_them(
    tmp_path: pathlib.Path, monkeypatch
) -> None:
    import shutil

    monkeypatch.chdir(tmp_path)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "f.txt").write_text("f")
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "g.txt").write_text("g")

    def change() -> None:
        os.makedirs("runs/r1")
        pathlib.Path("runs/r1/out.txt").write_text("out")
        os.rename("old", "new")
        shutil.rmtree("gone")
        shutil.copytree("runs", "copy")
        os.symlink("new/f.txt", "link")

    watch = watched(tmp_path, change)
    outputs = watch.outputs()
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    # back to the state before, then put the outputs back: the tree is the plain run's
    shutil.rmtree("runs"), shutil.rmtree("copy"), os.rename("new", "old"), os.remove("link")
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "g.txt").write_text("g")
    for path, data in outputs.items():
        files.write_back(path, data)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == after
    assert (tmp_path / "new" / "f.txt").read_text() == "f" and os.readlink("link") == "new/f.txt"
    os.rename("new", "renamed")  # a later cell's rename works
    assert watch.existed[str(tmp_path / "old")] and watch.existed[str(tmp_path / "gone")]


def test_writes_through_streams_and_maps_opened_before_are_seen(tmp_path: pathlib.Path) -> None:
    log = open(tmp_path / "log.txt", "a")
    mapped = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype="f8", shape=(4,))
    mapped[:] = 1
    mapped.flush()
    try:
        assert watched(tmp_path, lambda: None).bypassed == []
        assert watched(tmp_path, lambda: (log.write("x"), log.flush())).bypassed == [
            str(tmp_path / "log.txt")
        ]
        # (F821: ruff counts the ``del`` below against the lambda)
        assert watched(tmp_path, lambda: mapped.__setitem__(0, 5.0)).bypassed == [  # noqa: F821
            str(tmp_path / "m.npy")
        ]
    finally:
        log.close()
        del mapped


def test_special_files_are_never_opened(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert file_digest(str(fifo)) == files.SPECIAL
    try:
        files.read_output(str(fifo))
    except ValueError:
        pass
    else:
        raise AssertionError("a named pipe was read")


def test_a_class_holding_the_original_open_is_patched(tmp_path: pathlib.Path, monkeypatch) -> None:
    import logging
    import sys
    import types

    module = types.ModuleType("kept_in_class")
    module.Reader = type("Reader", (), {"opener": files._OPEN, "__module__": "kept_in_class"})
    monkeypatch.setitem(sys.modules, "kept_in_class", module)
    (tmp_path / "a.txt").write_text("a")

    def read_and_log() -> None:
        module.Reader().opener(tmp_path / "a.txt").close()  # not bound to the instance
        handler = logging.FileHandler(tmp_path / "run.log")  # takes open when created
        handler.emit(logging.makeLogRecord({"msg": "hello"}))
        handler.close()

    watch = watched(tmp_path, read_and_log)
    assert watch.reads == {str(tmp_path / "a.txt")} and watch.writes == {str(tmp_path / "run.log")}
    files.uninstall()
    assert module.Reader.opener is files._OPEN


def test_creating_a_directory_that_may_exist_does_not_depend_on_whether_it_did(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)

    def make() -> None:
        os.makedirs(tmp_path / "a" / "b", exist_ok=True)
        (tmp_path / "c" / "d").mkdir(parents=True, exist_ok=True)
        (tmp_path / "e").mkdir(exist_ok=True)

    cold, warm = watched(tmp_path, make), watched(tmp_path, make)
    assert cold.existed == warm.existed == {}
    made = {str(tmp_path / p) for p in ("a", "a/b", "c", "c/d", "e")}
    assert cold.writes == warm.writes == made  # a restore into a fresh directory makes them
    assert files.probe_changed(cold.probes) is None
    strict = watched(tmp_path, lambda: (tmp_path / "f").mkdir())
    assert strict.existed == {str(tmp_path / "f"): False}
