"""The sidebar's states and predictions, on a plain namespace and a real FileStore.

A prediction says what Run All of the current sources would do in a fresh
kernel; the strongest check is to make it, then do that Run All in a new
Session on the same cache and compare, cell by cell, with what the engine
really did (restored or not, and the same reason).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_run import code, env, run_json, write  # noqa: F401  (env is a fixture)

from incrcell.engine import RAN, RESTORED, UNCACHEABLE
from incrcell.kernel.hooks import split_directive
from incrcell.predict import NOT_RUN, UNKNOWN, NotebookCell, Predictor, Report
from incrcell.reasons import Code

from harness import Session, cache_dir, run_code  # noqa: F401  (cache_dir is a fixture)

NOTEBOOK = [
    ("a", "a = 1"),
    ("b", "b = a + 1"),
    ("c", "c = b * 2\nc"),
    ("d", "d = 10"),
    ("e", "e = c + d"),
]


@pytest.fixture
def kernel(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """``kernel()`` starts (or "restarts") a kernel: a new Session on the shared cache."""
    return lambda: Session(cache_dir, monkeypatch)


def _prepare(raw: str) -> tuple[str | None, str, str]:
    directive, body = split_directive(raw)
    return directive, body, body


def report(
    session: Session, cells: list[tuple[str, str]] | None = None, predictor: Predictor | None = None
) -> Report:
    predictor = predictor or Predictor(session.engine, prepare=_prepare)
    if cells is not None:
        predictor.set_cells(NotebookCell(cell_id, source) for cell_id, source in cells)
    return predictor.report(session.ns)


def by_id(rep: Report) -> dict:
    return {c.id: c for c in rep.cells}


def edit(cells: list[tuple[str, str]], cell_id: str, source: str) -> list[tuple[str, str]]:
    return [(cid, source if cid == cell_id else src) for cid, src in cells]


def check_against_reality(rep: Report, session: Session, cells: list[tuple[str, str]]) -> None:
    """Run All in ``session``; every cell did what was predicted, for the reason given."""
    outcomes = session.run_all(cells)
    for state in rep.cells:
        outcome = outcomes[state.id]
        if state.prediction == "unknown":  # either: it depends on a value not known yet
            continue
        assert outcome.restored == (state.prediction == "restore"), (state.id, state)
        assert state.prediction_reason is not None
        if not outcome.restored and state.prediction_reason.code is not Code.UPSTREAM_RUNS:
            assert outcome.record.reason == state.prediction_reason, state.id


def test_states_after_running_and_dependencies_in_notebook_order(kernel):
    session = kernel()
    session.run_all(NOTEBOOK)
    rep = report(session, NOTEBOOK)
    assert [c.state for c in rep.cells] == [RAN] * 5
    assert [c.prediction for c in rep.cells] == ["restore"] * 5
    cells = by_id(rep)
    assert cells["c"].execution_count == 3 and cells["c"].label == "c = b * 2"
    assert cells["e"].depends_on == [("c", ["c"]), ("d", ["d"])]
    assert cells["b"].reads == ["a"] and cells["b"].writes == ["b"]
    assert rep.stale == []
    assert rep.totals["ran"] == 5 and rep.totals["restored"] == 0
    assert rep.totals["cache_entries"] == 5 and rep.totals["cache_bytes"] > 0


def test_after_a_restart_unrun_cells_are_predicted_from_the_cache(kernel):
    kernel().run_all(NOTEBOOK)
    fresh = kernel()
    rep = report(fresh, NOTEBOOK)
    assert [c.state for c in rep.cells] == [NOT_RUN] * 5
    assert [c.prediction for c in rep.cells] == ["restore"] * 5
    assert by_id(rep)["e"].depends_on == [("c", ["c"]), ("d", ["d"])]
    check_against_reality(rep, fresh, NOTEBOOK)
    assert [c.state for c in report(fresh, NOTEBOOK).cells] == [RESTORED] * 5


def test_an_edit_predicts_the_cell_and_its_dependents_run(kernel):
    kernel().run_all(NOTEBOOK)
    edited = edit(NOTEBOOK, "b", "b = a + 2")
    fresh = kernel()
    rep = report(fresh, edited)
    cells = by_id(rep)
    assert {c.id: c.prediction for c in rep.cells} == {
        "a": "restore",
        "b": "run",
        "c": "run",
        "d": "restore",
        "e": "run",
    }
    assert cells["b"].prediction_reason == Code.SOURCE_CHANGED()
    assert cells["c"].prediction_reason == Code.UPSTREAM_RUNS(
        name="b", upstream="cell 2 `b = a + 2`"
    )
    assert cells["c"].reason == cells["c"].prediction_reason  # not run: why it would run
    check_against_reality(rep, fresh, edited)


def test_reverting_an_edit_predicts_the_older_entry(kernel):
    session = kernel()
    session.run_all(NOTEBOOK)
    session.run_all(edit(NOTEBOOK, "b", "b = a + 2"))  # lineage now holds the edit
    fresh = kernel()
    rep = report(fresh, NOTEBOOK)
    assert [c.prediction for c in rep.cells] == ["restore"] * 5
    check_against_reality(rep, fresh, NOTEBOOK)


def test_editing_after_running_makes_it_and_its_dependents_stale(kernel):
    session = kernel()
    session.run_all(NOTEBOOK)
    predictor = Predictor(session.engine, prepare=_prepare)
    rep = report(session, edit(NOTEBOOK, "b", "b = a + 2"), predictor)
    cells = by_id(rep)
    assert rep.stale == ["b", "c", "e"]
    assert cells["b"].reason == Code.SOURCE_CHANGED_SINCE()
    assert cells["c"].reason == Code.UPSTREAM_STALE(upstream="cell 2 `b = a + 2`")
    assert cells["e"].reason == Code.UPSTREAM_STALE(upstream="cell 3 `c = b * 2`")
    assert cells["d"].state == RAN and cells["a"].state == RAN

    # a comment-only edit is no edit
    rep = report(session, edit(NOTEBOOK, "b", "# more\nb = a + 1  # same"), predictor)
    assert rep.stale == [] and by_id(rep)["b"].prediction == "restore"
    assert by_id(rep)["b"].label == "b = a + 1"  # the first line of code, no comment


def test_an_upstream_cell_run_again_makes_its_readers_stale(kernel):
    session = kernel()
    session.run_all(NOTEBOOK)
    session.run("a = 1", "a")  # restored: executed after b, c, e read it
    rep = report(session, NOTEBOOK)
    assert rep.stale == ["b", "c", "e"]
    assert by_id(rep)["b"].reason == Code.UPSTREAM_RAN_AGAIN(upstream="cell 1 `a = 1`")
    assert by_id(rep)["a"].state == RESTORED
    for cell_id, source in NOTEBOOK[1:]:  # 'Run stale cells', in order
        if cell_id in rep.stale:
            session.run(source, cell_id)
    assert report(session, NOTEBOOK).stale == []


def test_names_from_outside_the_notebook_use_the_live_namespace(kernel):
    cells = [("use", "y = [v * 2 for v in ext]")]
    session = kernel()
    session.ns["ext"] = [1, 2]
    session.run_all(cells)
    predictor = Predictor(session.engine)
    assert report(session, cells, predictor).cells[0].prediction == "restore"
    session.ns["ext"].append(3)  # in place: the cached digest holds until user code ran
    assert report(session, cells, predictor).cells[0].prediction == "restore"
    predictor.forget_namespace()
    rep = report(session, cells, predictor)
    assert rep.cells[0].prediction_reason == Code.INPUT_CHANGED(name="ext")
    session.ns["ext"] = [1, 2]  # rebound: noticed without being told
    assert report(session, cells, predictor).cells[0].prediction == "restore"


def test_a_name_only_a_later_cell_writes_is_unbound_in_a_fresh_run(kernel):
    cells = [("early", "z = late if 'late' in dir() else 0"), ("late", "late = 1")]
    session = kernel()
    session.run_all(cells)
    session.run_all(cells)  # now `late` exists when `early` runs: another key
    fresh = kernel()
    rep = report(fresh, cells)
    check_against_reality(rep, fresh, cells)


def test_uncacheable_and_refused_cells_give_the_engines_reason(kernel):
    cells = [
        ("ev", "x = eval('1')"),
        ("gen", "g = (i for i in range(3))"),
        ("nc", "%%incrcell nocache\nn = 1"),
        ("rr", "%%incrcell rerun\nr = 1"),
        ("bad", "def (:"),
        ("boom", "q = 1 / 0"),
    ]
    session = kernel()
    for cell_id, source in cells:
        directive, body = split_directive(source)
        session.count += 1
        plan = session.engine.plan(body, session.ns, cell_id=cell_id, directive=directive)
        ran = run_code(body, session.ns, cell_id)
        session.engine.finish(plan, session.ns, success=ran.error is None, result=ran.value)
    rep = report(session, cells)
    for state in rep.cells:
        record = session.engine.records[f"cell:{state.id}"]
        assert state.prediction == "run"
        assert state.reason == record.reason
        if state.id != "bad":  # it ran and raised; run again, it would not even be planned
            assert state.prediction_reason == record.reason, state.id
    assert by_id(rep)["bad"].prediction_reason == Code.SYNTAX_ERROR()
    assert by_id(rep)["ev"].state == UNCACHEABLE


def test_files_read_are_checked(kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("1 2 3")
    cells = [("read", "words = open('data.txt').read().split()"), ("n", "n = len(words)")]
    kernel().run_all(cells)
    fresh = kernel()
    assert [c.prediction for c in report(fresh, cells).cells] == ["restore", "restore"]
    (tmp_path / "data.txt").write_text("1 2 3 4")
    rep = report(fresh, cells)
    assert rep.cells[0].prediction_reason == Code.FILE_CHANGED(path="data.txt")
    assert rep.cells[1].prediction == "run"
    check_against_reality(rep, fresh, cells)


def test_invalidated_cells_are_predicted_to_run(kernel):
    session = kernel()
    session.run_all(NOTEBOOK)
    predictor = Predictor(session.engine)
    report(session, NOTEBOOK, predictor)
    session.engine.store.delete(predictor.keys(["c"]))
    predictor.forget_cache()
    rep = report(session, NOTEBOOK, predictor)
    assert by_id(rep)["c"].prediction_reason == Code.ENTRY_MISSING()
    assert by_id(rep)["c"].state == RAN  # what happened stays true
    assert rep.totals["cache_entries"] == 4


def test_an_unusable_cache_gives_unknown_predictions(kernel, tmp_path: Path):
    session = kernel()
    session.run_all(NOTEBOOK[:2])
    (tmp_path / "a-file").write_text("")
    session.engine.config.cache_dir = tmp_path / "a-file" / "cache"
    rep = report(session, NOTEBOOK)
    assert {c.prediction for c in rep.cells} == {UNKNOWN}
    assert rep.cells[0].prediction_reason is not None
    assert rep.cells[0].prediction_reason.code is Code.CACHE_UNUSABLE
    assert "cannot be used" in rep.cells[0].prediction_reason.details["detail"]
    assert rep.totals["cache_bytes"] == 0


def test_before_the_notebook_is_known_the_session_is_listed(kernel):
    session = kernel()
    session.run_all(NOTEBOOK[:3])
    session.run("a = 1", "a")
    session.run("print(c)")  # no cell id (a console)
    rep = report(session)
    assert [c.id for c in rep.cells][:3] == ["b", "c", "a"]  # execution order
    assert rep.cells[3].id.startswith("src:")
    assert rep.stale == ["b", "c", rep.cells[3].id]  # the console cell read the stale `c`
    assert {c.prediction for c in rep.cells} == {UNKNOWN}
    assert rep.to_json()["cells"][1]["depends_on"] == [{"id": "b", "names": ["b"]}]


def test_two_hundred_cells(kernel):
    cells = [("c0", "v0 = 0")] + [
        (f"c{i}", f"v{i} = v{i - 1} + {i}\nw{i} = [v{i}] * 3") for i in range(1, 200)
    ]
    kernel().run_all(cells)
    fresh = kernel()
    predictor = Predictor(fresh.engine)
    started = time.perf_counter()
    rep = report(fresh, cells, predictor)
    cold = time.perf_counter() - started
    assert [c.prediction for c in rep.cells] == ["restore"] * 200
    started = time.perf_counter()
    rep = report(fresh, edit(cells, "c100", "v100 = v99 + 1\nw100 = []"), predictor)
    warm = time.perf_counter() - started
    assert [c.prediction for c in rep.cells] == ["restore"] * 100 + ["run"] * 100
    print(f"200 cells: first report {cold * 1000:.1f} ms, after an edit {warm * 1000:.1f} ms")


def test_inputs_that_are_not_variables_are_taken_as_recorded(kernel, monkeypatch):
    monkeypatch.setenv("INCRCELL_TEST_VAR", "1")  # an environment variable is such an input
    cells = [("a", "import os\nh = os.environ.get('INCRCELL_TEST_VAR')"), ("b", "g = h * 2")]
    kernel().run_all(cells)
    fresh = kernel()
    rep = report(fresh, cells)
    assert [c.prediction for c in rep.cells] == ["restore", "restore"]
    check_against_reality(rep, fresh, cells)


def test_a_file_changed_on_disk_makes_its_reader_and_dependents_stale(
    kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("1 2 3")
    cells = [("read", "words = open('data.txt').read().split()"), ("n", "n = len(words)")]
    session = kernel()
    session.run_all(cells)
    predictor = Predictor(session.engine, prepare=_prepare)
    assert [c.state for c in report(session, cells, predictor).cells] == [RAN, RAN]
    assert not predictor.files_moved()
    (tmp_path / "data.txt").write_text("1 2 3 4")
    assert predictor.files_moved()  # what the sidebar's periodic check asks
    rep = report(session, cells, predictor)
    assert [c.state for c in rep.cells] == ["stale", "stale"]
    assert rep.cells[0].reason == Code.FILE_CHANGED_ON_DISK(path="data.txt")
    assert rep.cells[1].reason is not None and rep.cells[1].reason.code is Code.UPSTREAM_STALE
    assert rep.stale == ["read", "n"]
    assert not predictor.files_moved()  # until it changes again


def test_readers_of_a_nocache_cell_are_unknown_and_of_a_rerun_cell_restore(kernel):
    cells = [
        ("a", "a = 1"),
        ("nc", "%%incrcell nocache\nb = a + 1"),
        ("rb", "c = b * 2"),
        ("rr", "%%incrcell rerun\nd = a + 3"),
        ("rd", "e = d * 2"),
        ("both", "f = c + e"),
    ]
    kernel().run_all(cells)
    fresh = kernel()
    rep = report(fresh, cells)
    assert {c.id: c.prediction for c in rep.cells} == {
        "a": "restore",
        "nc": "run",
        "rb": "unknown",  # restored if the nocache cell gives the same b again
        "rr": "run",
        "rd": "restore",  # the rerun cell leaves its entry's d
        "both": "unknown",  # reads c, known only if rb restores
    }
    assert by_id(rep)["rb"].prediction_reason == Code.UPSTREAM_STEADY(
        name="b", upstream="cell 2 `b = a + 1`"
    )
    outcomes = fresh.run_all(cells)
    assert [outcomes[i].restored for i in ("rb", "both")] == [True, True]
    check_against_reality(rep, kernel(), cells)


def test_an_edit_above_a_nocache_cell_makes_its_readers_run(kernel):
    cells = [("a", "a = 1"), ("nc", "%%incrcell nocache\nb = a + 1"), ("rb", "c = b * 2")]
    kernel().run_all(cells)
    edited = edit(cells, "a", "a = 2")
    fresh = kernel()
    rep = report(fresh, edited)
    assert [c.prediction for c in rep.cells] == ["run", "run", "run"]
    check_against_reality(rep, fresh, edited)


# The quickstart's shape (notebooks/quickstart.ipynb): imports in the `%load_ext` cell, a
# `nocache` cell and its reader, a `rerun` cell and its reader, incrcell's own magics.
QUICKSTART = [
    "%load_ext incrcell\nimport fractions\nimport os.path as osp\nfrom json import dumps",
    "# the data\nhalf = fractions.Fraction(1, 2)",
    "text = dumps([str(half)])\nwhere = osp.join('out', 'x')",
    "%incrcell status",
    "%%incrcell nocache\nlonger = text * 2",
    "size = len(longer)",
    "%%incrcell rerun\nchecked = len(where)",
    "total = checked + size",
]


@pytest.mark.kernel
def test_the_forecast_is_what_run_all_then_does(tmp_path: Path, env: dict[str, str]):
    """`incrcell run --plan` is the sidebar's forecast, made in a fresh kernel (nothing
    imported yet): after a first run every cell does what it forecast."""
    notebook = write(tmp_path / "quick.ipynb", [code(source) for source in QUICKSTART])
    run_json(notebook, env=env, cwd=tmp_path)
    plan = run_json(notebook, "--plan", env=env, cwd=tmp_path)
    done = run_json(notebook, env=env, cwd=tmp_path)
    forecast = {c["index"]: c["prediction"] for c in plan["cells"]}
    happened = {c["index"]: c["state"] for c in done["cells"]}
    assert forecast == {
        1: "run",  # incrcell's own magic: runs every time
        2: "restore",  # reads `fractions`, imported by the %load_ext cell
        3: "restore",
        4: "run",
        5: "run",  # nocache
        6: "unknown",  # restored if the nocache cell gives the same `longer` again
        7: "run",  # rerun: leaves its entry's values
        8: "unknown",  # reads `size`
    }
    assert happened == {
        1: "uncacheable",
        2: "restored",
        3: "restored",
        4: "uncacheable",
        5: "uncacheable",
        6: "restored",
        7: "ran",
        8: "restored",
    }
