"""Restored values key the next cells exactly like the values they were recorded from.

A cell reading a value another cell wrote is keyed by that value's digest. After a
restart the value is a copy loaded from the cache: if the copy hashed differently
(state a library's ``__setstate__`` drops, array views pickling copies apart, counters
that pickling itself advances, numbers the process assigns), every cell reading it would
miss. Two layers keep hits: the fingerprint leaves out what pickling changes or what the
process assigns, and the engine keys a value whose stored copy still hashes otherwise by
that copy's digest (fingerprint.restored_digest), as its restores are keyed.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from incrcell.fingerprint import ValueHasher, hash_value, restored_digest
from incrcell.serialise import dumps, loads

from harness import Session, cache_dir  # noqa: F401  (cache_dir is a fixture)

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def round_trip(value: object) -> Any:
    stored = dumps(value)
    return loads(stored.method, stored.stream, stored.buffers, lambda name: None)


@dataclasses.dataclass
class Point:
    x: float
    y: list[int]


def _figure_lines() -> Any:
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], label="a")
    ax.plot([3, 1, 2], "--", label="b")
    ax.legend()
    ax.set_title("lines")
    return fig


def _figure_image() -> Any:
    fig, ax = plt.subplots()
    image = ax.imshow(np.arange(12.0).reshape(3, 4), cmap="viridis")
    fig.colorbar(image)
    return fig


def _figure_grid() -> Any:
    fig, axes = plt.subplots(1, 2, sharex=True)
    for ax, data in zip(axes.flat, ([1, 2], [2, 1])):
        ax.scatter(data, data)
        ax.hist(data)
    fig.canvas.draw()  # renderer state, cached text layouts
    return fig


def _estimators() -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    features, labels = rng.random((30, 3)), np.arange(30) % 2
    return {
        "linear": LinearRegression().fit(features, labels),
        "scaler": StandardScaler().fit(features),
        "tree": DecisionTreeClassifier(random_state=0).fit(features, labels),
        "forest": RandomForestClassifier(n_estimators=3, random_state=0).fit(features, labels),
    }


def _frame() -> pd.DataFrame:
    index = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["k", "n"])
    return pd.DataFrame(
        {
            "cat": pd.Categorical(["x", "y", "x", "z"]),
            "when": pd.date_range("2024-01-01", periods=4, tz="UTC"),
            "value": [1.0, 2.5, np.nan, 4.0],
        },
        index=index,
    )


# Values notebooks hand from cell to cell, each built anew (hashing may not mutate them).
CATALOG: dict[str, Any] = {
    "figure with lines and legend": _figure_lines,
    "its axes": lambda: _figure_lines().axes[0],
    "figure with image and colorbar": _figure_image,
    "drawn grid of subplots": _figure_grid,
    "iris Bunch": sklearn_datasets.load_iris,
    "digits Bunch": sklearn_datasets.load_digits,
    "iris as frame": lambda: sklearn_datasets.load_iris(as_frame=True),
    **{
        f"fitted {name}": lambda name=name: _estimators()[name]
        for name in ("linear", "scaler", "tree", "forest")
    },
    "frame with categories, datetimes, MultiIndex": _frame,
    "series": lambda: _frame()["value"],
    "masked array": lambda: np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False]),
    "structured array": lambda: np.array(
        [(1, 2.0, b"a")], dtype=[("i", "i4"), ("f", "f8"), ("s", "S2")]
    ),
    "dataclass": lambda: Point(1.5, [1, 2]),
    "nested containers": lambda: {
        "a": [1, (2, 3)],
        "b": {4, 5},
        "c": datetime.date(2024, 1, 1),
    },
}


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


@pytest.mark.parametrize("name", list(CATALOG))
def test_restored_copy_hashes_like_every_later_copy(name: str) -> None:
    """Hashing is stable (it changes nothing), and a restored copy hashes like a copy of
    itself: what a warm run binds is keyed the same in every later session."""
    value = CATALOG[name]()
    assert hash_value(value) == hash_value(value)
    copy = round_trip(value)
    assert hash_value(copy) == hash_value(round_trip(copy))


@pytest.mark.parametrize("name", ["structured array", "dataclass", "nested containers", "series"])
def test_faithful_values_hash_like_their_copies(name: str) -> None:
    value = CATALOG[name]()
    assert hash_value(round_trip(value)) == hash_value(value)


def test_fitted_tree_arrays_are_not_aliases_by_address() -> None:
    """A tree's node and value arrays view one Cython object's memory, at addresses that
    differ from process to process; they do not overlap, so they are not aliases."""
    tree = _estimators()["forest"]
    assert hash_value(tree) == hash_value(round_trip(tree))


def test_arrays_viewing_one_buffer_still_alias() -> None:
    """Overlapping views of memory a non-array object holds are aliases, at their offset."""
    whole = np.frombuffer(bytearray(16), "u1")
    apart = np.frombuffer(bytearray(16), "u1")[:8], np.frombuffer(bytearray(16), "u1")[4:12]
    assert hash_value((whole[:8], whole[4:12])) != hash_value(apart)
    assert hash_value((whole[:8], whole[4:12])) != hash_value((whole[:8], whole[2:10]))


def test_figures_differing_in_content_still_differ() -> None:
    one, other = _figure_lines(), _figure_lines()
    other.axes[0].lines[0].set_color("red")
    assert hash_value(one) != hash_value(other)
    assert hash_value(round_trip(one)) != hash_value(round_trip(other))


def test_stand_in_holds_while_the_value_is_unchanged() -> None:
    bunch = sklearn_datasets.load_iris()
    copy = round_trip(bunch)
    own, copied = hash_value(bunch), hash_value(copy)
    assert own != copied  # Bunch.__setstate__ drops its __dict__
    stands_for = restored_digest(copied)
    stand_ins = {id(bunch): (bunch, own, stands_for), id(copy): (copy, None, stands_for)}
    with ValueHasher(stand_ins) as hasher:
        assert hasher.hash(bunch) == hasher.hash(copy) == stands_for
    copy["extra"] = 1
    bunch["extra"] = 1
    with ValueHasher(stand_ins) as hasher:
        assert hasher.hash(bunch) == hash_value(bunch) != stands_for
        assert hasher.hash(copy) == hash_value(copy) != stands_for


# ------------------------------------------------------------------ through the engine

CELLS = [
    (
        "imports",
        "import numpy as np\nimport matplotlib.pyplot as plt\nfrom sklearn import datasets",
    ),
    ("bunch", "iris = datasets.load_iris()"),
    (
        "fig",
        "fig, ax = plt.subplots()\nax.plot(iris.data[:, 0], iris.data[:, 1], 'o')\n"
        "fig.suptitle('iris')",
    ),
    ("read fig", "n_lines = len(fig.axes[0].lines)\nprint(n_lines)"),
    ("read bunch", "shape = iris.data.shape\nprint(shape, iris.target_names.tolist())"),
]


def test_cells_reading_restored_figures_and_bunches_restore(
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cold = Session(cache_dir, monkeypatch).run_all(CELLS)
    assert not any(outcome.restored for outcome in cold.values())
    warm_session = Session(cache_dir, monkeypatch)
    warm = warm_session.run_all(CELLS)
    ran = {cell: str(outcome.record.reason) for cell, outcome in warm.items() if outcome.ran}
    assert ran == {}
    assert warm["read fig"].shown == "1\n"
    assert warm["read bunch"].shown == "(150, 4) ['setosa', 'versicolor', 'virginica']\n"
    assert warm_session.ns["fig"]._suptitle.get_text() == "iris"
    # a change to the restored figure is seen: the cell reading it runs
    warm_session.run("fig.axes[0].plot([0, 1])", "more")
    again = warm_session.run(CELLS[3][1], "read fig")
    assert again.ran and again.shown == "2\n"
