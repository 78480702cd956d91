"""The file watch: which files a piece of code opened, and whether to write."""

from __future__ import annotations

import builtins
import io
import os
import pathlib

import numpy as np
import pandas as pd

from incrcell.files import MISSING, FileWatch, changed_files, file_digest


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
    assert watch.writes == {str(tmp_path / "new.txt"), str(tmp_path / "new.csv"),
                            str(tmp_path / "flags.bin"), str(text)}
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


def test_nothing_is_recorded_outside_a_watch_and_open_is_restored(tmp_path) -> None:
    originals = builtins.open, io.open, os.open, os.remove, os.rename
    watch = FileWatch()
    (tmp_path / "a").write_text("x")
    open(tmp_path / "a").read()
    assert watch.reads == set()
    watch.start()
    assert builtins.open is not originals[0] and os.remove is not originals[3]
    watch.stop()
    assert (builtins.open, io.open, os.open, os.remove, os.rename) == originals


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
    watch = watched(tmp_path, lambda: (tmp_path / "xdg" / "matplotlib" / "fontlist.json").write_text("{}"))
    assert watch.writes == set()
