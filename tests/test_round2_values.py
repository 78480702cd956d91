"""Issue 9, round 2: writes through views and shared sub-objects, lossy pickles, state inside
functions.  Real kernels, a restart between versions; each test checks the cells' states and
the values a plain run gives."""

from __future__ import annotations

import ast

from kernel import LOAD, Kernel, normalise_outputs


def why(kernel: Kernel, execution) -> tuple[str, str, dict[str, object]]:
    """The state of one execution, and its reason's code and details, as the engine recorded
    them (what ``%incrcell why`` puts in words)."""
    return ast.literal_eval(
        kernel.value(
            "(lambda r: (r.state.value, r.reason.code.value if r.reason else '', "
            "dict(r.reason.details) if r.reason else {}))("
            "__import__('incrcell.kernel.extension').kernel.extension"
            ".active(get_ipython()).engine"
            f".by_count[{execution.execution_count}])"
        )
    )


def run(kernel: Kernel, cells: list[tuple[str, str]]) -> dict[str, object]:
    """Run all cells after a restart; ``{cell id: Execution}``, all of them successful."""
    kernel.restart()
    runs = dict(zip((cell_id for cell_id, _ in cells), kernel.run_all(cells)))
    assert all(e.status == "ok" for e in runs.values()), {c: e.error for c, e in runs.items()}
    return runs


def edit(cells: list[tuple[str, str]], cell_id: str, source: str) -> list[tuple[str, str]]:
    return [(c, source if c == cell_id else s) for c, s in cells]


VIEW = [
    LOAD,
    ("make", "import numpy as np\nm = np.ones((4, 4))"),
    ("corner", "m[0, 0] = 5"),
    ("view", "col = m[:, 1]"),
    ("scale", "col *= 3"),
    ("read", "total = float(m.sum())\ncorner = float(m[0, 0])"),
]


def test_a_write_through_a_view_never_restores_an_older_owner(kernel: Kernel):
    first = run(kernel, VIEW)
    assert why(kernel, first["scale"]) == ("uncacheable", "THROUGH_UNKNOWN", {"name": "m"})
    second = run(kernel, VIEW)  # now keyed on what `m` holds before it: recorded
    assert not second["scale"].restored and second["read"].restored
    assert run(kernel, VIEW)["scale"].restored
    assert (
        kernel.value("(float(m.sum()), bool(col.base is m or col.base is m.base))")
        == "(28.0, True)"
    )

    edited = edit(VIEW, "corner", "m[0, 0] = 7")
    runs = run(kernel, edited)
    assert not runs["corner"].restored and not runs["view"].restored
    assert not runs["scale"].restored  # its input `col` is unchanged, but `m` is not
    assert why(kernel, runs["scale"]) == ("ran", "THROUGH_CHANGED", {"name": "m"})
    assert kernel.value("(total, corner)") == "(30.0, 7.0)"  # plain run: 7 + 3*4 + 11
    again = run(kernel, edited)
    assert all(e.restored for cid, e in again.items() if cid != "load")
    assert kernel.value("(total, corner, float(m[1, 1]))") == "(30.0, 7.0, 3.0)"


HOLDERS = [
    LOAD,
    ("make", "inner = [1]\na = [inner]\ndel inner"),
    ("hold", "c = {'k': a[0], 'v': 1}"),
    ("grow", "a[0].append(2)"),
    ("read", "seen = (c['v'], len(c['k']), c['k'] is a[0])"),
]


def test_a_container_holding_an_object_inside_a_mutated_value_is_keyed_on_it(kernel: Kernel):
    first = run(kernel, HOLDERS)
    # found from the list inside `a`, written too
    assert why(kernel, first["grow"]) == ("uncacheable", "THROUGH_UNKNOWN", {"name": "c"})
    run(kernel, HOLDERS)
    runs = run(
        kernel, HOLDERS
    )  # `hold` copies no object of `a`: it runs (README: `first = rows[0]`)
    assert all(e.restored for cid, e in runs.items() if cid not in ("load", "hold"))
    assert kernel.value("seen") == "(1, 2, True)"

    edited = edit(HOLDERS, "hold", "c = {'k': a[0], 'v': 2}")
    runs = run(kernel, edited)
    assert not runs["hold"].restored and not runs["grow"].restored and not runs["read"].restored
    assert kernel.value("seen") == "(2, 2, True)"


LOSSY = [
    LOAD,
    (
        "define",
        "class Model:\n"
        "    def __init__(self):\n"
        "        self.weights = [1.0, 2.0]\n"
        "        self.cache = {}\n"
        "    def __getstate__(self):\n"
        "        state = dict(self.__dict__)\n"
        "        state['cache'] = {}  # 'transient', but a plain run keeps it\n"
        "        return state\n"
        "class Span:\n"
        "    __slots__ = ('start', 'stop')\n"
        "    def __init__(self, start, stop):\n"
        "        self.start, self.stop = start, stop\n"
        "    def __reduce__(self):\n"
        "        return (Span, (self.start, self.start))  # drops `stop`",
    ),
    ("fit", "model = Model()\nmodel.cache['score'] = 0.75\nspan = Span(1, 9)"),
    ("plain", "kept = Model()"),
    ("use", "result = (model.cache.get('score'), span.stop, len(kept.cache))"),
]


def test_a_lossy_pickle_is_never_restored(kernel: Kernel):
    first = run(kernel, LOSSY)
    state, code, details = why(kernel, first["fit"])
    assert (state, code) == ("uncacheable", "LOSSY"), details
    runs = run(kernel, LOSSY)
    assert not runs["fit"].restored  # `use` may restore: its inputs are the objects a run makes
    assert runs["define"].restored and runs["plain"].restored  # nothing lost there: cached
    assert kernel.value("(result, model.cache, span.stop)") == "((0.75, 9, 0), {'score': 0.75}, 9)"


MEMO = [
    LOAD,
    ("k", "K = 2"),
    ("define", "import functools\n@functools.lru_cache\ndef g(x):\n    return x * K"),
    ("first", "a = g(1)"),
    ("later", "K = 3"),
    ("second", "b = g(1)  # the memo answers: 2 in a plain run"),
]


def test_an_lru_cache_memo_is_state_a_restore_cannot_drop(kernel: Kernel):
    run(kernel, MEMO)
    runs = run(kernel, MEMO)
    assert not runs["first"].restored and not runs["second"].restored
    state, code, details = why(kernel, runs["second"])
    assert (state, code, details["name"]) == ("uncacheable", "UNHASHABLE_INPUT", "g")
    assert "lru_cache memo" in str(details["detail"])  # the hasher's own words for what it met
    assert kernel.value("(a, b)") == "(2, 2)"
    run(kernel, edit(MEMO, "k", "K = 5"))
    assert kernel.value("(a, b)") == "(5, 5)"


CLOSURES = [
    LOAD,
    (
        "define",
        "def make():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n"
        "        return n\n    def get():\n        return n\n    return inc, get",
    ),
    ("make", "inc, get = make()"),
    ("step", "inc()"),
    ("read", "x = get()"),
]


def test_closures_sharing_a_nonlocal_stay_shared(kernel: Kernel):
    first = run(kernel, CLOSURES)
    assert first["step"].result == "1" and kernel.value("x") == "1"
    for _ in range(2):
        runs = run(kernel, CLOSURES)
        assert not runs["make"].restored and not runs["step"].restored
        assert (
            runs["step"].result == "1"
            and kernel.value("(x, get(), inc(), get())") == "(1, 1, 2, 2)"
        )
    assert why(kernel, runs["make"])[0] == "uncacheable"
    assert normalise_outputs(runs["step"].outputs) == normalise_outputs(first["step"].outputs)


# -- in-process: what a faithful custom pickle and plain aliases keep --------------------

from harness import Session, cache_dir  # noqa: E402,F401  (cache_dir is a fixture)


def test_a_faithful_custom_pickle_is_cached_and_restored(cache_dir, monkeypatch):
    cells = [
        (
            "define",
            "class Box:\n    def __init__(self, items):\n        self.items = items\n"
            "    def __getstate__(self):\n        return dict(self.__dict__)\n"
            "    def __setstate__(self, state):\n        self.__dict__.update(state)",
        ),
        ("make", "box = Box([1, 2])\nbox.items.append(3)"),
        ("use", "n = len(box.items)"),
    ]
    first = Session(cache_dir, monkeypatch).run_all(cells)
    assert all(o.record.state == "ran" for o in first.values()), {
        c: o.record.reason for c, o in first.items()
    }
    second = Session(cache_dir, monkeypatch)
    assert all(o.restored for o in second.run_all(cells).values())
    assert second.ns["box"].items == [1, 2, 3] and second.ns["n"] == 3


def test_an_alias_of_a_mutated_input_is_cached_on_its_first_run(cache_dir, monkeypatch):
    cells = [("make", "a = [1]\nb = a"), ("grow", "a.append(2)"), ("read", "n = len(b)")]
    first = Session(cache_dir, monkeypatch).run_all(cells)
    assert first["grow"].record.state == "ran" and "b" in first["grow"].record.writes
    second = Session(cache_dir, monkeypatch)
    assert all(o.restored for o in second.run_all(cells).values())
    assert second.ns["b"] is second.ns["a"] and second.ns["n"] == 2
