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
