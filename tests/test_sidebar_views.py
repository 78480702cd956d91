"""The sidebar's Variables and Cache views, and the panel in Notebook 7 and a dark theme.

- in-process: what ``incrcell/sidebar_views.py`` says about a namespace's values;
- a real kernel: the ``request_variables``, ``request_cache`` and ``evict``
  messages of labextension/PROTOCOL.md ("Views"), with the values a plain run
  gives after an evicted cell runs again;
- browsers (one server and one page per app): the Graph, Variables and Cache
  tabs of a 40-cell notebook in JupyterLab (with JupyterLab Dark, whose text
  contrast is computed in the page), and Notebook 7 (the toolbar icon opens
  the panel; badges and an action work there too).  The README's screenshots
  are taken here, at a 2x device scale factor (``INCRCELL_SCREENSHOTS=docs``
  writes them to docs/, else to test-artifacts/).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from incrcell.sidebar_views import is_key, variables

from kernel import LOAD, Kernel

# -- in-process: what a variable is said to be -------------------------------------------


class _Broken:
    def __sizeof__(self) -> int:
        raise RuntimeError("no size for you")

    def __len__(self) -> int:
        raise RuntimeError("no length either")


def test_variables_describe_values_and_never_break_on_them() -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    namespace: dict[str, Any] = {
        "arr": np.zeros((3, 4)),
        "df": pd.DataFrame({"a": [1, 2, 3], "b": [1.0, 2.0, 3.0]}),
        "items": [1, 2, 3],
        "name": "hello",
        "broken": _Broken(),
        "np": np,  # a module: not a variable
        "_private": 1,
        "hidden": 2,  # IPython's own (user_ns_hidden)
    }
    found = {v["name"]: v for v in variables(namespace, {"hidden"})}
    assert list(found) == ["arr", "broken", "df", "items", "name"]
    assert found["arr"] == {"name": "arr", "type": "ndarray", "summary": "3 x 4", "size": 96}
    assert found["df"]["type"] == "DataFrame" and found["df"]["summary"] == "3 x 2"
    assert found["df"]["size"] == int(namespace["df"].memory_usage(deep=False).sum())
    assert found["items"]["summary"] == "3 items"
    assert found["items"]["size"] == sys.getsizeof(namespace["items"])
    assert found["name"]["summary"] == "5 characters"
    assert found["broken"] == {"name": "broken", "type": "_Broken", "summary": "", "size": None}


def test_only_cache_keys_can_be_evicted() -> None:
    assert is_key("0123456789abcdef0123456789abcdef")
    assert not is_key("../../etc/passwd") and not is_key("ABCDEF0123") and not is_key("")


# -- a real kernel: the views' messages ----------------------------------------------------

CELLS = [
    LOAD,
    ("data", "import numpy as np\ndata = np.arange(1000.0)"),
    ("scale", "scale = 2"),
    ("feat", "feat = data * scale"),
    ("total", "total = float(feat.sum())\ntotal"),
]


class Sidebar:
    """One frontend on one ``incrcell`` comm (as tests/test_comm.py's, for these messages)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.comm_id = kernel.comm_open("incrcell")

    def request(self, answer: str, **data: Any) -> dict[str, Any]:
        msg_id = self.kernel.comm_send(self.comm_id, {"protocol": 1, **data})
        msg = self.kernel.comm_wait(
            lambda m: (
                m["msg_type"] == "comm_msg"
                and m["content"]["comm_id"] == self.comm_id
                and m["parent_header"].get("msg_id") == msg_id
                and m["content"]["data"].get("type") in (answer, "error")
            )
        )
        return msg["content"]["data"]


def test_variables_cache_and_evict_in_a_kernel(kernel: Kernel) -> None:
    kernel.run_all(CELLS)
    sidebar = Sidebar(kernel)
    state = sidebar.request("state", type="cells", cells=[{"id": i, "source": s} for i, s in CELLS])
    assert {c["id"]: c["prediction"] for c in state["cells"]}["feat"] == "restore"

    answer = sidebar.request("variables", type="request_variables")
    assert answer["busy"] is False
    found = {v["name"]: v for v in answer["variables"]}
    assert set(found) == {"data", "scale", "feat", "total"}  # not np (a module), not IPython's
    assert found["data"] == {"name": "data", "type": "ndarray", "summary": "1000", "size": 8000}
    assert found["total"]["type"] == "float"

    answer = sidebar.request("cache", type="request_cache")
    assert answer["busy"] is False
    entries = {cell: e for e in answer["entries"] for cell in e["cells"]}
    assert set(entries) == {"data", "scale", "feat", "total"}  # the %load_ext cell has none
    assert entries["data"]["bytes"] > 8000  # the entry and its array
    assert entries["feat"]["origin"] == "local" and entries["feat"]["in_remote"] is False
    assert entries["feat"]["used"] >= entries["feat"]["created"] > 0

    # evict one: a state says it will run; the kernel runs it and the value is a plain run's
    state = sidebar.request("state", type="evict", key=entries["feat"]["key"])
    feat = {c["id"]: c for c in state["cells"]}["feat"]
    assert (feat["prediction"], feat["prediction_code"]) == ("run", "ENTRY_MISSING")
    answer = sidebar.request("cache", type="request_cache")
    assert {cell for e in answer["entries"] for cell in e["cells"]} == {"data", "scale", "total"}
    assert sidebar.request("error", type="evict", key="../x")["message"] == (
        "`key` must be a cache key (lowercase hex)"
    )

    kernel.restart()
    executions = kernel.run_all(CELLS)
    restored = {cell: e.restored for (cell, _), e in zip(CELLS, executions)}
    assert restored == {"load": False, "data": True, "scale": True, "feat": False, "total": True}
    assert kernel.value("total") == repr(float(sum(range(1000)) * 2))
