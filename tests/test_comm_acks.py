"""The sidebar's comm in a real kernel: acknowledgements, repeats, Clear cache's report,
and messages that arrive over a kernel subshell (PROTOCOL.md, issue 15 items 1 and 5).

The test plays the frontend as tests/test_comm.py does (``Frontend``).
"""

from __future__ import annotations

from typing import Any

from test_comm import Frontend

from kernel import LOAD, Kernel

CELLS = [LOAD, ("a", "a = 1"), ("b", "b = a + 1"), ("c", "c = b * 2\nc")]
SENDER = "test-frontend"


def _states(state: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["state"] for c in state["cells"]}


def _subshell(kernel: Kernel) -> str:
    """A new subshell of the kernel (as JupyterLab 4.6 makes one for a comm target)."""
    kernel.kc.control_channel.send(kernel.kc.session.msg("create_subshell_request", {}))
    while True:
        reply = kernel.kc.control_channel.get_msg(timeout=30)
        if reply["msg_type"] == "create_subshell_reply":
            return reply["content"]["subshell_id"]


def test_acknowledged_once_and_clear_reports(kernel: Kernel) -> None:
    kernel.run_all(CELLS)
    sidebar = Frontend(kernel)
    sidebar.next("state")
    sidebar.cells(CELLS)

    # clear: acknowledged, with what it removed; the rows keep what the cells did
    state = sidebar.request(type="clear", sender=SENDER, seq=1)
    assert state["type"] == "state" and state["ack"] == 1
    assert state["cleared"]["entries"] == 3 and state["cleared"]["bytes"] > 0
    assert state["totals"]["cache_entries"] == 0
    assert _states(state) == {"load": "uncacheable", "a": "ran", "b": "ran", "c": "ran"}
    assert {c["prediction"] for c in state["cells"][1:]} == {"run"}

    # the same message again (a retry whose first answer was lost): acknowledged with the
    # same answer, not applied again (what was recorded since stays)
    assert not kernel.run(CELLS[1][1], "a").restored
    state = sidebar.request(type="clear", sender=SENDER, seq=1)
    assert state["ack"] == 1 and state["cleared"]["entries"] == 3
    assert state["totals"]["cache_entries"] == 1
    # another sender's seq 1 is another message
    state = sidebar.request(type="clear", sender="another", seq=1)
    assert state["cleared"]["entries"] == 1 and state["totals"]["cache_entries"] == 0

    # an error is acknowledged too; a message without seq is answered without ack
    error = sidebar.request(type="enable", enabled="no", sender=SENDER, seq=2)
    assert error["type"] == "error" and error["ack"] == 2
    assert "ack" not in sidebar.request(type="request_state")


def test_a_comm_opened_over_a_subshell_waits_for_the_running_cell(kernel: Kernel) -> None:
    """A frontend whose comm lives on a kernel subshell (ipykernel runs that comm's messages
    on the subshell's thread): incrcell handles them on the main shell between cells, never
    beside the cell running there, so its answer sees that cell finished."""
    kernel.run(*LOAD[::-1])
    slow = ("slow", "import time\ntime.sleep(1.5)\nslow = 1")
    watcher = Frontend(kernel)
    watcher.next("state")
    watcher.cells([LOAD, slow])
    subshell = _subshell(kernel)
    running = kernel.send(slow[1], slow[0])
    watcher.next("running")  # the cell has started on the main shell
    cells = [{"id": i, "source": source} for i, source in (LOAD, slow)]
    msg = kernel.kc.session.msg(
        "comm_open",
        {
            "comm_id": "over-a-subshell",
            "target_name": "incrcell",
            "data": {"protocol": 1, "type": "cells", "cells": cells},
        },
    )
    msg["header"]["subshell_id"] = subshell
    kernel.kc.shell_channel.send(msg)
    sidebar = Frontend(kernel, "over-a-subshell")
    assert _states(sidebar.next("state"))["slow"] == "ran"
    reply = kernel.kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != running:
        reply = kernel.kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "ok"


def test_cells_run_while_caching_is_off_show_as_ran(kernel: Kernel) -> None:
    """Switched off, cells run (nothing restores, nothing is recorded) and say so; their
    values are a plain run's."""
    kernel.run_all(CELLS)
    sidebar = Frontend(kernel)
    sidebar.next("state")
    sidebar.cells(CELLS)
    assert sidebar.request(type="enable", enabled=False, sender=SENDER, seq=1)["enabled"] is False
    runs = kernel.run_all(CELLS[1:])
    assert not any(run.restored for run in runs)
    assert runs[-1].visible[0]["data"]["text/plain"] == "4"
    state = sidebar.request(type="request_state")
    assert state["enabled"] is False
    off = [c for c in state["cells"] if c["id"] in ("a", "b", "c")]
    assert {(c["state"], c["code"]) for c in off} == {("ran", "CACHING_OFF")}
    assert {c["prediction"] for c in off} == {"restore"}  # the entries are still there
    assert "caching was off" in kernel.run("%incrcell status").stdout
