"""The team cache as a notebook sees it: real kernels, the real SeaweedFS of tests/seaweed.py.

Where each restore came from and the upload backlog (``%incrcell status``, the sidebar's
state), ``%incrcell config remote=...`` switching a running session, a bad sharing setting
(local cache, one warning), and ``%incrcell why`` across machines.  Each machine has its
own HOME, signing key and local cache (``team_env`` of test_remote.py).
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path
from typing import Any

from seaweed import Seaweed
from test_remote import CELLS, cli, graceful_shutdown, incrcell_lines, kernels, team_env  # noqa: F401

from kernel import Kernel, ok, states

ROOT = Path(__file__).parent.parent
STORE = (
    "__import__('incrcell.kernel.extension').kernel.extension.active(get_ipython()).engine.store"
)


def status(kernel: Kernel) -> str:
    return ok([kernel.run("%incrcell status")])[0].stdout


def lines_of(text: str, label: str) -> list[str]:
    return [line for line in text.splitlines() if label in line]


def sidebar(kernel: Kernel, cells: list[tuple[str, str]]) -> dict[str, Any]:
    """The state the sidebar gets for the notebook ``cells`` (a comm, as JupyterLab opens it)."""
    comm_id = kernel.comm_open("incrcell")
    msg = kernel.kc.session.msg(
        "comm_msg",
        {
            "comm_id": comm_id,
            "data": {
                "protocol": 1,
                "type": "cells",
                "cells": [{"id": i, "source": s} for i, s in cells],
            },
        },
    )
    kernel.kc.shell_channel.send(msg)
    reply = kernel.comm_wait(
        lambda m: (
            m["msg_type"] == "comm_msg"
            and m["parent_header"].get("msg_id") == msg["header"]["msg_id"]
            and (m["content"].get("data") or {}).get("type") == "state"
        )
    )
    return reply["content"]["data"]


def recorded_by_a(tmp_path: Path, seaweed: Seaweed, bucket: str, kernels, **env: str) -> str:
    """Machine A (readwrite) runs CELLS and shuts down; returns its public key."""
    a_env = {**team_env(tmp_path, seaweed, "a", bucket, mode="readwrite"), **env}
    a = kernels(tmp_path / "a" / "work", a_env)
    assert states(ok(a.run_all(CELLS))) == ["ran"] * 4
    assert a.value(f"{STORE}.flush(60)") == "True"
    shown = status(a)
    [remote] = lines_of(shown, "remote s3://")
    assert f"remote s3://{bucket}/main (readwrite): available" in remote
    done = re.search(r"uploads: (\d+) done, 0 pending, 0 dropped", remote)
    assert done and int(done.group(1)) > 0, remote
    graceful_shutdown(a)
    _, key = cli(a_env, "key", "show")
    return key.splitlines()[-1]


def test_status_and_the_sidebar_say_what_came_from_the_remote(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    a_public = recorded_by_a(tmp_path, seaweed, bucket, kernels)
    b = kernels(
        tmp_path / "b" / "work",
        team_env(tmp_path, seaweed, "b", bucket, mode="read", trusts=a_public),
    )
    assert states(ok(b.run_all(CELLS))) == ["ran"] + ["restored"] * 3
    shown = status(b)
    [remote] = lines_of(shown, "remote s3://")
    assert f"remote s3://{bucket}/main (read): available; 3 entries fetched" in remote
    assert "uploads: 0 done, 0 pending" in remote  # read mode never writes
    for label in ("import numpy as np", "total = int", "label = f"):
        [row] = lines_of(shown, label)
        assert "restored" in row and "from the remote cache" in row, row

    state = sidebar(b, CELLS)
    cells = {cell["id"]: cell for cell in state["cells"]}
    assert [cells[i]["origin"] for i, _ in CELLS] == [None, "remote", "remote", "remote"]
    assert state["remote"]["url"] == f"s3://{bucket}/main"
    assert (state["remote"]["mode"], state["remote"]["available"]) == ("read", True)
    assert (state["remote"]["fetched"], state["remote"]["pending"]) == (3, 0)

    b.restart()  # the next session restores the same entries from the local cache
    assert states(ok(b.run_all(CELLS))) == ["ran"] + ["restored"] * 3
    assert not lines_of(status(b), "from the remote cache")
    origins = [cell["origin"] for cell in sidebar(b, CELLS)["cells"]]
    assert origins == [None, "local", "local", "local"]


def test_config_switches_a_running_session_to_the_remote(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    a_public = recorded_by_a(tmp_path, seaweed, bucket, kernels)
    env = {**team_env(tmp_path, seaweed, "b", bucket, mode="read"), "INCRCELL_REMOTE": ""}
    b = kernels(tmp_path / "b" / "work", env)
    ok([b.run(*reversed(CELLS[0]))])
    for bad, said in (
        ("remote=s3://", "the remote cache s3:// cannot be used"),
        ("remote=/tmp/x", "expected a remote like s3://BUCKET/PREFIX"),
        ("trusted_keys=nonsense,", "%incrcell config: "),
        ("remote_mode=write", "remote_mode is read or readwrite"),
    ):
        failed = b.run(f"%incrcell config {bad}")
        assert failed.status == "error" and said in failed.error["evalue"], failed.error
        assert "\n" not in failed.error["evalue"] and "until it is fixed" not in said
    assert "remote = none" in ok([b.run("%incrcell config")])[0].stdout  # nothing changed
    assert not lines_of(status(b), "remote s3://")

    ok([b.run(f"%incrcell config remote=s3://{bucket}/main trusted_keys={a_public}")])
    runs = ok(b.run_all(CELLS[1:]))
    assert states(runs) == ["restored"] * 3 and not incrcell_lines(runs)
    assert b.value("total") == "999000"
    assert len(lines_of(status(b), "from the remote cache")) == 3

    ok([b.run("%incrcell config remote=off")])  # back to the local cache alone
    assert not lines_of(status(b), "remote s3://")


def test_a_bad_sharing_setting_leaves_the_local_cache_working_with_one_warning(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    env = {
        **team_env(tmp_path, seaweed, "b", bucket, mode="read"),
        "INCRCELL_REMOTE": "s3://",
        "INCRCELL_TRUSTED_KEYS": "nonsense,",
    }
    b = kernels(tmp_path / "b" / "work", env)
    for session in range(2):
        runs = ok(b.run_all(CELLS))
        assert states(runs) == ["ran"] + ["ran" if session == 0 else "restored"] * 3
        lines = incrcell_lines(runs)
        assert len(lines) == 2, lines  # one per bad setting, naming it, once per session
        assert "the remote cache s3:// cannot be used" in lines[0]
        assert "$INCRCELL_TRUSTED_KEYS" in lines[1] and "%incrcell config" in lines[1]
        shown = status(b)
        assert len(lines_of(shown, "not used: ")) == 2
        b.restart()


def fake_distribution(home: Path, version: str) -> str:
    """An installed package ``teamlib`` of ``version`` in the machine's user site directory
    (installed code, known by its version: the key holds ``teamlib==VERSION``); returns the
    directory, for PYTHONPATH."""
    site = Path(sysconfig.get_path("purelib", f"{os.name}_user", vars={"userbase": str(home)}))
    (site / "teamlib").mkdir(parents=True)
    (site / "teamlib" / "__init__.py").write_text("VALUE = 20\n")
    info = site / f"teamlib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: teamlib\nVersion: {version}\n")
    (info / "top_level.txt").write_text("teamlib\n")
    return str(site)


def test_why_names_what_differs_from_the_machine_that_recorded_it(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    cells = [*CELLS, ("team", "import teamlib\nscaled = total * teamlib.VALUE")]
    machines = {}
    for name, version in (("a", "3.0.2"), ("b", "3.1.1")):
        home = tmp_path / name / "userbase"
        site = fake_distribution(home, version)
        machines[name] = {"PYTHONUSERBASE": str(home), "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    a_env = {**team_env(tmp_path, seaweed, "a", bucket, mode="readwrite"), **machines["a"]}
    a = kernels(tmp_path / "a" / "work", a_env)
    assert states(ok(a.run_all(cells))) == ["ran"] * 5
    graceful_shutdown(a)
    _, key = cli(a_env, "key", "show")

    b_env = team_env(tmp_path, seaweed, "b", bucket, mode="read", trusts=key.splitlines()[-1])
    b = kernels(tmp_path / "b" / "work", {**b_env, **machines["b"]})
    runs = ok(b.run_all(cells))
    assert states(runs) == ["ran"] + ["restored"] * 3 + ["ran"]
    assert b.value("scaled") == str(999000 * 20)
    why = ok([b.run("%incrcell why")])[0].stdout
    assert "recorded by another machine with other key components" in why, why
    assert "package `teamlib` teamlib==3.1.1 here, teamlib==3.0.2 where it was recorded" in why
    team = {cell["id"]: cell for cell in sidebar(b, cells)["cells"]}["team"]
    assert team["state"] == "ran" and team["code"] == "RECORDED_ELSEWHERE"


def silent(kernel: Kernel, code: str) -> None:
    """Run ``code`` as a silent execution (not a cell: incrcell does not plan it)."""
    msg_id = kernel.kc.execute(code, silent=True)
    reply = kernel.kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]


#: In the kernel: record every remote read made on the main thread (where the comm
#: handler runs), and a way to wait for the background listing and fetches.
WATCH = f"""
import concurrent.futures, threading
_store = {STORE}
_remote, _read, _on_main = _store.remote, _store.remote.backend.read, []
def _watched(obj, *args):
    if threading.current_thread() is threading.main_thread():
        _on_main.append(obj)
    return _read(obj, *args)
_remote.backend.read = _watched
def _settle():
    concurrent.futures.wait([_remote._listing_job])
    for obj in list(_remote._prefetched):
        _remote.wait_for(obj)
"""


def test_predictions_never_wait_for_the_network(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    """The sidebar's report reads only what is local or listed; what the team cache has is
    fetched in the background, and a later report predicts from it."""
    a_public = recorded_by_a(tmp_path, seaweed, bucket, kernels)
    b = kernels(
        tmp_path / "b" / "work",
        team_env(tmp_path, seaweed, "b", bucket, mode="read", trusts=a_public),
    )
    ok([b.run(*reversed(CELLS[0]))])
    sidebar(b, CELLS)  # opens the store: its listing starts in the background
    silent(b, WATCH)
    seen = set()
    for _ in range(4):  # each settle and report takes the next step: notes, then entries
        silent(b, "_settle()")
        cells = sidebar(b, CELLS)["cells"][1:]
        seen |= {(c["prediction"], c["prediction_code"]) for c in cells}
    assert seen <= {
        ("run", "FIRST_RUN"),  # no note yet (fetched in the background)
        ("unknown", "REMOTE_PENDING"),  # the entry is in the team cache, not fetched yet
        ("run", "UPSTREAM_RUNS"),  # below a cell whose entry is not here yet
        ("restore", "UNCHANGED"),
    }, seen
    assert [c["prediction"] for c in cells] == ["restore"] * 3
    assert b.value("_on_main") == "[]"
    assert states(ok(b.run_all(CELLS[1:]))) == ["restored"] * 3
    assert len(lines_of(status(b), "from the remote cache")) == 3


def test_unload_finishes_the_uploads_and_leaves_nothing_registered(
    tmp_path: Path, seaweed: Seaweed, bucket: str, kernels
) -> None:
    a = kernels(tmp_path / "a" / "work", team_env(tmp_path, seaweed, "a", bucket, mode="readwrite"))
    silent(a, "import gc, weakref")
    assert states(ok(a.run_all(CELLS))) == ["ran"] * 4
    # the store's remote tier has an upload worker and an exit handler by now
    silent(a, f"_store, _remote = weakref.ref({STORE}), weakref.ref({STORE}.remote)")
    ok([a.run("%unload_ext incrcell")])
    silent(a, "gc.collect()")
    assert (a.value("_store()"), a.value("_remote()")) == ("None", "None")
    entries = [
        meta["path"]
        for batch in __import__("obstore").list(seaweed.client(bucket))
        for meta in batch
        if meta["path"].startswith("main/entries/")
    ]
    assert len(entries) == 3  # finished before unload returned


def test_a_miss_is_told_against_the_recording_machines_components() -> None:
    from incrcell.explain import explain_miss
    from incrcell.reasons import Code

    here = {"format": 4, "python": "3.12.1", "source": "s", "inputs": {"k": "1"}}
    here["packages"] = {"pandas": "pandas==3.1.1", "numpy": "numpy==2.0"}
    there = {
        **here,
        "python": "3.11.9",
        "packages": {**here["packages"], "pandas": "pandas==3.0.2"},
    }
    reason = explain_miss(there, here, elsewhere=True)
    assert reason.codes() == [Code.RECORDED_ELSEWHERE, Code.PYTHON_DIFFERS, Code.PACKAGE_DIFFERS]
    assert str(reason) == (
        "recorded by another machine with other key components: Python 3.12.1 here, 3.11.9 "
        "where it was recorded; package `pandas` pandas==3.1.1 here, pandas==3.0.2 where it "
        "was recorded"
    )
    assert explain_miss(there, here).codes()[1:] == [Code.PYTHON_CHANGED, Code.PACKAGE_CHANGED]
