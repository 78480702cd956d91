"""The engine's decisions, on a plain namespace, without IPython.

Each test drives :class:`incrcell.engine.Engine` the way ``hooks.py`` does:
``plan`` before a cell, ``restore`` instead of its code on a hit, ``finish``
after it.  A "notebook" is a :class:`Session`: an engine plus a namespace that
is the ``__dict__`` of a fresh ``__main__`` module (as in IPython, so that
functions and classes defined by cells have ``__module__ == "__main__"``).
A kernel restart is a new Session on the same cache directory.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import incrcell.engine as engine_module
from incrcell.config import Config
from incrcell.engine import ERROR, RAN, RECORD, RESTORE, RESTORED, RUN, UNCACHEABLE, Engine
from incrcell.reasons import Code
from incrcell.store import FORMAT_VERSION, CacheWarning
from incrcell.store import cache as cache_module
from incrcell.store.signing import KEY_ENV, private_text, signing_key

from harness import Session, cache_dir  # noqa: F401  (cache_dir is a fixture)

# --------------------------------------------------------------------------- harness


@pytest.fixture
def kernel(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """``kernel()`` starts (or "restarts") a kernel: a new Session on the shared cache."""
    return lambda: Session(cache_dir, monkeypatch)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list cells can append to, to observe whether their code ran.

    It lives in builtins, so a cell that uses it does not read a notebook name
    (it is not part of any key), like a print to the screen.
    """
    calls: list[str] = []
    monkeypatch.setattr(builtins, "PROBE", calls, raising=False)
    return calls


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*") if p.is_file())


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for index in {len(data) // 2, len(data) - 1}:
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- restore after restart


def test_hit_after_restart_restores_values_without_running(kernel, probe):
    cells = [
        ("data", "PROBE.append('data')\nxs = [1, 2, 3]\nconfig = {'name': 'run', 'scale': 2.5}"),
        (
            "derived",
            "PROBE.append('derived')\nscaled = [x * config['scale'] for x in xs]\nprint(len(scaled))",
        ),
    ]
    first = kernel()
    runs = first.run_all(cells)
    assert [o.plan.action for o in runs.values()] == [RECORD, RECORD]
    assert [o.record.state for o in runs.values()] == [RAN, RAN]
    assert probe == ["data", "derived"]
    expected = {name: first.ns[name] for name in ("xs", "config", "scaled")}

    second = kernel()
    assert second.ns is not first.ns
    runs = second.run_all(cells)
    assert [o.plan.action for o in runs.values()] == [RESTORE, RESTORE]
    assert [o.record.state for o in runs.values()] == [RESTORED, RESTORED]
    assert probe == ["data", "derived"]  # neither cell's code ran again
    assert {name: second.ns[name] for name in expected} == expected
    assert runs["derived"].plan.entry.outputs == [
        {"type": "stream", "name": "stdout", "text": "3\n"}
    ]
    assert runs["derived"].record.reason is None


def test_values_are_restored_with_their_types(kernel):
    cells = [
        (
            "a",
            "import numpy as np\narr = np.arange(6.0).reshape(2, 3)\n"
            "t = (1, 'two', 3.0, None, b'x')\ns = {1, 2}\nf = frozenset('ab')",
        )
    ]
    first = kernel()
    first.run_all(cells)
    second = kernel()
    assert second.run_all(cells)["a"].restored
    np.testing.assert_array_equal(second.ns["arr"], np.arange(6.0).reshape(2, 3))
    assert second.ns["arr"].dtype == np.float64
    assert second.ns["t"] == (1, "two", 3.0, None, b"x")
    assert second.ns["s"] == {1, 2} and second.ns["f"] == frozenset("ab")
    assert second.ns["np"] is np


def test_same_session_rerun_is_a_hit(kernel, probe):
    k = kernel()
    k.run("PROBE.append(1)\nx = 10", "a")
    again = k.run("PROBE.append(1)\nx = 10", "a")
    assert again.restored and probe == [1]


def test_plan_leaves_the_namespace_untouched_until_restore(kernel):
    kernel().run("x = [1, 2]\ny = 'new'", "a")
    second = kernel()
    second.ns["y"] = "old"
    plan = second.plan("x = [1, 2]\ny = 'new'", "a")
    assert plan.action == RESTORE
    assert "x" not in second.ns and second.ns["y"] == "old"
    second.engine.restore(plan, second.ns)
    assert second.ns["x"] == [1, 2] and second.ns["y"] == "new"


# --------------------------------------------------------------------------- source edits


@pytest.mark.parametrize(
    "edited",
    [
        "# a comment\nx = [1, 2, 3]\n",
        "x = [1, 2, 3]   # trailing comment\n\n\n",
        "x = [1,\n     2,\n     3]",
        "x = ([1, 2, 3])",
        "\n\nx = [1,2,3]",
    ],
    ids=["leading-comment", "trailing-comment", "line-breaks", "parentheses", "blank-lines"],
)
def test_comment_and_whitespace_edits_hit(kernel, edited):
    kernel().run("x = [1, 2, 3]", "a")
    outcome = kernel().run(edited, "a")
    assert outcome.restored, outcome.plan.reason


@pytest.mark.parametrize(
    "edited",
    [
        "x = [1, 2, 4]",
        "x = [1, 2, 3.0]",
        "x = (1, 2, 3)",
        "y = [1, 2, 3]",
        "x = [1, 2, 3]\ny = 1",
        "x = [1, 2, 3]\nx",
    ],
    ids=["value", "int-to-float", "type", "name", "extra-statement", "expression"],
)
def test_any_code_change_misses_with_source_changed(kernel, edited):
    kernel().run("x = [1, 2, 3]", "a")
    outcome = kernel().run(edited, "a")
    assert outcome.plan.action == RECORD
    assert outcome.plan.reason == Code.SOURCE_CHANGED()
    assert outcome.record.reason == Code.SOURCE_CHANGED()


def test_without_a_cell_id_an_edit_is_a_new_cell(kernel):
    kernel().run("x = 1")
    outcome = kernel().run("x = 2")
    assert outcome.plan.action == RECORD
    assert outcome.plan.reason == Code.FIRST_RUN()
    assert kernel().run("x = 1").restored  # keyed by content: the old version still hits


# --------------------------------------------------------------------------- inputs


CHAIN = [
    ("x", "x = 1"),
    ("y", "y = x + 1"),
    ("z", "z = y * 10"),
    ("other", "w = 'independent'"),
    ("both", "v = w + str(z)"),
]


def test_input_change_invalidates_dependents_only(kernel):
    kernel().run_all(CHAIN)
    second = kernel()
    runs = second.run_all([(cid, "x = 2" if cid == "x" else src) for cid, src in CHAIN])
    assert runs["x"].plan.reason == Code.SOURCE_CHANGED()
    assert runs["y"].ran and runs["y"].plan.reason == Code.INPUT_CHANGED(name="x")
    assert runs["z"].ran and runs["z"].plan.reason == Code.INPUT_CHANGED(name="y")
    assert runs["other"].restored
    assert runs["both"].ran and runs["both"].plan.reason == Code.INPUT_CHANGED(name="z")
    assert (second.ns["y"], second.ns["z"], second.ns["v"]) == (3, 30, "independent30")


def test_input_changed_in_the_same_session(kernel):
    k = kernel()
    k.run_all(CHAIN)
    k.run("x = 5", "set-x")
    again = k.run("y = x + 1", "y")
    assert again.ran and again.plan.reason == Code.INPUT_CHANGED(name="x") and k.ns["y"] == 6
    k.run("x = 1", "set-x")
    assert k.run("y = x + 1", "y").restored and k.ns["y"] == 2


def test_reading_an_undefined_name_that_is_defined_later(kernel):
    k = kernel()
    failed = k.run("y = x + 1", "y")
    assert failed.record.state == ERROR and isinstance(failed.error, NameError)
    k.run("x = 1", "x")
    outcome = k.run("y = x + 1", "y")
    assert outcome.plan.action == RECORD and k.ns["y"] == 2


def test_builtin_shadowed_by_a_notebook_name_is_an_input(kernel):
    k = kernel()
    k.run("n = len([1, 2, 3])", "n")
    k.run("def len(x):\n    return 99", "shadow")
    outcome = k.run("n = len([1, 2, 3])", "n")
    assert outcome.ran and Code.NEW_INPUT(name="len") in outcome.plan.reason
    assert k.ns["n"] == 99


# --------------------------------------------------------------------------- in-place mutation


MUTATIONS = [
    pytest.param(
        [("make", "lst = [1, 2]"), ("mutate", "lst.append(3)")], "lst", [1, 2, 3], id="append"
    ),
    pytest.param(
        [("make", "d = {'a': 0}"), ("mutate", "d['k'] = 1")], "d", {"a": 0, "k": 1}, id="setitem"
    ),
    pytest.param([("make", "lst = [1]"), ("mutate", "lst += [2]")], "lst", [1, 2], id="augassign"),
    pytest.param([("make", "s = {1}"), ("mutate", "s |= {2}")], "s", {1, 2}, id="set-ior"),
    pytest.param(
        [("make", "class Box:\n    pass\nbox = Box()\nbox.v = 1"), ("mutate", "box.v = 2")],
        "box",
        None,
        id="attribute",
    ),
    pytest.param(
        [
            ("make", "lst = [3, 1, 2]"),
            ("def", "def sort_it(seq):\n    seq.sort()"),
            ("mutate", "sort_it(lst)"),
        ],
        "lst",
        [1, 2, 3],
        id="function-argument",
    ),
    pytest.param(
        [
            ("make", "nested = {'inner': [1]}"),
            ("mutate", "inner = nested['inner']\ninner.append(2)"),
        ],
        "nested",
        {"inner": [1, 2]},
        id="through-a-local-alias",
    ),
    pytest.param(
        [("make", "lst = [1]"), ("mutate", "for _x in [2, 3]:\n    lst.append(_x)")],
        "lst",
        [1, 2, 3],
        id="in-a-loop",
    ),
]


@pytest.mark.parametrize("cells, name, expected", MUTATIONS)
def test_in_place_mutation_of_an_input_is_recorded(kernel, cells, name, expected):
    cells = [*cells, ("after", f"seen = repr({name})")]
    first = kernel()
    first.run_all(cells)
    mutate = first.engine.records["cell:mutate"]
    assert mutate.state == RAN and name in mutate.writes
    seen = first.ns["seen"]
    if expected is not None:
        assert first.ns[name] == expected

    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values()), {c: o.plan.reason for c, o in runs.items()}
    if expected is not None:
        assert second.ns[name] == expected
    else:
        assert second.ns["box"].v == 2
    assert second.ns["seen"] == seen


def test_numpy_in_place_assignment_is_recorded(kernel):
    cells = [
        ("make", "import numpy as np\narr = np.zeros(4)"),
        ("mutate", "arr[0] = 5"),
        ("more", "arr *= 2"),
        ("after", "total = float(arr.sum())"),
    ]
    first = kernel()
    first.run_all(cells)
    assert first.ns["total"] == 10.0
    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values())
    np.testing.assert_array_equal(second.ns["arr"], [10, 0, 0, 0])
    # a real run downstream of the restored array sees the mutated content
    assert second.run("check = float(arr[0])", "check").ran
    assert second.ns["check"] == 10.0


def test_mutation_after_restore_of_a_different_upstream_value(kernel):
    """The mutating cell's key is its input *before* it ran: an upstream change misses it."""
    cells = [("make", "lst = [1, 2]"), ("mutate", "lst.append(3)"), ("after", "n = len(lst)")]
    kernel().run_all(cells)
    second = kernel()
    runs = second.run_all([("make", "lst = [7]"), *cells[1:]])
    assert runs["mutate"].ran and runs["mutate"].plan.reason == Code.INPUT_CHANGED(name="lst")
    assert runs["after"].ran and second.ns["n"] == 2 and second.ns["lst"] == [7, 3]


# --------------------------------------------------------------------------- deletion


def test_del_is_restored_as_a_deletion(kernel):
    cells = [("make", "x = 1\ntmp = [0]"), ("drop", "del tmp\ny = x + 1")]
    first = kernel()
    first.run_all(cells)
    assert "tmp" not in first.ns
    entry = first.engine.store.get(first.engine.records["cell:drop"].key)
    assert entry is not None and entry.deleted == ["tmp"]

    second = kernel()
    make = second.run("x = 1\ntmp = [0]", "make")
    assert make.restored and second.ns["tmp"] == [0]
    drop = second.run("del tmp\ny = x + 1", "drop")
    assert drop.restored
    assert "tmp" not in second.ns  # deleted on the hit
    assert second.ns["y"] == 2
    assert "tmp" in drop.record.writes


def test_name_deleted_inside_a_function_is_restored_as_a_deletion(kernel):
    cells = [
        ("make", "junk = 1"),
        ("def", "def cleanup():\n    global junk\n    del junk"),
        ("call", "cleanup()"),
    ]
    kernel().run_all(cells)
    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values())
    assert "junk" not in second.ns


# --------------------------------------------------------------------------- functions from other cells


FUNCTION_CELLS = [
    ("k", "k = 2"),
    ("def", "def f():\n    return k * 10"),
    ("call", "y = f()"),
]


def test_call_is_keyed_on_the_globals_the_function_reads(kernel):
    first = kernel()
    runs = first.run_all(FUNCTION_CELLS)
    assert {"f", "k"} <= runs["call"].plan.reads
    assert first.ns["y"] == 20

    second = kernel()
    runs = second.run_all([("k", "k = 3"), *FUNCTION_CELLS[1:]])
    assert runs["def"].restored  # defining f does not read k
    assert runs["call"].ran
    assert Code.INPUT_CHANGED(name="k") in runs["call"].plan.reason
    assert second.ns["y"] == 30


def test_call_reaches_globals_through_other_functions(kernel):
    cells = [
        ("k", "k = 2"),
        ("inner", "def inner():\n    return k + 1"),
        ("outer", "def outer():\n    return inner() * 2"),
        ("call", "y = outer()"),
    ]
    k = kernel()
    k.run_all(cells)
    assert k.ns["y"] == 6
    k.run("k = 5", "k")
    again = k.run("y = outer()", "call")
    assert again.ran and Code.INPUT_CHANGED(name="k") in again.plan.reason and k.ns["y"] == 12


def test_redefined_function_misses_its_callers(kernel):
    k = kernel()
    k.run_all(FUNCTION_CELLS)
    k.run("def f():\n    return k * 100", "def")
    again = k.run("y = f()", "call")
    assert again.ran and Code.INPUT_CHANGED(name="f") in again.plan.reason and k.ns["y"] == 200


def test_global_writes_inside_a_called_function_are_restored(kernel):
    cells = [
        ("init", "total = 0"),
        ("def", "def bump(n):\n    global total, last\n    total += n\n    last = n"),
        ("call", "bump(5)\nbump(7)"),
        ("use", "report = f'{total} {last}'"),
    ]
    first = kernel()
    runs = first.run_all(cells)
    assert {"total", "last"} <= runs["call"].record.writes
    assert (first.ns["total"], first.ns["last"]) == (12, 7)

    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values()), {c: o.plan.reason for c, o in runs.items()}
    assert (second.ns["total"], second.ns["last"], second.ns["report"]) == (12, 7, "12 7")


def test_restored_function_sees_the_live_namespace(kernel):
    kernel().run_all(FUNCTION_CELLS)
    second = kernel()
    second.run_all(FUNCTION_CELLS)
    assert second.ns["f"].__globals__ is second.ns
    second.run("k = 4", "k2")
    assert second.run("z = f()", "z").ran and second.ns["z"] == 40


# --------------------------------------------------------------------------- classes


CLASS_A = (
    "class C:\n    def __init__(self, v):\n        self.v = v\n"
    "    def double(self):\n        return self.v * 2"
)
CLASS_A2 = CLASS_A.replace("self.v * 2", "self.v * 3")
CLASS_CELLS = [("A", CLASS_A), ("B", "c = C(21)"), ("use", "result = c.double()")]

# Pickling the first instance of a class makes copyreg cache ``C.__slotnames__``
# on the class; that must not change the class's digest (or the instance cell
# would require a C that a restored C never matches).  Both variants must restore.
CLASS_VARIANTS = [
    pytest.param(CLASS_A, id="plain-class"),
    pytest.param(CLASS_A + "\n    __slotnames__ = []", id="slotnames-preset"),
]


@pytest.mark.parametrize("class_source", CLASS_VARIANTS)
def test_class_identity_across_restored_cells(kernel, class_source):
    cells = [("A", class_source), *CLASS_CELLS[1:]]
    first = kernel()
    first.run_all(cells)
    assert first.ns["result"] == 42

    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values()), {c: o.plan.reason for c, o in runs.items()}
    ns = second.ns
    assert isinstance(ns["c"], ns["C"])
    assert type(ns["c"]) is ns["C"]
    assert ns["c"].double() == 42 and ns["result"] == 42
    # new code keeps working with the restored objects
    assert second.run("ok = isinstance(c, C) and c.double() == 42", "check").ran
    assert ns["ok"] is True


def test_class_identity_holds_whatever_the_cache_does(kernel):
    """Restored or run, an instance cell never leaves an instance of a stale class."""
    kernel().run_all(CLASS_CELLS)
    second = kernel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        second.run_all(CLASS_CELLS)
    ns = second.ns
    assert type(ns["c"]) is ns["C"] and ns["result"] == 42


def test_changed_class_is_never_restored_under(kernel):
    kernel().run_all(CLASS_CELLS)
    second = kernel()
    runs = second.run_all([("A", CLASS_A2), *CLASS_CELLS[1:]])
    assert runs["A"].ran and runs["A"].plan.reason == Code.SOURCE_CHANGED()
    assert runs["B"].ran and Code.INPUT_CHANGED(name="C") in runs["B"].plan.reason
    assert runs["use"].ran
    ns = second.ns
    assert isinstance(ns["c"], ns["C"]) and ns["c"].double() == 63 and ns["result"] == 63


@pytest.mark.parametrize(
    "class_source",
    [CLASS_A, CLASS_A + "\n    __slotnames__ = []"],
    ids=["plain-class", "slotnames-preset"],
)
def test_class_changed_in_the_same_session_after_a_restore(kernel, class_source):
    cells = [("A", class_source), *CLASS_CELLS[1:]]
    kernel().run_all(cells)
    second = kernel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        second.run_all(cells)
    second.run(CLASS_A2, "A")
    again = second.run("c = C(21)", "B")
    assert again.ran
    ns = second.ns
    assert type(ns["c"]) is ns["C"] and ns["c"].double() == 63


def test_instance_restored_in_another_session_whose_class_changed(kernel):
    """The class cell changed and ran; an instance cell that does not read C must
    not bring back an instance of the old class."""
    cells = [("A", CLASS_A), ("B", "c = C(21)"), ("keep", "kept = [c]")]
    kernel().run_all(cells)
    second = kernel()
    second.run(CLASS_A2, "A")
    second.run("c = C(21)", "B")
    keep = second.run("kept = [c]", "keep")
    assert keep.ran and Code.INPUT_CHANGED(name="c") in keep.plan.reason
    assert type(second.ns["kept"][0]) is second.ns["C"]


def test_class_and_instance_in_one_cell(kernel):
    cells = [("one", CLASS_A + "\nc = C(5)\nitems = [c, c]")]
    kernel().run_all(cells)
    second = kernel()
    assert second.run_all(cells)["one"].restored
    ns = second.ns
    assert type(ns["c"]) is ns["C"] and type(ns["items"][0]) is ns["C"]
    assert ns["items"][0] is ns["items"][1]  # sharing within a value survives


def test_dataclass_and_subclass_across_cells(kernel):
    cells = [
        (
            "base",
            "from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\n    y: int",
        ),
        ("sub", "class Point3(Point):\n    z: int = 0"),
        ("make", "p = Point3(1, 2)\nq = Point(3, 4)"),
    ]
    kernel().run_all(cells)
    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values()), {c: o.plan.reason for c, o in runs.items()}
    ns = second.ns
    assert isinstance(ns["p"], ns["Point"]) and type(ns["p"]) is ns["Point3"]
    assert issubclass(ns["Point3"], ns["Point"])
    assert ns["q"] == ns["Point"](3, 4)


def test_dataclass_values_are_right_whatever_the_cache_does(kernel):
    cells = [
        (
            "base",
            "from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\n    y: int",
        ),
        ("make", "q = Point(3, 4)"),
        ("use", "s = q.x + q.y"),
    ]
    kernel().run_all(cells)
    second = kernel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        runs = second.run_all(cells)
    assert runs["base"].restored
    ns = second.ns
    assert type(ns["q"]) is ns["Point"] and ns["s"] == 7 and repr(ns["q"]) == "Point(x=3, y=4)"


# --------------------------------------------------------------------------- uncacheable


def test_unhashable_input_runs_with_a_reason(kernel):
    k = kernel()
    make = k.run("import threading\nlock = threading.Lock()", "make")
    assert make.record.state == UNCACHEABLE
    assert make.record.reason is not None
    assert make.record.reason.code is Code.UNHASHABLE_OUTPUT
    assert make.record.reason.details["what"] == "`lock`"
    use = k.run("with lock:\n    y = 1", "use")
    assert use.plan.action == RUN
    assert use.plan.reason.code is Code.UNHASHABLE_INPUT
    assert (use.plan.reason.details["name"], use.plan.reason.details["type"]) == ("lock", "lock")
    assert use.record.state == UNCACHEABLE and use.record.reason == use.plan.reason
    assert "y" in use.record.writes and k.ns["y"] == 1
    # downstream of the uncacheable cells, content keys work as usual
    down = k.run("z = y + 1", "down")
    assert down.plan.action == RECORD and down.record.state == RAN

    second = kernel()
    runs = second.run_all(
        [
            ("make", "import threading\nlock = threading.Lock()"),
            ("use", "with lock:\n    y = 1"),
            ("down", "z = y + 1"),
        ]
    )
    assert [o.plan.action for o in runs.values()] == [RECORD, RUN, RESTORE]
    assert second.ns["z"] == 2


def test_unpicklable_output_is_uncacheable_and_reads_of_it_too(kernel):
    k = kernel()
    make = k.run("gen = (i for i in range(3))\nw = 1", "make")
    assert make.plan.action == RECORD
    assert make.record.state == UNCACHEABLE
    assert make.record.reason is not None and make.record.reason.code is Code.UNHASHABLE_OUTPUT
    assert make.record.reason.details["what"] == "`gen`"
    assert make.record.reason.details["type"] == "generator"
    use = k.run("total = sum(gen)", "use")
    assert use.plan.action == RUN and use.plan.reason.code is Code.UNHASHABLE_INPUT
    assert use.plan.reason.details["name"] == "gen"
    assert k.ns["total"] == 3
    assert k.engine.store.get(make.plan.key) is None  # nothing was stored for it

    second = kernel()
    again = second.run("gen = (i for i in range(3))\nw = 1", "make")
    assert again.ran and again.plan.reason == Code.FIRST_RUN()


@pytest.mark.parametrize(
    "make, name",
    [
        ("fh = open(PATH)", "fh"),
        ("import threading\nlocks = [threading.RLock()]", "locks"),
        ("import io\nsink = {'out': open(PATH, 'rb')}", "sink"),
    ],
    ids=["file", "rlock-in-list", "file-in-dict"],
)
def test_resources_are_never_stored(kernel, tmp_path, make, name):
    path = tmp_path / "data.txt"
    path.write_text("hello")
    k = kernel()
    try:
        outcome = k.run(make.replace("PATH", repr(str(path))), "res")
        assert outcome.plan.action == RECORD
        assert outcome.record.state == UNCACHEABLE
        reason = outcome.record.reason
        assert reason is not None and reason.details.get("what") == f"`{name}`", reason
        assert k.engine.store.get(outcome.plan.key) is None
    finally:
        for value in (k.ns.get("fh"), (k.ns.get("sink") or {}).get("out")):
            if value is not None:
                value.close()


def test_exception_is_never_cached(kernel, probe):
    source = "PROBE.append(1)\nx = 1\nraise ValueError('boom')"
    k = kernel()
    first = k.run(source, "boom")
    assert isinstance(first.error, ValueError)
    assert first.record.state == ERROR
    assert first.record.reason == Code.RAISED()
    assert k.engine.store.get(first.plan.key) is None
    assert not list((k.engine.config.cache_dir / f"v{FORMAT_VERSION}" / "entries").rglob("*"))
    again = k.run(source, "boom")
    assert again.ran and again.record.state == ERROR and probe == [1, 1]
    after_restart = kernel().run(source, "boom")
    assert after_restart.ran and after_restart.plan.reason == Code.FIRST_RUN()
    assert probe == [1, 1, 1]


def test_cell_that_fails_then_succeeds_is_cached(kernel):
    k = kernel()
    k.run("d = 0", "d")
    assert k.run("r = 1 / d", "r").record.state == ERROR
    k.run("d = 4", "d")
    assert k.run("r = 1 / d", "r").record.state == RAN
    second = kernel()
    second.run("d = 4", "d")
    assert second.run("r = 1 / d", "r").restored and second.ns["r"] == 0.25


@pytest.mark.parametrize(
    "source, reason",
    [
        ("ip = get_ipython()", Code.MAGIC()),
        ("y = Out[1]", Code.HISTORY(name="Out")),
        ("y = _", Code.HISTORY(name="_")),
        ("y = __", Code.HISTORY(name="__")),
        ("y = _i1", Code.HISTORY(name="_i1")),
        ("y = globals()['x']", Code.DYNAMIC(call="globals()")),
        ("exec('y = x')", Code.DYNAMIC(call="exec()")),
        ("y = eval('x + 1')", Code.DYNAMIC(call="eval()")),
        ("from math import *", Code.DYNAMIC(call="from ... import *")),
        ("g = globals\ny = g()['x']", Code.DYNAMIC(call="globals()")),
        ("setattr(obj, 'a', 1)", Code.DYNAMIC(call="setattr()")),
        ("y = vars()['x']", Code.DYNAMIC(call="vars()")),
        ("y = locals()['x']", Code.DYNAMIC(call="locals()")),
        ("def f():\n    return eval('x')\ny = f()", Code.DYNAMIC(call="eval()")),
    ],
    ids=lambda v: v[:20] if isinstance(v, str) else v.code.value,
)
def test_dynamic_and_session_reads_are_uncacheable(kernel, source, reason):
    k = kernel()
    k.run("x = 1\nclass O:\n    pass\nobj = O()", "setup")
    outcome = k.run(source, "dyn")
    assert outcome.plan.action == RUN
    assert getattr(outcome.plan, "key", None) is None
    assert outcome.plan.reason == reason, outcome.plan.reason
    if outcome.error is None:
        assert outcome.record.state == UNCACHEABLE
        assert outcome.record.reason == outcome.plan.reason
    else:
        assert outcome.record.state == ERROR  # get_ipython, Out... don't exist here


HIDDEN_READS = [
    pytest.param(
        "def f():\n    return eval('x + 1')",
        "y = f()",
        Code.HIDDEN_READ(name="f", how="uses eval()"),
        id="eval-in-function",
    ),
    pytest.param(
        "def f():\n    return globals()['x'] + 1",
        "y = f()",
        Code.HIDDEN_READ(name="f", how="uses globals()"),
        id="globals-in-function",
    ),
    pytest.param(
        "def f():\n    ns = {}\n    exec('r = x + 1', globals(), ns)\n    return ns['r']",
        "y = f()",
        Code.HIDDEN_READ(name="f", how="uses exec()"),
        id="exec-in-function",
    ),
    pytest.param(
        "def inner():\n    return eval('x + 1')\ndef outer():\n    return inner()",
        "y = outer()",
        Code.HIDDEN_READ(name="inner", how="uses eval()"),
        id="through-another-function",
    ),
    pytest.param(
        "class K:\n    def get(self):\n        return eval('x + 1')\nk = K()",
        "y = k.get()",
        Code.HIDDEN_READ(name="k", how="uses eval()"),
        id="method-of-an-instance",
    ),
    pytest.param(
        "ev = eval",
        "y = ev('x + 1')",
        Code.HIDDEN_READ(name="ev", how="refers to eval()"),
        id="builtin-under-another-name",
    ),
    pytest.param(
        "import functools\np = functools.partial(eval, 'x + 1')",
        "y = p()",
        Code.HIDDEN_READ(name="p", how="refers to eval()"),
        id="partial-of-eval",
    ),
    pytest.param(
        "def f(g=eval):\n    return g('x + 1')",
        "y = f()",
        Code.HIDDEN_READ(name="f", how="refers to eval()"),
        id="default-argument",
    ),
    pytest.param(
        "def f():\n    import __main__\n    return __main__.x + 1",
        "y = f()",
        Code.HIDDEN_READ(name="f", how="imports __main__"),
        id="import-main",
    ),
    pytest.param(
        "def run():\n    return g()",
        "def g():\n    return eval('x + 1')\ny = run()",
        Code.HIDDEN_READ(name="g", how="uses eval()"),
        id="cell-definition-called-by-earlier-function",
    ),
]


@pytest.mark.parametrize("define, use, reason", HIDDEN_READS)
def test_reads_hidden_in_earlier_code_are_never_stale(kernel, define, use, reason):
    """A called function (or object) that reads globals through eval & co: the
    key cannot cover what it reads, so the cell must run, every time."""
    cells = [("x", "x = 1"), ("define", define), ("use", use)]
    first = kernel()
    runs = first.run_all(cells)
    assert first.ns["y"] == 2
    assert runs["use"].plan.action == RUN
    assert runs["use"].plan.reason == reason
    assert runs["use"].record.state == UNCACHEABLE

    second = kernel()
    second.run_all([("x", "x = 5"), *cells[1:]])
    assert second.ns["y"] == 6  # never the stale 2
    second.run("x = 7", "x")
    second.run(use, "use")
    assert second.ns["y"] == 8


@pytest.mark.parametrize(
    "define, use",
    [
        (
            "class K:\n    def __init__(self, **kw):\n        for key, value in kw.items():\n"
            "            setattr(self, key, value)\n    def as_dict(self):\n        return dict(vars(self))",
            "y = K(a=1).as_dict()",
        ),
        ("def f(**kw):\n    return sorted(locals())", "y = f(a=1)"),
    ],
    ids=["setattr-and-vars", "locals"],
)
def test_functions_using_harmless_introspection_stay_cacheable(kernel, define, use):
    cells = [("define", define), ("use", use)]
    runs = kernel().run_all(cells)
    assert runs["use"].plan.action == RECORD, runs["use"].plan.reason
    assert kernel().run_all(cells)["use"].restored


def test_exec_writes_are_seen_at_runtime(kernel):
    k = kernel()
    outcome = k.run("exec('made = 42')", "dyn")
    assert outcome.record.state == UNCACHEABLE and "made" in outcome.record.writes
    assert k.engine.graph.last_writer("made") == "cell:dyn"


def test_is_session_name_refuses_session_objects(kernel):
    k = kernel()
    k.engine.is_session_name = lambda name: name == "shell"
    k.ns["shell"] = object()
    outcome = k.run("s = shell", "s")
    assert outcome.plan.action == RUN
    assert outcome.plan.reason == Code.SESSION_OBJECT(name="shell")


def test_syntax_error_is_not_planned(kernel):
    k = kernel()
    plan = k.plan("x = (", "bad")
    assert plan.action == RUN and plan.reason == Code.SYNTAX_ERROR()


# --------------------------------------------------------------------------- corrupt store


def test_corrupt_store_is_a_miss_then_rerecords(kernel, cache_dir, probe):
    cells = [
        ("a", "PROBE.append('a')\nxs = list(range(5))"),
        ("b", "PROBE.append('b')\nn = sum(xs)"),
    ]
    kernel().run_all(cells)
    files = cache_files(cache_dir)
    assert files
    for path in files:
        flip_bytes(path)

    second = kernel()
    second.ns["n"] = "untouched"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = second.plan(cells[1][1], "b")
    assert plan.action == RECORD
    assert any(issubclass(w.category, CacheWarning) for w in caught)
    assert second.ns["n"] == "untouched"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        runs = second.run_all(cells)
    assert all(o.plan.action == RECORD for o in runs.values())
    assert probe == ["a", "b", "a", "b"]
    assert second.ns["n"] == 10

    third = kernel()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        runs = third.run_all(cells)
    assert all(o.restored for o in runs.values())
    assert third.ns["n"] == 10 and probe == ["a", "b", "a", "b"]


def test_corrupt_value_is_a_miss_and_leaves_the_namespace_alone(kernel, cache_dir, monkeypatch):
    monkeypatch.setattr(cache_module, "INLINE_MAX", 0)  # a value in a file of its own
    kernel().run("x = [1, 2, 3]\ny = {'k': 'v'}", "a")
    for path in (cache_dir / f"v{FORMAT_VERSION}" / "values").rglob("*"):
        if path.is_file():
            flip_bytes(path)
    second = kernel()
    second.ns["x"] = "old x"
    second.ns["y"] = "old y"
    with cache_warnings() as caught:
        plan = second.plan("x = [1, 2, 3]\ny = {'k': 'v'}", "a")
    assert any("could not restore" in str(w.message) for w in caught)
    assert plan.action == RECORD  # a Record holds no loaded values: nothing half restored
    assert plan.reason.code is Code.ENTRY_UNREADABLE
    assert (second.ns["x"], second.ns["y"]) == ("old x", "old y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        second.run("x = [1, 2, 3]\ny = {'k': 'v'}", "a")
    third = kernel()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert third.run("x = [1, 2, 3]\ny = {'k': 'v'}", "a").restored
    assert third.ns["x"] == [1, 2, 3]


@contextlib.contextmanager
def cache_warnings():
    """The CacheWarnings raised inside, through a filter on CacheWarning alone: the warnings
    filters are an input of every cell (see interpreter.py), incrcell's own aside."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CacheWarning)
        yield caught


def test_deleted_value_file_is_a_miss(kernel, cache_dir, monkeypatch):
    monkeypatch.setattr(cache_module, "INLINE_MAX", 0)  # a value in a file of its own
    kernel().run("x = 'payload'", "a")
    for path in (cache_dir / f"v{FORMAT_VERSION}" / "values").rglob("*"):
        if path.is_file():
            path.unlink()
    with cache_warnings() as caught:
        outcome = kernel().run("x = 'payload'", "a")
    assert outcome.ran and caught


def test_foreign_signing_key_is_a_miss(kernel, cache_dir, monkeypatch):
    kernel().run("x = 1", "a")
    monkeypatch.setenv(KEY_ENV, private_text(b"o" * 32))  # another signer, trusting nobody
    signing_key.cache_clear()
    with cache_warnings() as caught:
        outcome = kernel().run("x = 1", "a")
    assert outcome.ran
    assert any("signed by an untrusted key SHA256:" in str(w.message) for w in caught)


# --------------------------------------------------------------------------- no-op restores


def test_unchanged_value_in_the_namespace_is_not_reloaded(kernel):
    k = kernel()
    k.run("x = [1, 2, 3]", "a")
    # ids, not references: a reference held here would make the objects shared
    x = id(k.ns["x"])
    again = k.plan("x = [1, 2, 3]", "a")
    assert again.action == RESTORE and again.values == {}
    k.engine.restore(again, k.ns)
    assert id(k.ns["x"]) == x

    k.ns["x"] = [1, 2]  # changed behind the engine's back (as another cell would)
    third = k.plan("x = [1, 2, 3]", "a")
    assert third.action == RESTORE and set(third.values) == {"x"}
    k.engine.restore(third, k.ns)
    assert k.ns["x"] == [1, 2, 3]


def test_several_values_are_always_reloaded_together(kernel):
    """Values recorded together may have shared objects (``df = df2``): keeping some
    from an earlier run could break that, so a hit binds them all anew."""
    k = kernel()
    k.run("y = [1]\nx = y", "a")
    again = k.run("y = [1]\nx = y", "a")
    assert again.restored and set(again.plan.values) == {"x", "y"} and k.ns["x"] is k.ns["y"]


def test_unchanged_but_shared_value_is_reloaded(kernel):
    """Keeping a value that another name also refers to would keep that alias,
    where running the cell binds a fresh object: it is reloaded instead."""
    k = kernel()
    k.run("x = [1, 2, 3]", "a")
    k.run("alias = x", "b")
    again = k.plan("x = [1, 2, 3]", "a")
    assert again.action == RESTORE and set(again.values) == {"x"}
    k.engine.restore(again, k.ns)
    assert k.ns["x"] == [1, 2, 3] and k.ns["x"] is not k.ns["alias"]


def test_unchanged_numpy_array_is_not_reloaded(kernel):
    k = kernel()
    k.run("import numpy as np\narr = np.arange(1000)", "a")
    arr = id(k.ns["arr"])
    outcome = k.run("import numpy as np\narr = np.arange(1000)", "a")
    assert outcome.restored and "arr" not in outcome.plan.values and id(k.ns["arr"]) == arr


# --------------------------------------------------------------------------- explain


def test_miss_reasons_follow_the_lineage(kernel):
    k = kernel()
    first = k.run("x = 1", "x")
    assert first.plan.reason == Code.FIRST_RUN()
    assert first.record.reason == first.plan.reason
    k.run("y = x * 2", "y")
    assert k.run("x = 2", "x").plan.reason == Code.SOURCE_CHANGED()
    assert k.run("y = x * 2", "y").plan.reason == Code.INPUT_CHANGED(name="x")
    k.run("z = 1", "z")
    assert k.run("y = x * 2 + z", "y").plan.reason == Code.SEVERAL(
        Code.SOURCE_CHANGED(), Code.NEW_INPUT(name="z")
    )
    assert k.run("y = x * 3", "y").plan.reason == Code.SEVERAL(
        Code.SOURCE_CHANGED(), Code.INPUT_DROPPED(name="z")
    )
    del k.ns["x"]
    outcome = k.run("y = x * 3", "y")
    assert outcome.plan.reason == Code.INPUT_UNDEFINED(name="x") and outcome.record.state == ERROR
    k.run("x = 2", "x")
    assert k.run("y = x * 3", "y").restored


def test_package_change_is_a_reason(kernel, monkeypatch):
    versions = {"numpy": "numpy==1.0"}
    monkeypatch.setattr(
        engine_module,
        "package_versions",
        lambda names: {n: versions[n] for n in names if n in versions},
    )
    source = "import numpy as np\nv = np.float64(1.5).item()"
    assert kernel().run(source, "np").plan.action == RECORD
    assert kernel().run(source, "np").restored
    versions["numpy"] = "numpy==2.0"
    outcome = kernel().run(source, "np")
    assert outcome.ran
    assert outcome.plan.reason == Code.PACKAGE_CHANGED(
        name="numpy", before="numpy==1.0", after="numpy==2.0"
    )


def test_package_of_an_input_value_is_a_reason(kernel, monkeypatch):
    versions = {"numpy": "numpy==1.0"}
    monkeypatch.setattr(
        engine_module,
        "package_versions",
        lambda names: {n: versions[n] for n in names if n in versions},
    )
    cells = [("make", "import numpy as np\narr = np.ones(3)"), ("use", "s = arr.sum()")]
    kernel().run_all(cells)
    versions["numpy"] = "numpy==2.0"
    runs = kernel().run_all(cells)
    assert Code.PACKAGE_CHANGED in runs["use"].plan.reason
    assert runs["use"].plan.reason.find(Code.PACKAGE_CHANGED).details["name"] == "numpy"


def test_python_change_is_a_reason(kernel, monkeypatch):
    kernel().run("x = 1", "x")
    monkeypatch.setattr(sys, "version", sys.version + " (patched)")
    outcome = kernel().run("x = 1", "x")
    assert outcome.ran and outcome.plan.reason.code is Code.PYTHON_CHANGED


def test_cleared_entry_is_a_reason(kernel):
    k = kernel()
    k.run("x = 1", "x")
    assert k.engine.clear_session() == 1
    outcome = k.run("x = 1", "x")
    assert outcome.ran and outcome.plan.reason == Code.ENTRY_MISSING()


def test_records_and_execution_counts(kernel):
    k = kernel()
    k.run("x = 1", "x")
    k.run("y = x + 1", "y")
    assert k.engine.by_count[2].identity == "cell:y"
    record = k.engine.records["cell:y"]
    assert record.label == "y = x + 1" and record.reads == {"x"} and record.writes == {"y"}
    assert record.execution_count == 2 and record.saved == 0.0
    restored = kernel().run_all([("x", "x = 1"), ("y", "y = x + 1")])
    assert restored["y"].record.state == RESTORED and restored["y"].record.saved >= 0.0


# --------------------------------------------------------------------------- graph


def test_graph_producers_and_dependents(kernel):
    k = kernel()
    k.run_all(CHAIN)
    graph = k.engine.graph
    assert [n.cell for n in graph.nodes()] == [f"cell:{c}" for c, _ in CHAIN]
    assert graph.node("cell:y").producers == {"x": "cell:x"}
    assert graph.node("cell:both").producers == {"w": "cell:other", "z": "cell:z"}
    assert graph.dependents("cell:x") == ["cell:y", "cell:z", "cell:both"]
    assert graph.dependents("cell:other") == ["cell:both"]
    assert graph.dependents("cell:both") == []
    assert graph.last_writer("y") == "cell:y"


def test_graph_after_restores_and_function_calls(kernel):
    kernel().run_all(FUNCTION_CELLS)
    k = kernel()
    k.run_all(FUNCTION_CELLS)
    graph = k.engine.graph
    assert graph.node("cell:call").producers == {"f": "cell:def", "k": "cell:k"}
    assert graph.dependents("cell:k") == ["cell:call"]
    assert graph.last_writer("y") == "cell:call"


def test_graph_tracks_mutations_as_writes(kernel):
    k = kernel()
    k.run_all([("make", "lst = []"), ("mutate", "lst.append(1)"), ("use", "n = len(lst)")])
    graph = k.engine.graph
    assert graph.node("cell:use").producers == {"lst": "cell:mutate"}
    assert graph.dependents("cell:make") == ["cell:mutate", "cell:use"]


# --------------------------------------------------------------------------- sharing and Out


def test_engines_sharing_a_cache_dir_share_entries(kernel, probe):
    one = kernel()
    one.run_all(
        [
            ("nb1-a", "PROBE.append(1)\nbase = [1, 2, 3]"),
            ("nb1-b", "PROBE.append(2)\ntotal = sum(base)"),
        ]
    )
    other = kernel()
    runs = other.run_all(
        [
            ("nb2-a", "# another notebook\nPROBE.append(1)\nbase = [1, 2, 3]"),
            ("nb2-b", "PROBE.append(2)\ntotal = sum(base)"),
        ]
    )
    assert all(o.restored for o in runs.values())
    assert other.ns["total"] == 6 and probe == [1, 2]
    # without a cell id (e.g. a console) the same code hits too
    third = kernel()
    assert third.run("PROBE.append(1)\nbase = [1, 2, 3]").restored


def test_out_value_is_recorded_and_returned_on_restore(kernel):
    cells = [
        ("a", "x = 3\nx * 2"),
        ("b", "{'sq': [i * i for i in range(x)]}"),
        ("none", "y = 1\nNone"),
    ]
    first = kernel()
    runs = first.run_all(cells)
    assert runs["a"].value == 6 and runs["b"].value == {"sq": [0, 1, 4]}
    assert first.engine.store.get(runs["none"].plan.key).result is None
    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values())
    assert runs["a"].value == 6
    assert runs["b"].value == {"sq": [0, 1, 4]}
    assert runs["none"].value is None


@pytest.mark.parametrize("class_source", CLASS_VARIANTS)
def test_out_value_that_is_an_instance_of_a_notebook_class(kernel, class_source):
    cells = [("A", class_source), ("out", "C(4)")]
    kernel().run_all(cells)
    second = kernel()
    runs = second.run_all(cells)
    assert runs["out"].restored, runs["out"].plan.reason
    assert type(runs["out"].value) is second.ns["C"] and runs["out"].value.double() == 8


# --------------------------------------------------------------------------- known wrong results
#
# Each test below shows a case where a restore leaves a namespace that differs
# from what running the same cells would leave, so that a later cell computes
# a wrong result.  They are strict xfails: they document the bugs, and start
# failing (XPASS) once fixed, so the marker can be removed.


def plain_run(cells: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What running ``cells`` without incrcell leaves in a fresh namespace."""
    module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", module)
    for _, source in cells:
        exec(source, module.__dict__)
    return module.__dict__


def test_aliasing_within_one_cell_survives_a_restore(kernel, monkeypatch):
    cells = [
        ("a", "data = [1, 2]\nview = {'d': data}"),
        ("b", "data.append(3)"),
        ("c", "n = len(view['d'])"),
    ]
    kernel().run_all(cells)
    second = kernel()
    second.run_all(cells)
    assert second.ns["n"] == plain_run(cells, monkeypatch)["n"] == 3


def test_aliasing_across_cells_survives_a_restore(kernel, monkeypatch):
    cells = [
        ("a", "config = {'opts': {'lr': 1}}"),
        ("b", "opts = config['opts']"),
        ("c", "opts['lr'] = 2"),
        ("d", "lr = config['opts']['lr']"),
    ]
    kernel().run_all(cells)
    second = kernel()
    second.run_all(cells)
    assert second.ns["lr"] == plain_run(cells, monkeypatch)["lr"] == 2


def test_numpy_view_survives_a_restore(kernel, monkeypatch):
    cells = [
        ("a", "import numpy as np\narr = np.zeros(3)\nv = arr[:2]"),
        ("b", "v[0] = 7"),
        ("c", "s = float(arr.sum())"),
    ]
    kernel().run_all(cells)
    second = kernel()
    second.run_all(cells)
    assert second.ns["s"] == plain_run(cells, monkeypatch)["s"] == 7.0


def test_class_mutated_in_place_keeps_its_instances(kernel, monkeypatch):
    cells = [
        ("a", "class C:\n    rate = 1\n    __slotnames__ = []"),
        ("b", "c = C()"),
        ("d", "C.rate = 5"),
        ("e", "r = c.rate"),
    ]
    kernel().run_all(cells)
    second = kernel()
    second.run_all(cells)
    assert second.ns["r"] == plain_run(cells, monkeypatch)["r"] == 5


def test_hit_that_keeps_the_namespace_value_does_not_keep_its_aliases(kernel, monkeypatch):
    cells = [
        ("a", "x = [1]"),
        ("b", "y = x"),
        ("a", "x = [1]"),
        ("c", "x.append(2)"),
        ("d", "n = len(y)"),
    ]
    k = kernel()
    for cell_id, source in cells:
        k.run(source, cell_id)
    assert k.ns["n"] == plain_run(cells, monkeypatch)["n"] == 1


def test_module_state_set_by_an_earlier_cell(kernel, monkeypatch):
    cells = [
        ("seed", "import random\nrandom.seed(0)"),
        ("draw", "import random\ny = random.random()"),
    ]
    kernel().run_all(cells)
    edited = [("seed", "import random\nrandom.seed(1)"), cells[1]]
    second = kernel()
    outcomes = second.run_all(edited)
    assert second.ns["y"] == plain_run(edited, monkeypatch)["y"]
    assert outcomes["draw"].ran and outcomes["draw"].plan.reason == Code.RANDOM_STATE(name="random")


# --------------------------------------------------------------------------- randomness

RANDOM_CELLS = [
    ("imports", "import random\nimport numpy as np"),
    ("seed", "random.seed(3)\nnp.random.seed(4)"),
    ("draw", "a = random.random()\nb = np.random.rand(3)"),
    ("after", "c = random.random()\nd = np.random.rand(2)"),
]


def test_random_draws_are_restored_with_the_generator_state_after_them(kernel, monkeypatch):
    """After a restore, the next cells draw exactly the numbers a plain run draws."""
    kernel().run_all(RANDOM_CELLS)
    second = kernel()
    outcomes = second.run_all(RANDOM_CELLS[:3])
    assert outcomes["seed"].restored and outcomes["draw"].restored
    second.run("e = random.random()\nf = np.random.rand(2)", "new")  # never recorded: it runs
    plain = plain_run(
        [*RANDOM_CELLS[:3], ("new", "e = random.random()\nf = np.random.rand(2)")], monkeypatch
    )
    assert second.ns["a"] == plain["a"] and second.ns["e"] == plain["e"]
    assert (second.ns["b"] == plain["b"]).all() and (second.ns["f"] == plain["f"]).all()


def test_a_cell_drawing_from_an_unseeded_generator_reruns(kernel):
    """A generator nobody seeded holds fresh entropy: drawing from it is nondeterministic."""
    cells = [("imports", "import random"), ("draw", "x = random.random()")]
    kernel().run_all(cells)
    second = kernel()
    second.ns["random"] = __import__("random")
    __import__("random").seed()  # what a fresh kernel has: another state
    outcomes = second.run_all(cells)
    assert outcomes["draw"].ran and outcomes["draw"].record.reason == Code.FRESH_RANDOM(
        name="random"
    )


def test_a_cell_that_seeds_before_drawing_does_not_depend_on_the_state_before(kernel):
    cells = [("imports", "import random"), ("both", "random.seed(7)\nx = random.random()")]
    kernel().run_all(cells)
    __import__("random").seed()  # another state before the cell
    second = kernel()
    outcomes = second.run_all(cells)
    assert outcomes["both"].restored
    assert __import__("random").random() == _after_seed(7, draws=2)


def test_a_cell_that_draws_before_seeding_depends_on_the_state_before(kernel):
    cells = [("imports", "import random"), ("both", "x = random.random()\nrandom.seed(7)")]
    kernel().run_all(cells)
    __import__("random").seed()
    outcomes = kernel().run_all(cells)
    assert outcomes["both"].ran


def _after_seed(seed: int, draws: int) -> float:
    import random

    generator = random.Random(seed)
    for _ in range(draws - 1):
        generator.random()
    return generator.random()


def test_a_cell_that_does_not_draw_leaves_the_generators_alone(kernel):
    kernel().run_all(RANDOM_CELLS[:2])
    second = kernel()
    second.run_all(RANDOM_CELLS[:2])
    before = __import__("random").getstate()
    assert second.run("x = 1", "plain").ran
    assert second.run("x = 1", "plain").restored
    assert __import__("random").getstate() == before


def test_unusable_cache_directory_runs_cells_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    signing_key.cache_clear()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache should be")
    engine = Engine(Config(cache_dir=blocker / "cache"))
    ns: dict[str, Any] = {}
    plan = engine.plan("x = 1", ns, cell_id="a")
    assert plan.action == "run"
    assert plan.reason.code is Code.CACHE_UNUSABLE
    detail = plan.reason.details["detail"]
    assert "cannot be used" in detail and "INCRCELL_CACHE_DIR" in detail
    exec("x = 1", ns)
    assert engine.finish(plan, ns, success=True).state == "uncacheable"
    signing_key.cache_clear()


def test_del_of_a_name_that_no_longer_exists_is_not_restored(kernel):
    """``del x`` raises NameError when x does not exist: a restore must not hide that."""
    k = kernel()
    k.run("x = 1", "a")
    k.run("del x", "b")
    second = kernel()
    again = second.run("del x", "b")  # x was never defined in this session
    assert again.ran and isinstance(again.error, NameError)
    second.run("x = 1", "a")
    assert second.run("del x", "b").restored and "x" not in second.ns


# --------------------------------------------------------------------------- files


def test_a_cell_is_keyed_on_the_content_of_the_files_it_reads(kernel, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    cells = [
        ("read", f"import pathlib\ntext = pathlib.Path({str(data)!r}).read_text()"),
        ("use", "rows = len(text.splitlines())"),
    ]
    kernel().run_all(cells)
    assert all(o.restored for o in kernel().run_all(cells).values())

    os.utime(data, (1, 1))  # touched, same content: still restored
    assert kernel().run_all(cells)["read"].restored

    data.write_text("a,b\n1,2\n3,4\n")
    second = kernel()
    runs = second.run_all(cells)
    assert runs["read"].ran and runs["read"].plan.reason.code is Code.FILE_CHANGED
    assert runs["use"].ran and second.ns["rows"] == 3  # its input changed with the file

    data.unlink()
    third = kernel()
    gone = third.run(
        "import pathlib\ntext = pathlib.Path(" + repr(str(data)) + ").read_text()", "read"
    )
    assert gone.ran and isinstance(gone.error, FileNotFoundError)


def test_files_a_cell_writes_are_written_back_on_a_restore(kernel, tmp_path):
    """Written files are outputs: a later cell that reads them finds them after a restore."""
    out, gone = tmp_path / "out.csv", tmp_path / "scratch.txt"
    gone.write_text("old")
    cells = [
        (
            "write",
            f"import os, numpy as np\nnp.save({str(tmp_path / 'arr.npy')!r}, np.arange(3))\n"
            f"open({str(out)!r}, 'w').write('a,b\\n1,2\\n')\nos.remove({str(gone)!r})",
        ),
        ("read", f"text = open({str(out)!r}).read()"),
    ]
    first = kernel().run_all(cells)
    assert first["write"].record.state == "ran" and first["read"].record.state == "ran"
    out.unlink()
    (tmp_path / "arr.npy").unlink()
    gone.write_text("back again")
    second = kernel()
    runs = second.run_all(cells)
    assert runs["write"].restored and runs["read"].restored
    assert out.read_text() == "a,b\n1,2\n" and not gone.exists()
    import numpy as np

    assert np.load(tmp_path / "arr.npy").tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "cell",
    [
        "open({path!r}, 'a').write('more')",
        "text = open({path!r}).read()\nopen({path!r}, 'w').write(text + '!')",
    ],
)
def test_a_cell_that_updates_a_file_in_place_is_not_cached(kernel, tmp_path, cell):
    """Appending, or reading then rewriting, makes the old content an input it cannot restore."""
    path = tmp_path / "log.txt"
    path.write_text("start")
    record = kernel().run(cell.format(path=str(path)), "w").record
    assert record.state == "uncacheable" and record.reason.code is Code.READS_AND_WRITES_FILE


def test_files_read_from_another_working_directory_are_not_trusted(kernel, tmp_path, monkeypatch):
    """Two projects with the same cells and their own data.csv must not share the entry."""
    for name, rows in (("a", "x\n1\n"), ("b", "x\n1\n2\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.csv").write_text(rows)
    cell = [("read", "text = open('data.csv').read()")]
    monkeypatch.chdir(tmp_path / "a")
    kernel().run_all(cell)
    monkeypatch.chdir(tmp_path / "b")
    other = kernel()
    run = other.run_all(cell)["read"]
    assert run.ran and run.plan.reason.code is Code.OTHER_CWD
    assert other.ns["text"] == "x\n1\n2\n"


@pytest.mark.parametrize(
    "source",
    [
        "import os\nhere = os.getcwd()",
        "import os\nhere = os.path.dirname(os.path.abspath('data.csv'))",
        "from pathlib import Path\nhere = str(Path.cwd())",
        "from pathlib import Path\nhere = str(Path('data.csv').resolve().parent)",
        "from pathlib import Path\nhere = str(Path('data.csv').absolute().parent)",
    ],
)
def test_a_cell_reading_the_working_directory_reruns_in_another(
    kernel, tmp_path, monkeypatch, source
):
    """The notebook moved, or a colleague's checkout restores the entry: the path it read is
    another one (read directly, or as the base of a relative path made absolute)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = kernel()
    first.run_all([("here", source)])
    assert first.ns["here"] == str(tmp_path / "a")
    assert kernel().run_all([("here", source)])["here"].restored  # the same directory
    monkeypatch.chdir(tmp_path / "b")
    other = kernel()
    run = other.run_all([("here", source)])["here"]
    assert run.ran and run.plan.reason.code is Code.OTHER_CWD
    assert other.ns["here"] == str(tmp_path / "b")


def test_a_local_module_is_keyed_on_the_local_modules_it_imports(kernel, tmp_path, monkeypatch):
    """Editing utils.py reruns the cells that use helpers, which imports utils."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "inc_utils.py").write_text("FACTOR = 2\n")
    (tmp_path / "inc_helpers.py").write_text(
        "import inc_utils\ndef scale(x):\n    return x * inc_utils.FACTOR\n"
    )
    cells = [("use", "import inc_helpers\ny = inc_helpers.scale(21)")]
    kernel().run_all(cells)
    for name in ("inc_utils", "inc_helpers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert kernel().run_all(cells)["use"].restored
    (tmp_path / "inc_utils.py").write_text("FACTOR = 3\n")
    for name in ("inc_utils", "inc_helpers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    second = kernel()
    run = second.run_all(cells)["use"]
    assert run.ran and run.plan.reason == Code.MODULE_CHANGED_ON_DISK(module="inc_helpers")
    assert second.ns["y"] == 63


def test_a_local_module_reading_its_own_location_is_keyed_on_it(kernel, tmp_path, monkeypatch):
    """``Path(__file__).parent / "data"`` in a moved project, or a colleague's checkout: the
    same source elsewhere makes another path.  A module that does not read where it is
    keeps serving the entry to every checkout."""
    sources = {
        "inc_where.py": "from pathlib import Path\nDATA = str(Path(__file__).parent / 'data')\n",
        "inc_plain.py": "FACTOR = 2\n",
    }
    cells = [
        ("where", "import inc_where\npath = inc_where.DATA"),
        ("plain", "import inc_plain\ny = inc_plain.FACTOR * 21"),
    ]
    for checkout in ("a", "b"):
        (tmp_path / checkout).mkdir()
        for name, source in sources.items():
            (tmp_path / checkout / name).write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    kernel().run_all(cells)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "a")])
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    for name in ("inc_where", "inc_plain"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    other = kernel()
    runs = other.run_all(cells)
    assert runs["where"].ran and other.ns["path"] == str(tmp_path / "b" / "data")
    assert runs["plain"].restored and other.ns["y"] == 42


def test_a_local_module_edited_after_its_import_makes_its_users_rerun(
    kernel, tmp_path, monkeypatch
):
    """Without a reload the code in memory is the old one: no key can describe it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "inc_edited.py").write_text("FACTOR = 2\n")
    monkeypatch.delitem(sys.modules, "inc_edited", raising=False)
    k = kernel()
    k.run("import inc_edited", "import")
    assert k.run("y = inc_edited.FACTOR * 21", "use").record.state == "ran"
    (tmp_path / "inc_edited.py").write_text("FACTOR = 3\n")
    again = k.run("y = inc_edited.FACTOR * 21", "use")
    assert again.ran and again.plan.reason == Code.MODULE_CHANGED_ON_DISK(module="inc_edited")
    assert k.ns["y"] == 42  # what the code in memory computes, as in plain IPython


def test_a_cell_holding_an_object_from_inside_another_value_is_not_cached(kernel, monkeypatch):
    """``first = rows[0]``: no name refers to that object, so a restore would copy it."""
    cells = [
        ("rows", "rows = [[1], [2]]"),
        ("first", "first = rows[0]"),
        ("change", "first.append(9)"),
        ("read", "total = sum(map(len, rows))"),
    ]
    run = kernel().run_all(cells)
    assert run["first"].record.state == UNCACHEABLE
    assert run["first"].record.reason == Code.SHARES_UNWRITTEN(name="rows")
    second = kernel()
    second.run_all(cells)
    assert second.ns["total"] == plain_run(cells, monkeypatch)["total"] == 3
    assert second.ns["first"] is second.ns["rows"][0]


def test_values_holding_a_mutated_object_are_written_with_it(kernel, monkeypatch):
    """``c = [a]`` in one cell, ``a.append(..)`` in another: c changed too."""
    cells = [
        ("a", "a = [1]"),
        ("c", "c = {'k': a}\nb = a"),
        ("mutate", "a.append(2)"),
        ("read", "seen = (len(c['k']), len(b), c['k'] is a, b is a)"),
    ]
    first = kernel().run_all(cells)
    assert {"a", "b", "c"} <= first["mutate"].record.writes
    # what `c` held before is only known to matter once the cell ran: keyed from its next run on
    assert first["mutate"].record.state == UNCACHEABLE
    assert first["mutate"].record.reason == Code.THROUGH_UNKNOWN(name="c")
    assert not kernel().run_all(cells)["mutate"].restored
    second = kernel()
    runs = second.run_all(cells)
    assert all(o.restored for o in runs.values())
    assert second.ns["seen"] == plain_run(cells, monkeypatch)["seen"] == (2, 2, True, True)
    assert second.ns["c"]["k"] is second.ns["a"] is second.ns["b"]


def test_downstream_cells_do_not_restore_on_top_of_a_half_run_upstream(kernel, monkeypatch):
    """The upstream cell changed ``lst`` then raised: what follows sees what a plain run sees."""
    cells = [("make", "lst = [1]"), ("grow", "lst.append(2)"), ("use", "snapshot = list(lst)")]
    kernel().run_all(cells)
    second = kernel()
    second.run("lst = [1]", "make")
    half = second.run("lst.append('half')\nraise ValueError('half way')", "grow")
    assert half.error is not None and half.record.state == ERROR
    use = second.run("snapshot = list(lst)", "use")
    assert use.ran and Code.INPUT_CHANGED(name="lst") in use.plan.reason
    assert second.ns["snapshot"] == [1, "half"]
