"""The sidebar's comm (protocol 1, labextension/PROTOCOL.md) in real kernels.

The test plays the frontend: it opens comms and sends ``comm_msg`` on the
shell channel through the kernel client's session, and reads the kernel's
``comm_open`` / ``comm_msg`` / ``comm_close`` on iopub, as JupyterLab does.
"""

from __future__ import annotations

import time
from typing import Any

from kernel import LOAD, Kernel

CELLS = [
    LOAD,
    ("data", "data = list(range(1000))"),
    ("scale", "scale = 2"),
    ("feat", "feat = [x * scale for x in data]"),
    ("other", "labels = ['a', 'b']"),
    ("tail", "total = sum(feat) + len(labels)\ntotal"),
]


def _data(msg: dict[str, Any]) -> dict[str, Any]:
    return msg["content"].get("data") or {}


class Frontend:
    """One sidebar connected to a kernel through one ``incrcell`` comm."""

    def __init__(self, kernel: Kernel, comm_id: str | None = None) -> None:
        self.kernel = kernel
        self.comm_id = comm_id or kernel.comm_open("incrcell")
        self.opened_by = None if comm_id else self.comm_id

    def _ours(self, msg: dict[str, Any], kind: str) -> bool:
        return (
            msg["msg_type"] == "comm_msg"
            and msg["content"]["comm_id"] == self.comm_id
            and _data(msg).get("type") == kind
        )

    def next(self, kind: str, parent: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """The next message of type ``kind`` on this comm (replying to ``parent`` if given)."""
        return _data(
            self.kernel.comm_wait(
                lambda m: (
                    self._ours(m, kind)
                    and (parent is None or m["parent_header"].get("msg_id") == parent)
                ),
                timeout,
            )
        )

    def request(self, **data: Any) -> dict[str, Any]:
        """Send a message; returns the kernel's answer (a state or an error)."""
        msg_id = self.kernel.comm_send(self.comm_id, {"protocol": 1, **data})
        return _data(
            self.kernel.comm_wait(
                lambda m: (
                    m["msg_type"] == "comm_msg"
                    and m["content"]["comm_id"] == self.comm_id
                    and m["parent_header"].get("msg_id") == msg_id
                    and _data(m).get("type") in ("state", "error")
                )
            )
        )

    def cells(self, cells: list[tuple[str, str]]) -> dict[str, Any]:
        return self.request(type="cells", cells=[{"id": i, "source": s} for i, s in cells])

    def pushed(self, predicate, timeout: float = 30) -> dict[str, Any]:
        """Wait for a state pushed by the kernel that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.next("state", timeout=max(deadline - time.monotonic(), 0.01))
            if predicate(state):
                return state


def by_id(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in state["cells"]}


def states(state: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["state"] for c in state["cells"]}


def test_without_the_extension_the_comm_is_closed_and_load_ext_opens_one(kernel: Kernel):
    comm_id = kernel.comm_open("incrcell")
    closed = kernel.comm_wait(lambda m: m["msg_type"] == "comm_close")
    assert closed["content"]["comm_id"] == comm_id

    kernel.run(LOAD[1], LOAD[0])
    opened = kernel.comm_wait(lambda m: m["msg_type"] == "comm_open")
    assert opened["content"]["target_name"] == "incrcell"
    sidebar = Frontend(kernel, opened["content"]["comm_id"])
    assert sidebar.next("hello") == {"type": "hello", "protocol": 1, "version": "0.1.0"}
    state = sidebar.next("state")
    assert state["protocol"] == 1 and state["enabled"] is True
    assert set(state["totals"]) == {
        "restored",
        "ran",
        "uncacheable",
        "error",
        "saved",
        "cache_bytes",
        "cache_cap",
        "cache_entries",
        "own",  # panel: incrcell's own magic cells among the uncacheable
    }

    # a frontend opening its own comm now gets hello and a state too
    other = Frontend(kernel)
    assert other.next("hello")["version"] == "0.1.0"
    assert [c["id"] for c in other.next("state")["cells"]] == ["load"]  # recorded now

    # %unload_ext closes them
    kernel.run("%unload_ext incrcell", "unload")
    gone = {
        kernel.comm_wait(lambda m: m["msg_type"] == "comm_close")["content"]["comm_id"]
        for _ in range(2)
    }
    assert gone == {sidebar.comm_id, other.comm_id}
    late = kernel.comm_open("incrcell")  # and the target is gone
    assert kernel.comm_wait(lambda m: m["msg_type"] == "comm_close")["content"]["comm_id"] == late


def test_states_predictions_and_restart(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    sidebar = Frontend(kernel)
    sidebar.next("hello")
    first = sidebar.cells(CELLS)
    assert first["type"] == "state"
    assert states(first) == {
        "load": "uncacheable",
        "data": "not_run",
        "scale": "not_run",
        "feat": "not_run",
        "other": "not_run",
        "tail": "not_run",
    }
    assert by_id(first)["tail"]["depends_on"] == [
        {"id": "feat", "names": ["feat"]},
        {"id": "other", "names": ["labels"]},
    ]
    assert (
        by_id(first)["data"]["prediction_reason"] == "first run: nothing recorded for this cell yet"
    )
    assert by_id(first)["data"]["prediction_code"] == "FIRST_RUN"
    assert by_id(first)["data"]["code"] == "FIRST_RUN"  # not run: why it would run

    for cell_id, source in CELLS[1:]:
        msg_id = kernel.send(source, cell_id)
        assert sidebar.next("running")["id"] == cell_id
        kernel.collect(msg_id)
    after = sidebar.pushed(lambda s: states(s).get("tail") not in (None, "not_run"))
    assert set(states(after).values()) == {"ran", "uncacheable"}
    assert by_id(after)["tail"]["execution_count"] == 6
    assert by_id(after)["tail"]["label"] == "total = sum(feat) + len(labels)"
    assert {c["prediction"] for c in after["cells"][1:]} == {"restore"}
    assert after["totals"]["ran"] == 5 and after["totals"]["cache_entries"] == 5

    kernel.restart()  # a new kernel, the same cache: the sidebar reconnects after %load_ext
    kernel.run(*LOAD[::-1])
    opened = kernel.comm_wait(lambda m: m["msg_type"] == "comm_open")
    sidebar = Frontend(kernel, opened["content"]["comm_id"])
    edited = [(i, "scale = 3" if i == "scale" else s) for i, s in CELLS]
    state = sidebar.cells(edited)
    cells = by_id(state)
    assert states(state)["data"] == "not_run"
    assert {i: c["prediction"] for i, c in cells.items()} == {
        "load": "run",
        "data": "restore",
        "scale": "run",
        "feat": "run",
        "other": "restore",
        "tail": "run",
    }
    assert cells["scale"]["prediction_reason"] == "source changed"
    assert cells["feat"]["prediction_reason"] == (
        "input `scale` comes from cell 3 `scale = 3`, which will run"
    )
    assert (cells["scale"]["prediction_code"], cells["feat"]["prediction_code"]) == (
        "SOURCE_CHANGED",
        "UPSTREAM_RUNS",
    )

    runs = kernel.run_all(edited[1:])
    assert [r.restored for r in runs] == [True, False, False, True, False]
    state = sidebar.request(type="request_state")
    assert states(state) == {
        "load": "uncacheable",
        "data": "restored",
        "scale": "ran",
        "feat": "ran",
        "other": "restored",
        "tail": "ran",
    }
    assert by_id(state)["feat"]["reason"] == "input `scale` changed"
    assert by_id(state)["feat"]["code"] == "INPUT_CHANGED"
    assert by_id(state)["data"]["code"] == "" and by_id(state)["data"]["reason"] == ""
    assert state["totals"]["restored"] == 2 and state["totals"]["saved"] >= 0
    assert state["stale"] == []

    # editing a cell that ran: it and its dependents are stale, and will run
    state = sidebar.cells([(i, "scale = 4" if i == "scale" else s) for i, s in CELLS])
    assert state["stale"] == ["scale", "feat", "tail"]
    assert by_id(state)["scale"]["reason"] == "source changed since it ran"
    assert by_id(state)["tail"]["reason"] == "cell 4 `feat = [x * scale for x in data]` is stale"
    assert by_id(state)["scale"]["code"] == "SOURCE_CHANGED_SINCE"
    assert by_id(state)["tail"]["code"] == "UPSTREAM_STALE"
    assert by_id(state)["tail"]["prediction"] == "run"
    status = kernel.run("%incrcell status", "status").stdout  # says the same
    assert "3 stale" in status and "source changed since it ran" in status
    assert by_id(state)["feat"]["reason"] in status


def test_invalidate_clear_enable(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    kernel.run_all(CELLS[1:])
    sidebar = Frontend(kernel)
    sidebar.next("state")
    state = sidebar.cells(CELLS)
    assert by_id(state)["feat"]["prediction"] == "restore"

    state = sidebar.request(type="invalidate", id="feat")
    assert by_id(state)["feat"]["prediction"] == "run"
    assert by_id(state)["feat"]["prediction_reason"] == (
        "its cache entry was cleared or could not be read"
    )
    assert by_id(state)["feat"]["prediction_code"] == "ENTRY_MISSING"
    assert by_id(state)["feat"]["state"] == "ran"  # what happened stays true
    assert by_id(state)["tail"]["prediction"] == "run"
    assert by_id(state)["data"]["prediction"] == "restore"
    assert not kernel.run(CELLS[3][1], "feat").restored

    state = sidebar.request(type="clear")
    assert state["totals"]["cache_entries"] == 0
    assert {c["prediction"] for c in state["cells"]} == {"run"}
    assert not kernel.run(CELLS[1][1], "data").restored

    state = sidebar.request(type="enable", enabled=False)
    assert state["enabled"] is False and state["type"] == "state"
    assert "OFF" in kernel.run("%incrcell status").stdout
    state = sidebar.request(type="enable", enabled=True)
    assert state["enabled"] is True


def test_bad_messages_get_one_line_errors(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    sidebar = Frontend(kernel)
    sidebar.next("state")
    for data, words in [
        ({"type": "request_state"}, "unsupported protocol None"),
        ({"protocol": 2, "type": "request_state"}, "unsupported protocol 2"),
        ({"protocol": 1, "type": "frobnicate"}, "unknown message type 'frobnicate'"),
        ({"protocol": 1, "type": ["cells"]}, "unknown message type"),
        ({"protocol": 1, "type": "cells", "cells": "x = 1"}, "`cells` must be a list"),
        ({"protocol": 1, "type": "cells", "cells": [{"id": 3, "source": ""}]}, "`id` must be"),
        ({"protocol": 1, "type": "invalidate"}, "`id` must be a string"),
        ({"protocol": 1, "type": "enable", "enabled": "yes"}, "`enabled` must be true or false"),
        ("not an object", "a message must be a JSON object"),
    ]:
        msg_id = kernel.comm_send(sidebar.comm_id, data)
        error = sidebar.next("error", parent=msg_id)
        assert error["protocol"] == 1 and words in error["message"], (data, error)
        assert "\n" not in error["message"]
    assert kernel.run("x = 1\nx", "x").result == "1"  # the kernel is fine
    assert sidebar.request(type="request_state")["type"] == "state"


def test_two_hundred_cells(kernel: Kernel):
    cells = [LOAD] + [
        (f"c{i}", f"v{i} = {i}" if i == 0 else f"v{i} = v{i - 1} + {i}") for i in range(199)
    ]
    kernel.run_all(cells)
    kernel.restart()
    kernel.run(*LOAD[::-1])
    sidebar = Frontend(kernel)
    sidebar.next("state")
    started = time.perf_counter()
    state = sidebar.cells(cells)
    elapsed = time.perf_counter() - started
    assert [c["prediction"] for c in state["cells"]] == ["run"] + ["restore"] * 199
    started = time.perf_counter()
    state = sidebar.cells(cells[:100] + [("c99", "v99 = 0")] + cells[101:])
    again = time.perf_counter() - started
    assert [c["prediction"] for c in state["cells"]].count("restore") == 99
    print(
        f"\n200-cell `cells` message answered in {elapsed * 1000:.0f} ms "
        f"(after an edit: {again * 1000:.0f} ms)"
    )
