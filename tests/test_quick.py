"""Quick cells (incrcell/quick.py): straight-line code over plain values runs again instead of
being restored, because a restore would cost more; and nothing else changes because of it.

Which cells are quick is decided from the code and the types of the values it reads: a
cell that could run code of the notebook's (an operator of a subclass, a shadowed or
replaced builtin), change anything but its own names, or build a large value from small
ones is cached as any other.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from test_predict import _prepare, by_id, check_against_reality, report

from incrcell.config import Config
from incrcell.engine import RAN, RESTORED
from incrcell.plans import Quick, Record, Restore
from incrcell.predict import Predictor
from incrcell.quick import BYTES, NONE, NUMBER, TEXT, evaluate, kind_of, quick_cell
from incrcell.reasons import Code, State

from harness import Session, cache_dir, run_cell  # noqa: F401  (cache_dir is a fixture)
from kernel import Kernel

pytestmark = pytest.mark.quick


class Sneaky(int):
    """An int whose ``+`` runs notebook code: never a plain value."""

    def __add__(self, other: object) -> int:
        LOG.append("added")
        return int(self) + 1


LOG: list[str] = []

NAMESPACE: dict[str, object] = {
    "n": 3,
    "x": 2.5,
    "s": "ab",
    "b": b"xy",
    "nothing": None,
    "flag": True,
    "items": [1, 2],
    "sneaky": Sneaky(1),
    "width": 10**9,
}


def writes(source: str, namespace: dict[str, object] = NAMESPACE) -> dict[str, str] | None:
    quick = quick_cell(
        source,
        lambda name: kind_of(namespace[name]) if name in namespace else None,
        namespace.__contains__,
    )
    return None if quick is None else quick.written


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("n_epochs = 20", {"n_epochs": NUMBER}),
        ("lr = x / 10\nsteps = n * 2 + 1", {"lr": NUMBER, "steps": NUMBER}),
        ("n += 1", {"n": NUMBER}),
        ("a = c = -n ** 2", {"a": NUMBER, "c": NUMBER}),
        ("path = s + '.csv'", {"path": TEXT}),
        ("label = f'{n:,} rows, {x:>8.2f}'", {"label": TEXT}),
        ("line = '%5d items' % n", {"line": TEXT}),
        ("first, tail = s[0], s[1:]", None),  # tuples are not plain values
        ("head = s[:1]\nbyte = b[0]", {"head": TEXT, "byte": NUMBER}),
        ("print(f'{n} rows', end='')", {}),
        ("n", {}),
        ("k = len(s) if flag else max(n, 2)", {"k": NUMBER}),
        ("e = nothing", {"e": NONE}),
        ("raw = b + b'!'", {"raw": BYTES}),
        ("ok = not s and n < 3 <= x", {"ok": NUMBER}),
        ("shift = 1 << 10\nback = n >> 2", {"shift": NUMBER, "back": NUMBER}),
        ("pass", {}),
        # large values from small ones
        ("line = s * 1000", None),
        ("big = n ** n", None),
        ("big = 1 << n", None),
        ("big = 2 ** 100", None),
        ("wide = f'{n:>{width}}'", None),
        ("wide = format(n, '>9')", None),
        ("text = s % n", None),  # a format from a variable may ask for any width
        # not plain values, or code of the notebook's
        ("y = items[0]", None),
        ("y = sneaky + 1", None),
        ("y = unknown + 1", None),
        ("y = n in (1, 2)", None),
        ("y = s.upper()", None),
        ("y = open('f').read()", None),
        ("print(n, file=s)", None),
        ("y = [n]", None),
        ("y = lambda: n", None),
        ("y = (z := n)", None),
        # not straight-line code, or touching more than its own names
        ("import os", None),
        ("for i in range(n): pass", None),
        ("def f(): pass", None),
        ("y: int = 1", None),  # writes __annotations__
        ("del n", None),
        ("items[0] = 1", None),
        ("x.real = 1", None),
        ("global n\nn = 1", None),
        ("len = 3\ny = len(s)", None),
        ("y = len", None),
        ("y = get_ipython()", None),
    ],
)
def test_which_cells_are_quick(source: str, expected: dict[str, str] | None) -> None:
    assert writes(source) == expected


def test_a_shadowed_or_replaced_builtin_is_not_quick(cache_dir, monkeypatch) -> None:
    assert writes("y = len(s)", {**NAMESPACE, "len": lambda v: 0}) is None
    session = Session(cache_dir, monkeypatch)
    assert isinstance(session.run("print(1)", "a").plan, Quick)
    session.ns["print"] = lambda *args: None
    assert not isinstance(session.run("print(1)", "a").plan, Quick)
    del session.ns["print"]
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: None)
    assert not isinstance(session.run("print(1)", "a").plan, Quick)


def test_what_a_quick_cell_reads_and_writes() -> None:
    namespace = {name: kind_of(value) for name, value in NAMESPACE.items()}
    quick = quick_cell(
        "m = n * 2\nprint(f'{m} {s}')\nn += len(s)", namespace.get, lambda name: False
    )
    assert quick is not None
    assert quick.reads == {"n", "s", "print", "len"} and quick.written == {"m": NUMBER, "n": NUMBER}


def test_evaluate_computes_what_it_binds_without_printing(capsys) -> None:
    source = "print('hello')\nm = n * 2\nlabel = f'{m} rows'"
    written = writes(source)
    assert written == {"m": NUMBER, "label": TEXT}
    assert evaluate(source, {"n": 3}, written) == {"m": 6, "label": "6 rows"}
    assert capsys.readouterr().out == ""
    assert evaluate("m = n / 0", {"n": 3}, {"m": NUMBER}) is None


# -- in the engine ---------------------------------------------------------------------
CELLS = [
    ("size", "n = 1000"),
    ("double", "m = n * 2"),
    ("data", "import numpy as np\narr = np.arange(m)"),
    ("label", "title = f'{m:,} values'"),
    ("total", "total = int(arr.sum())\ntotal"),
]


def test_quick_cells_run_again_and_the_others_restore(cache_dir, monkeypatch) -> None:
    cold = Session(cache_dir, monkeypatch).run_all(CELLS)
    assert [type(o.plan) for o in cold.values()] == [Quick, Quick, Record, Quick, Record]
    assert cold["size"].record.state == RAN and cold["size"].record.reason == Code.QUICK()
    assert cold["size"].record.key is None  # nothing stored
    warm_session = Session(cache_dir, monkeypatch)
    warm = warm_session.run_all(CELLS)
    assert [type(o.plan) for o in warm.values()] == [Quick, Quick, Restore, Quick, Restore]
    assert warm["total"].value == 1999000 and warm_session.ns["title"] == "2,000 values"
    assert {name: warm_session.ns[name] for name in ("n", "m")} == {"n": 1000, "m": 2000}
    store = warm_session.engine.store
    assert store.get_note("lineage:cell:data", fetch=False) is not None
    for quick in ("size", "double", "label"):  # nothing of them is stored
        assert store.get_note(f"lineage:cell:{quick}", fetch=False) is None


def test_digests_known_before_a_quick_cell_still_stand_after_it(cache_dir, monkeypatch) -> None:
    Session(cache_dir, monkeypatch).run_all(CELLS)
    session = Session(cache_dir, monkeypatch)
    session.run_all(CELLS[:3])  # arr restored: its digest is known while no code runs
    arr = session.ns["arr"]
    assert id(arr) in session.engine.known
    assert isinstance(session.run("title = f'{m:,} values'", "label").plan, Quick)
    assert id(arr) in session.engine.known
    session.run("other = [1]", "other")  # code that is not quick: anything may have changed
    assert id(arr) not in session.engine.known


def test_a_quick_cell_that_raises_is_an_error(cache_dir, monkeypatch) -> None:
    session = Session(cache_dir, monkeypatch)
    session.run("n = 0", "a")
    failed = session.run("ratio = 1\nratio = 1 / n", "b")
    assert isinstance(failed.plan, Quick) and isinstance(failed.error, ZeroDivisionError)
    assert failed.record.state == State.ERROR and failed.record.reason == Code.RAISED()
    assert session.ns["ratio"] == 1 and "ratio" in failed.record.writes


def test_cells_not_quick_by_their_values_are_cached(cache_dir, monkeypatch) -> None:
    session = Session(cache_dir, monkeypatch)
    session.ns["sneaky"] = Sneaky(1)
    assert isinstance(session.run("y = sneaky + 1", "a").plan, Record)
    session.ns["big"] = np.float32(2)  # numpy scalars are not exactly the builtin types
    assert isinstance(session.run("z = big * 2", "b").plan, Record)


def test_quick_off_caches_every_cell(cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("INCRCELL_QUICK", "off")
    session = Session(cache_dir, monkeypatch)
    assert not session.engine.config.quick
    assert isinstance(session.run("n = 1000", "size").plan, Record)
    assert isinstance(Session(cache_dir, monkeypatch).run("n = 1000", "size").plan, Restore)
    directive = Session(cache_dir, monkeypatch)
    directive.engine.config.quick = True
    assert isinstance(directive.run("%%incrcell cache\nn = 1000", "size").plan, Restore)


def test_the_setting_from_the_environment(monkeypatch) -> None:
    for text, quick in (("", True), ("on", True), ("OFF", False), ("no", False)):
        monkeypatch.setenv("INCRCELL_QUICK", text)
        assert Config().quick is quick
    monkeypatch.setenv("INCRCELL_QUICK", "sometimes")
    with pytest.warns(UserWarning, match=r"\$INCRCELL_QUICK ignored: expected on/off"):
        assert Config().quick is True


def test_predictions_work_out_quick_cells_exactly(cache_dir, monkeypatch) -> None:
    Session(cache_dir, monkeypatch).run_all(CELLS)
    fresh = Session(cache_dir, monkeypatch)
    rep = report(fresh, CELLS, Predictor(fresh.engine, prepare=_prepare))
    cells = by_id(rep)
    assert [cells[c].prediction for c, _ in CELLS] == ["run", "run", "restore", "run", "restore"]
    assert cells["double"].prediction_reason == Code.QUICK()
    check_against_reality(rep, fresh, CELLS)
    # an edit of a quick cell: what it binds changes, and the readers run
    edited = [(c, "n = 10" if c == "size" else s) for c, s in CELLS]
    again = Session(cache_dir, monkeypatch)
    rep = report(again, edited, Predictor(again.engine, prepare=_prepare))
    assert [c.prediction for c in rep.cells] == ["run"] * 5
    check_against_reality(rep, again, edited)


# -- in a kernel -----------------------------------------------------------------------
def test_quick_cells_in_a_kernel_show_no_marker_and_say_why(tmp_path, cache_env) -> None:
    work = tmp_path / "work"
    work.mkdir()
    kernel = Kernel(work, cache_env)
    try:
        cells = [("load", "%load_ext incrcell"), ("n", "n = 21"), ("m", "m = n * 2\nm")]
        cells.append(("report", "print(f'{m} rows')"))
        kernel.run_all(cells)
        kernel.restart()
        warm = kernel.run_all(cells)
        assert warm[2].result == "42" and warm[3].stdout == "42 rows\n"
        assert not any(execution.markers for execution in warm)
        why = kernel.run("%incrcell why 3").stdout  # m, In[3] since the restart
        assert "running it again costs less than restoring it" in why
        assert "0 restored, 3 ran" in kernel.run("%incrcell status").stdout
    finally:
        kernel.shutdown()


def test_restored_digests_of_plain_values_match(cache_dir, monkeypatch) -> None:
    """A cell reading a quick cell's value is keyed by the value, whoever computed it."""
    session = Session(cache_dir, monkeypatch)
    session.run_all([("a", "n = 5"), ("b", "values = list(range(n))")])
    again = Session(cache_dir, monkeypatch)
    outcomes = again.run_all([("a", "n = 2 + 3"), ("b", "values = list(range(n))")])
    assert outcomes["b"].record.state == RESTORED
