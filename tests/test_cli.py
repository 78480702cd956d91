"""The ``incrcell`` command, run as a user runs it (a separate process) and in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tomllib

from incrcell import cli
from incrcell.serialise import dumps
from incrcell.store import FORMAT_VERSION, Signer, open_store, signing_key
from incrcell.store import cache as cache_module
from incrcell.store.signing import private_text

from harness import bare_entry

KEY = b"k" * 32
ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def values_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value in a file of its own: these tests count, date and damage value files."""
    monkeypatch.setattr(cache_module, "INLINE_MAX", 0)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values = {
        "INCRCELL_CACHE_DIR": str(tmp_path / "cache"),
        "INCRCELL_SIGNING_KEY": private_text(KEY),
        "INCRCELL_MAX_SIZE": "",
        "INCRCELL_MAX_AGE": "",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # the key is read once per process: an earlier test's key would sign and verify the
    # in-process commands (ls then finds no entry it trusts)
    signing_key.cache_clear()
    yield values
    signing_key.cache_clear()


def fill(cache: str, sizes: list[int]) -> list[str]:
    """One entry per size (oldest first, a second apart in last use); returns their keys."""
    store = open_store(cache, signer=Signer(KEY), housekeeping=False)
    keys = []
    for index, size in enumerate(sizes):
        digest, key = f"{index + 16:02x}" * 16, f"{index + 160:02x}" * 16
        store.put_value(digest, dumps(np.full(size // 8, index)))
        store.put(bare_entry(key, f"# cell {index}\nx{index} = make({size})", digest))
        used = time.time() - 1000 + index
        root = Path(cache, f"v{FORMAT_VERSION}")
        os.utime(root / "entries" / key[:2] / key, (used, used))
        os.utime(root / "values" / digest[:2] / digest, (used - 1, used - 1))
        keys.append(key)
    return keys


def run(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "incrcell.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_the_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["incrcell"] == "incrcell.cli:main"


def test_every_subcommand_has_help(env: dict[str, str]) -> None:
    for command in ("info", "ls", "gc", "clear", "verify"):
        code, out = run("cache", command, "--help")
        assert code == 0 and "--json" in out and f"incrcell cache {command}" in out


def test_info_and_ls(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    fill(env["INCRCELL_CACHE_DIR"], [1_000_000, 3_000_000])
    code, out = run("cache", "info")
    assert code == 0
    assert "MB of " in out and "entries    2" in out and "values     2" in out
    assert cli.main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 2 and 4_000_000 < info["size"] < 4_100_000
    assert info["oldest_use"] < info["newest_use"]
    assert cli.main(["cache", "ls", "--sort", "size"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "3.0 MB" in lines[1] and lines[1].endswith("# cell 1")  # the first line of its source
    assert "1.0 MB" in lines[2] and lines[-1].startswith("2 entries")
    assert cli.main(["cache", "ls", "--json", "--sort", "used", "--reverse"]) == 0
    listed = json.loads(capsys.readouterr().out)["entries"]
    assert [e["source"].splitlines()[1] for e in listed] == [
        "x0 = make(1000000)",
        "x1 = make(3000000)",
    ]


def test_gc_evicts_least_recently_used_and_dry_run_removes_nothing(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    keys = fill(env["INCRCELL_CACHE_DIR"], [1_000_000] * 4)
    assert cli.main(["cache", "gc", "--max-size", "2.5MB", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["entries"] == 2 and report["values"] == 2
    store = open_store(env["INCRCELL_CACHE_DIR"], signer=Signer(KEY), housekeeping=False)
    assert all(store.hit(key) for key in keys)
    code, out = run("cache", "gc", "--max-size", "2.5MB")
    assert code == 0 and out.startswith("removed 2 entries, 2 values") and "of 2.5 MB" in out
    assert [store.hit(key) for key in keys] == [False, False, True, True]
    code, out = run("cache", "gc", "--max-age", "1h")
    assert code == 0 and out.startswith("removed 0 entries")
    code, out = run("cache", "gc", "--max-size", "lots")
    assert code == 2 and "expected a size like 20GB" in out


def test_verify_removes_what_fails_and_says_so(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fill(env["INCRCELL_CACHE_DIR"], [10_000, 10_000])
    assert cli.main(["cache", "verify"]) == 0
    assert "every file" in capsys.readouterr().out
    [value, _] = sorted(Path(env["INCRCELL_CACHE_DIR"], f"v{FORMAT_VERSION}", "values").glob("*/*"))
    value.write_bytes(value.read_bytes()[:-1] + b"!")
    assert cli.main(["cache", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [r["why"] for r in report["removed"]] == ["is corrupt (checksum mismatch)"]
    assert not value.exists()
    code, out = run("cache", "verify")  # the entry that needed it goes next
    assert code == 1 and "refers to a value no longer in the cache" in out
    assert cli.main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1


def test_clear_asks_unless_told(env: dict[str, str]) -> None:
    fill(env["INCRCELL_CACHE_DIR"], [10_000])
    code, out = run("cache", "clear")
    assert code == 1 and "without --yes" in out
    code, out = run("cache", "clear", "--yes")
    assert code == 0 and out.startswith("cleared")
    code, out = run("cache", "info", "--json")
    assert json.loads(out)["entries"] == 0


def test_an_unusable_cache_or_key_is_one_line_and_exit_code_2(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out = run("cache", "info", "--cache-dir", str(blocker / "cache"))
    assert code == 2 and out.count("\n") == 1 and "cannot be used (Not a directory)" in out
    monkeypatch.delenv("INCRCELL_SIGNING_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = tmp_path / "config" / "incrcell" / "signing.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"x" * 32)
    key.chmod(0o666)
    code, out = run("cache", "ls")
    assert code == 2 and out.count("\n") == 1 and "chmod 600" in out
