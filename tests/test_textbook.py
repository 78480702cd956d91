"""A textbook notebook (NumPy, pandas, matplotlib, scikit-learn) restores whole after a restart.

Cells that read a restored figure, axes, ``Bunch`` or fitted estimator must restore too:
each restored value keys the cells reading it exactly as the value it was recorded from
did (see tests/test_digest_stability.py for the mechanism, value by value).
"""

from __future__ import annotations

import pytest

from kernel import LOAD, Kernel, normalise_outputs, states

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

TEXTBOOK = [
    LOAD,
    (
        "imports",
        "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\n"
        "from sklearn.datasets import load_iris\nfrom sklearn.tree import DecisionTreeClassifier",
    ),
    ("iris", "iris = load_iris()\nX, y = iris.data, iris.target"),
    (
        "frame",
        "df = pd.DataFrame(X, columns=iris.feature_names)\n"
        "df['species'] = pd.Categorical.from_codes(y, iris.target_names)\n"
        "df.groupby('species', observed=True).mean().round(2)",
    ),
    (
        "plot",
        "fig, ax = plt.subplots()\n"
        "for name, group in df.groupby('species', observed=True):\n"
        "    ax.plot(group.iloc[:, 0], group.iloc[:, 1], 'o', label=name)\n"
        "legend = ax.legend()\ntitle = ax.set_title('iris')",
    ),
    ("read figure", "print(len(fig.axes), len(ax.lines), ax.get_title())"),
    ("model", "model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)"),
    ("read model", "print(round(model.score(X, y), 3), model.tree_.node_count)"),
    ("read bunch", "print(iris.data.shape, iris.target_names.tolist())"),
]


def test_warm_run_all_restores_every_cell(kernel: Kernel):
    cold = kernel.run_all(TEXTBOOK)
    assert all(e.status == "ok" for e in cold), [e.error for e in cold]
    kernel.restart()
    warm = kernel.run_all(TEXTBOOK)
    # the imports run again: a library they load draws from the unseeded global `random`
    # as it is imported (rich's style ids); every cell after them restores
    assert states(warm)[2:] == ["restored"] * (len(TEXTBOOK) - 2), kernel.run(
        "%incrcell status"
    ).stdout
    for a, b in zip(cold, warm):
        assert normalise_outputs(b.outputs) == normalise_outputs(a.outputs)
    # one figure, shown once: recording and restoring it show nothing more
    images = [sum("image/png" in o.get("data", {}) for o in e.outputs) for e in cold + warm]
    assert images == [int(cell == "plot") for cell, _ in TEXTBOOK] * 2
    assert warm[5].stdout == "1 3 iris\n"
    assert kernel.value("int(model.predict(X[:1])[0]), df.shape") == "(0, (150, 5))"
    # a change to the restored figure is seen by the cell reading it
    kernel.run("ax.plot([0, 1])", "more")
    again = kernel.run(TEXTBOOK[5][1], "read figure")
    assert not again.restored and again.stdout == "1 4 iris\n"
