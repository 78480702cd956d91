"""The team cache: a real S3-compatible server (SeaweedFS, tests/seaweed.py) behind each
machine's local cache, with per-signer trust.

Each "machine" has its own HOME, signing key and local cache.  Store-level scenarios run
in-process (they are about bytes); the notebook scenarios run real IPython kernels.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import obstore
import pytest
from seaweed import Seaweed

from incrcell.serialise import dumps, loads
from incrcell.store import FORMAT_VERSION, CacheWarning, Entry, Store, StoreError, open_store
from incrcell.store import cache as cache_module
from incrcell.store.signing import Signer, fingerprint, private_text, public_text

from harness import bare_entry
from kernel import LOAD, Kernel, incrcell_lines, normalise_outputs, ok, states

ROOT = Path(__file__).parent.parent
A, B, C, D = (bytes([n]) * 32 for n in (1, 2, 3, 4))  # the machines' private keys


@pytest.fixture(autouse=True)
def values_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value in a file of its own: these tests count, date and damage value files."""
    monkeypatch.setattr(cache_module, "INLINE_MAX", 0)


@pytest.fixture
def aws(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process talks to the test server (the store reads the standard AWS_* variables)."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    for name in ("INCRCELL_REMOTE", "INCRCELL_REMOTE_MODE", "INCRCELL_TRUSTED_KEYS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def machine(
    tmp_path: Path, name: str, key: bytes, bucket: str, *, mode: str = "read", trusts=()
) -> Store:
    """A machine's store: its own local cache, key and trust, the bucket behind it."""
    return open_store(
        tmp_path / name / "cache",
        signer=Signer(key, trusted=[Signer(k).public for k in trusts]),
        remote=f"s3://{bucket}/team",
        remote_mode=mode,
        housekeeping=False,
    )


def record(store: Store, key: str, **values: object) -> Entry:
    """What the engine stores for a cell that bound ``values``: one value, its entry, a note."""
    digest = key[::-1]
    store.put_value(digest, dumps((values, None), own=[*values.values(), None]))
    entry = bare_entry(key, f"# cell {key[:4]}", digest, {"source": key})
    store.put(entry)
    store.put_note(f"lineage:{key[:4]}", {"key": key, "components": entry.components})
    return entry


def restored(store: Store, entry: Entry) -> dict:
    stored = store.get_value(entry.bundle or "")
    return loads(stored.method, stored.stream, stored.buffers)[0]


def objects(seaweed: Seaweed, bucket: str) -> dict[str, bytes]:
    client = seaweed.client(bucket)
    return {
        meta["path"]: bytes(obstore.get(client, meta["path"]).bytes())
        for batch in obstore.list(client)
        for meta in batch
    }


KEYS = [f"{n:02x}" * 16 for n in range(0xA0, 0xA0 + 50)]


# -- store level ----------------------------------------------------------------------


def test_a_trusted_writers_entries_restore_elsewhere_and_are_copied_locally(
    aws: None, tmp_path: Path, seaweed: Seaweed, bucket: str
) -> None:
    a = machine(tmp_path, "a", A, bucket, mode="readwrite")
    entries = [record(a, key, x=np.arange(10) + i) for i, key in enumerate(KEYS[:3])]
    assert a.flush(30)
    assert a.remote_status().uploaded == 9 and a.remote_status().pending == 0  # 3 x 3 objects
    b = machine(tmp_path, "b", B, bucket, trusts=[A])
    for i, entry in enumerate(entries):
        assert b.get(entry.key) == entry and b.origin(entry.key) == "remote"
        np.testing.assert_array_equal(restored(b, entry)["x"], np.arange(10) + i)
    assert b.get_note(f"lineage:{KEYS[0][:4]}") == {
        "key": KEYS[0],
        "components": {"source": KEYS[0]},
    }
    status = b.remote_status()
    assert (status.entries_remote, status.fetched, status.refused) == (3, 6, 0)
    again = machine(tmp_path, "b", B, bucket, trusts=[A])  # B restarted: all local now
    assert again.get(KEYS[0]) == entries[0] and again.origin(KEYS[0]) == "local"
    assert again.remote_status().fetched == 0


def test_an_untrusted_signer_is_a_miss_naming_its_key(
    aws: None, tmp_path: Path, bucket: str
) -> None:
    a = machine(tmp_path, "a", A, bucket, mode="readwrite")
    record(a, KEYS[0], x=1)
    assert a.flush(30)
    c = machine(tmp_path, "c", C, bucket)
    with pytest.warns(CacheWarning) as warned:
        assert c.get(KEYS[0]) is None
    [line] = [str(w.message) for w in warned]
    assert f"signed by an untrusted key {fingerprint(Signer(A).public)}" in line
    assert "s3://" in line and "\n" not in line
    assert c.get_note(f"lineage:{KEYS[0][:4]}") is None  # notes: skipped without a word
    assert not list((tmp_path / "c" / "cache").rglob("entries/*/*"))  # nothing of it kept


@pytest.mark.parametrize("forgery", ["attacker's key", "claims A's key", "flipped byte"])
def test_an_object_overwritten_or_forged_in_the_bucket_is_refused(
    aws: None, tmp_path: Path, seaweed: Seaweed, bucket: str, forgery: str
) -> None:
    a = machine(tmp_path, "a", A, bucket, mode="readwrite")
    entry = record(a, KEYS[0], x="honest")
    assert a.flush(30)
    name = f"team/values/{entry.bundle[:2]}/{entry.bundle}"
    honest = objects(seaweed, bucket)[name]
    evil = tmp_path / "evil"
    record(open_store(evil, signer=Signer(D), housekeeping=False), KEYS[0], x="forged")
    forged = (evil / f"v{FORMAT_VERSION}" / "values" / entry.bundle[:2] / entry.bundle).read_bytes()
    if forgery == "claims A's key":
        forged = forged[:56] + Signer(A).public + forged[88:]
    elif forgery == "flipped byte":
        forged = honest[:-1] + bytes([honest[-1] ^ 1])
    obstore.put(seaweed.client(bucket), name, forged)  # the bucket's admin overwrites it
    b = machine(tmp_path, "b", B, bucket, trusts=[A])
    assert b.get(KEYS[0]) == entry
    expected = {
        "attacker's key": f"untrusted key {fingerprint(Signer(D).public)}",
        "claims A's key": "signature does not verify",
        "flipped byte": "checksum mismatch",
    }[forgery]
    with pytest.raises(StoreError, match=re.escape(expected)):
        restored(b, entry)
    assert b.remote_status().refused == 1
    assert not list((tmp_path / "b" / "cache").rglob(f"values/*/{entry.bundle}"))


def test_two_writers_racing_for_one_key_both_end_consistent(
    aws: None, tmp_path: Path, seaweed: Seaweed, bucket: str
) -> None:
    writers = [
        machine(tmp_path, name, key, bucket, mode="readwrite") for name, key in (("a", A), ("d", D))
    ]
    start = threading.Barrier(2)
    entries: dict[int, Entry] = {}

    def write(index: int) -> None:
        start.wait(10)
        entries[index] = record(writers[index], KEYS[0], x=np.arange(1000))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(writer.flush(30) for writer in writers)
    statuses = [writer.remote_status() for writer in writers]
    assert sum(s.uploaded for s in statuses) + sum(s.already for s in statuses) == 6
    assert 3 <= sum(s.uploaded for s in statuses) <= 4  # the lineage note has a version each
    remote = objects(seaweed, bucket)
    entry_object = remote[f"team/entries/{KEYS[0][:2]}/{KEYS[0]}"]
    signers = {Signer(A).public: 0, Signer(D).public: 1}
    winner = signers[entry_object[56:88]]  # exactly one writer's bytes, whole
    local = (
        tmp_path / "ad"[winner] / "cache" / f"v{FORMAT_VERSION}" / "entries" / KEYS[0][:2] / KEYS[0]
    )
    assert entry_object[184:] == local.read_bytes()[184:]
    for index, writer in enumerate(writers):  # each keeps its own, and reads it
        assert writer.get(KEYS[0]) == entries[index]
    reader = machine(tmp_path, "r", B, bucket, trusts=[A, D])
    assert reader.get(KEYS[0]) == entries[winner]
    np.testing.assert_array_equal(restored(reader, entries[winner])["x"], np.arange(1000))


def test_read_mode_never_writes(aws: None, tmp_path: Path, seaweed: Seaweed, bucket: str) -> None:
    before = objects(seaweed, bucket)
    b = machine(tmp_path, "b", B, bucket, mode="read")
    for key in KEYS[:5]:
        record(b, key, x=key)
    assert b.flush(30) and b.remote_status().pending == 0
    assert objects(seaweed, bucket) == before
    assert b.get(KEYS[0]) is not None  # its own local cache works as ever
    with pytest.raises(StoreError, match="INCRCELL_REMOTE_MODE=readwrite"):
        b.push()


def test_lookups_are_batched_by_one_listing(aws: None, tmp_path: Path, bucket: str) -> None:
    """50 absent cells cost one LIST (entries and notes), not 50 round trips; 50 present ones
    one GET of each entry, their values fetched concurrently meanwhile."""
    a = machine(tmp_path, "a", A, bucket, mode="readwrite")
    for key in KEYS[:25]:
        record(a, key, x=key)
    assert a.flush(60)
    b = machine(tmp_path, "b", B, bucket, trusts=[A])
    started = time.perf_counter()
    misses = [b.get(f"ee{n:030x}") for n in range(50)]  # keys nobody recorded
    absent = time.perf_counter() - started
    assert misses == [None] * 50 and b.remote_status().requests == 2
    started = time.perf_counter()
    hits = [b.get(key) for key in KEYS[:25]]
    assert all(hits) and all(restored(b, entry)["x"] == entry.key for entry in hits if entry)
    present = time.perf_counter() - started
    assert b.remote_status().requests == 2 + 25 + 25
    print(f"\n50 absent lookups: {absent * 1000:.1f} ms; 25 remote hits: {present * 1000:.1f} ms")


def test_push_uploads_what_the_remote_lacks(
    aws: None, tmp_path: Path, seaweed: Seaweed, bucket: str
) -> None:
    offline = machine(tmp_path, "a", A, bucket, mode="read")  # recorded without uploading
    for key in KEYS[:3]:
        record(offline, key, x=key)
    a = machine(tmp_path, "a", A, bucket, mode="readwrite")
    assert a.push() == {"uploaded": 9}
    assert machine(tmp_path, "a", A, bucket, mode="readwrite").push() == {"already": 9}
    assert len(objects(seaweed, bucket)) == 9


def test_the_newest_trusted_version_of_a_note_is_read(
    aws: None, tmp_path: Path, bucket: str
) -> None:
    a = machine(tmp_path, "a", A, bucket, mode="readwrite")
    a.put_note("lineage:cell", {"key": "old"})
    assert a.flush(30)
    a.put_note("lineage:cell", {"key": "new"})
    assert a.flush(30)
    assert machine(tmp_path, "b", B, bucket, trusts=[A]).get_note("lineage:cell") == {"key": "new"}
    assert machine(tmp_path, "c", C, bucket).get_note("lineage:cell") is None


def test_a_dead_remote_costs_one_warning_and_bounded_time(
    aws: None, tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote nobody answers at: every lookup and upload is local, one warning in all."""
    with socket_nobody_listens_on() as port:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        b = machine(tmp_path, "b", B, bucket, mode="readwrite", trusts=[A])
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for key in KEYS[:20]:
                assert b.get(key) is None
                record(b, key, x=key)
                assert b.get(key) is not None
            assert b.flush(30)
        assert time.monotonic() - started < 60  # bounded: not 20 timeouts in a row
        lines = [str(w.message) for w in caught]
        assert len(lines) == 1 and "cannot be reached" in lines[0], lines
        assert not b.remote_status().available


class socket_nobody_listens_on:
    """A local port with nothing behind it (connections are refused at once)."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return self._socket.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


# -- the command line ---------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "incrcell.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_key_show_prints_the_public_key_last(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "INCRCELL_SIGNING_KEY": ""}
    code, out = cli(env, "key", "show")
    assert code == 0
    key = (tmp_path / "config" / "incrcell" / "signing.key").read_bytes()
    assert out.splitlines()[-1] == public_text(Signer(key).public)
    assert fingerprint(Signer(key).public) in out
    code, again = cli(env, "key", "show")
    assert again == out  # the same key, not a new one
    code, generated = cli(env, "key", "generate")
    private, public = (line for line in generated.splitlines() if not line.startswith("#"))
    code, shown = cli({**env, "INCRCELL_SIGNING_KEY": private}, "key", "show")
    assert shown.splitlines()[-1] == public


def test_cache_info_and_push_on_the_command_line(
    aws: None, tmp_path: Path, seaweed: Seaweed, bucket: str
) -> None:
    store = open_store(tmp_path / "cache", signer=Signer(A), housekeeping=False)
    for key in KEYS[:2]:
        record(store, key, x=key)
    env = {
        **seaweed.env(),
        "INCRCELL_CACHE_DIR": str(tmp_path / "cache"),
        "INCRCELL_SIGNING_KEY": private_text(A),
        "INCRCELL_REMOTE": f"s3://{bucket}/team",
        "INCRCELL_REMOTE_MODE": "readwrite",
    }
    code, out = cli(env, "cache", "info")
    assert code == 0 and f"s3://{bucket}/team (readwrite): 0 entries" in out
    code, out = cli(env, "cache", "push")
    assert code == 0 and out.startswith("uploaded 6 objects")
    code, out = cli(env, "cache", "info")
    assert f"s3://{bucket}/team (readwrite): 2 entries" in out


# -- notebooks: machines A, B, C ----------------------------------------------------------

CELLS = [
    LOAD,
    ("data", "import numpy as np\ndata = np.arange(1000) * 2"),
    ("total", "total = int(data.sum())\nprint(total)"),
    ("label", "label = f'total={total}'\nlabel"),
]


def team_env(
    tmp_path: Path, seaweed: Seaweed, name: str, bucket: str, *, mode: str, trusts: str = ""
) -> dict[str, str]:
    home = tmp_path / name
    (home / "work").mkdir(parents=True, exist_ok=True)
    return {
        **seaweed.env(),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "INCRCELL_CACHE_DIR": str(home / "cache" / "incrcell"),
        "INCRCELL_SIGNING_KEY": "",
        "INCRCELL_REMOTE": f"s3://{bucket}/main",
        "INCRCELL_REMOTE_MODE": mode,
        "INCRCELL_TRUSTED_KEYS": trusts,
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": str(home / "matplotlib"),
    }


def graceful_shutdown(kernel: Kernel) -> None:
    """As JupyterLab shuts a kernel down: a shutdown request, the process exits (its pending
    uploads finished at exit, with a bounded wait)."""
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=False)


@pytest.fixture
def kernels() -> Iterator[Callable[[Path, dict[str, str]], Kernel]]:
    started: list[Kernel] = []

    def start(cwd: Path, env: dict[str, str]) -> Kernel:
        started.append(Kernel(cwd, env))
        return started[-1]

    yield start
    for kernel in started:
        if kernel.km.is_alive():
            kernel.shutdown()


def test_a_team_restores_what_a_trusted_machine_recorded(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    a_env = team_env(tmp_path, seaweed, "a", bucket, mode="readwrite")
    a = kernels(tmp_path / "a" / "work", a_env)
    first = ok(a.run_all(CELLS))
    assert states(first) == ["ran"] * 4
    graceful_shutdown(a)
    entries = [n for n in objects(seaweed, bucket) if n.startswith("main/entries/")]
    assert len(entries) == 3  # uploaded, finished at exit

    _, shown = cli(a_env, "key", "show")
    a_public = shown.splitlines()[-1]
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(f"# our CI\n{a_public}  ci-main\n")
    before = objects(seaweed, bucket)
    b = kernels(
        tmp_path / "b" / "work",
        team_env(tmp_path, seaweed, "b", bucket, mode="read", trusts=str(trusted)),
    )
    second = ok(b.run_all(CELLS))
    assert states(second) == ["ran"] + ["restored"] * 3
    for was, now in zip(first, second):
        assert normalise_outputs(now.outputs) == normalise_outputs(was.outputs)
    assert b.value("total") == "999000" and b.value("label") == "'total=999000'"
    assert not incrcell_lines(second)
    b.shutdown()
    assert objects(seaweed, bucket) == before  # B reads only

    c = kernels(tmp_path / "c" / "work", team_env(tmp_path, seaweed, "c", bucket, mode="read"))
    third = ok(c.run_all(CELLS))
    assert states(third) == ["ran"] * 4 and c.value("total") == "999000"
    a_fingerprint = next(
        line.split()[-1] for line in shown.splitlines() if line.startswith("fingerprint")
    )
    lines = incrcell_lines(third)
    assert lines and all(f"untrusted key {a_fingerprint}" in line for line in lines), lines


def test_a_server_killed_mid_session_costs_one_warning_and_no_hang(tmp_path: Path, kernels) -> None:
    """B restores from A's recording; the server dies; B's next lookup that needs it fails
    (bounded), one warning says so, and every later cell runs or restores locally."""
    server = Seaweed(tmp_path / "server")
    server.directory.mkdir()
    server.start()
    try:
        server.make_bucket("team")
        a_env = team_env(tmp_path, server, "a", "team", mode="readwrite")
        a = kernels(tmp_path / "a" / "work", a_env)
        ok(a.run_all(CELLS))
        graceful_shutdown(a)
        _, shown = cli(a_env, "key", "show")
        b_env = team_env(
            tmp_path, server, "b", "team", mode="readwrite", trusts=shown.splitlines()[-1]
        )
        b = kernels(tmp_path / "b" / "work", b_env)
        assert states(ok(b.run_all(CELLS[:2]))) == ["ran", "restored"]
        server.kill()
        started = time.monotonic()
        later = [
            *CELLS[2:],  # in the remote's listing: a GET that fails, then local only
            ("more", "more = [total + i for i in range(3)]\nmore"),
            ("data", "import numpy as np\ndata = np.arange(1000) * 3"),  # edited: records
            ("total", "total = int(data.sum())\nprint(total)"),
        ]
        runs = ok([b.run(source, cell_id) for cell_id, source in later])
        assert time.monotonic() - started < 90  # bounded (timeouts, then local only)
        assert states(runs) == ["ran"] * 5
        assert b.value("total") == str(int((np.arange(1000) * 3).sum()))
        lines = incrcell_lines(runs)
        assert len(lines) == 1 and "cannot be reached" in lines[0], lines
        b.restart()  # the remote still dead: the local cache restores what B has
        again = ok(b.run_all(CELLS))  # copied from the remote, or recorded while it was dead
        assert states(again) == ["ran", "restored", "restored", "restored"]
    finally:
        server.stop()


# -- settings -----------------------------------------------------------------------------


def test_trusted_keys_from_a_list_or_a_file_and_the_config(tmp_path: Path) -> None:
    from incrcell.config import Config
    from incrcell.store.signing import parse_trusted

    a, b = (public_text(Signer(key).public) for key in (A, B))
    assert parse_trusted(f"{a}, {b}") == {Signer(A).public, Signer(B).public}
    listed = tmp_path / "trusted"
    listed.write_text(f"# CI of main\n{a}  ci-main\n\n{fingerprint(Signer(B).public)} # bob\n")
    assert parse_trusted(str(listed)) == {Signer(A).public, fingerprint(Signer(B).public)}
    with pytest.raises(ValueError, match="is not a public key"):
        parse_trusted("ed25519:tooshort")
    config = Config()
    config.set("trusted_keys", a)
    config.set("remote", "s3://bucket/prefix")
    config.set("remote_mode", "readwrite")
    assert (config.trusted_keys, config.remote, config.remote_mode) == (
        a,
        "s3://bucket/prefix",
        "readwrite",
    )
    for key, bad in (("trusted_keys", "nonsense,"), ("remote", "/tmp/x"), ("remote_mode", "write")):
        with pytest.raises(ValueError):
            config.set(key, bad)
    config.set("remote", "off")
    assert config.remote == "" and "remote = none" in config.describe()
