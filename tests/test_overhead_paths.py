"""The per-cell fast paths (issue 14): each shortcut must see what the slow path saw.

Speed itself is shown by ``benchmarks/run.py``, never timed here; these tests
pin the cases where a shortcut could skip something that matters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pandas as pd

from incrcell.analysis import expand_through_callables

from kernel import Kernel

_NOTEBOOK = """
import numpy as np
import pandas as pd
level = 3
x, s, a = 1, "a", np.zeros(2)
df = pd.DataFrame({"a": [1]})
def helper(self):
    return level
"""


def _notebook() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(_NOTEBOOK, namespace)
    return namespace


def _reads(namespace: dict[str, Any], name: str) -> frozenset[str]:
    return expand_through_callables([name], namespace).reads


def test_reads_through_a_method_patched_onto_a_library_class() -> None:
    """A library class is walked once and then passed over while unchanged; a notebook
    function added, replaced or removed later is seen (the class is walked again)."""
    namespace = _notebook()
    helper = namespace["helper"]
    assert _reads(namespace, "df") == frozenset()
    original = pd.DataFrame.head
    try:
        pd.DataFrame.incrcell_helper = helper  # added
        assert _reads(namespace, "df") == {"level"}
        pd.DataFrame.incrcell_helper = property(helper)  # replaced, as a property
        assert _reads(namespace, "df") == {"level"}
        del pd.DataFrame.incrcell_helper
        assert _reads(namespace, "df") == frozenset()
        pd.DataFrame.head = helper  # an existing method replaced: as many members as before
        assert _reads(namespace, "df") == {"level"}
    finally:
        pd.DataFrame.head = original
        if "incrcell_helper" in vars(pd.DataFrame):
            del pd.DataFrame.incrcell_helper
    assert _reads(namespace, "df") == frozenset()


def _library_wraps(function: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator's wrapper made by library code (this module's, not the notebook's)."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        return function(*args)

    return wrapper


def test_a_library_wrapper_of_a_notebook_function_is_followed() -> None:
    """``functools.wraps`` leaves ``__wrapped__``: a library's wrapper of a notebook function,
    put on a library class, leads to the notebook's code."""
    namespace = _notebook()
    try:
        pd.DataFrame.incrcell_wrapped = _library_wraps(namespace["helper"])
        assert _reads(namespace, "df") == {"level"}
    finally:
        del pd.DataFrame.incrcell_wrapped


def test_builtin_and_extension_values_reach_no_code() -> None:
    namespace = _notebook()
    for name in ("x", "s", "a"):
        assert _reads(namespace, name) == frozenset()


# -- the interpreter state a cell starts from: the last cell's, while nothing ran since ------


def _silently(kernel: Kernel, code: str) -> None:
    """Run ``code`` as a frontend's silent execution (not a cell: user code all the same)."""
    msg_id = kernel.kc.execute(code, silent=True, store_history=False)
    reply = kernel.kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok"


def _switch(kernel: Kernel, comm_id: str, enabled: bool) -> None:
    """The sidebar's caching switch (a comm message: incrcell's own, not user code)."""
    msg_id = kernel.comm_send(comm_id, {"protocol": 1, "type": "enable", "enabled": enabled})
    kernel.comm_wait(
        lambda m: m["msg_type"] == "comm_msg" and m["parent_header"].get("msg_id") == msg_id
    )


def test_state_changed_between_cells_is_not_taken_for_the_next_cells_doing(kernel: Kernel):
    """The state a cell leaves stands for the next cell's state before it only while no code
    runs between them: a silent execution, or a cell run while caching was switched off,
    changes the environment; the next cell did not, and must not replay it when restored."""
    cells = [
        ("load", "%load_ext incrcell"),
        ("a", "import os\nx = 1"),
        ("b", "y = x + 1"),
        ("c", "z = y + 1"),
    ]
    for cell_id, source in cells[:2]:
        kernel.run(source, cell_id)
    _silently(kernel, "import os; os.environ['INCRCELL_T_MODE'] = 'fast'")
    assert not kernel.run(cells[2][1], "b").restored
    comm_id = kernel.comm_open("incrcell")
    _switch(kernel, comm_id, False)
    kernel.run("os.environ['INCRCELL_T_LEVEL'] = '5'", "set")  # caching off: no plan
    _switch(kernel, comm_id, True)
    assert not kernel.run(cells[3][1], "c").restored
    kernel.restart()
    runs = kernel.run_all(cells)
    assert [r.restored for r in runs] == [False, True, True, True]
    assert kernel.value("(x, y, z)") == "(1, 2, 3)"
    # as a plain run of these cells leaves it: neither variable set
    assert kernel.value("os.environ.get('INCRCELL_T_MODE')") == "None"
    assert kernel.value("os.environ.get('INCRCELL_T_LEVEL')") == "None"
