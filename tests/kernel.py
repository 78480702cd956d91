"""Real IPython kernels for the tests, started through jupyter_client.

nbclient does not send JupyterLab's cell ids, so :class:`Kernel` sends its
own ``execute_request`` messages with ``metadata={"cellId": ...}``, exactly as
JupyterLab does, and collects the iopub messages each one produced.

nbformat and nbclient are imported by :func:`run_notebook` only: importing them
imports jsonschema, whose IRI format checker builds its grammars at import (about 5 s
of CPU here), and every process that imports this module for :class:`Kernel` alone
(the differential tests' worker processes) would pay it.
"""

from __future__ import annotations

import os
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_client.manager import KernelManager

if TYPE_CHECKING:
    import nbformat

TIMEOUT = 120
#: The first cell of a notebook that uses incrcell.
LOAD = ("load", "%load_ext incrcell")


@dataclass
class Execution:
    """What one execute request produced."""

    status: str
    execution_count: int | None
    outputs: list[dict[str, Any]] = field(default_factory=list)  # nbformat-style outputs
    error: dict[str, Any] | None = None

    @property
    def markers(self) -> list[dict[str, Any]]:
        return [o for o in self.outputs if o.get("metadata", {}).get("incrcell")]

    @property
    def restored(self) -> bool:
        return bool(self.markers)

    @property
    def visible(self) -> list[dict[str, Any]]:
        """The outputs a plain run would have produced (incrcell's marker removed)."""
        return [o for o in self.outputs if not o.get("metadata", {}).get("incrcell")]

    @property
    def stdout(self) -> str:
        return "".join(
            o["text"]
            for o in self.outputs
            if o["output_type"] == "stream" and o["name"] == "stdout"
        )

    @property
    def result(self) -> str | None:
        for o in self.outputs:
            if o["output_type"] == "execute_result":
                return o["data"].get("text/plain")
        return None


def ok(executions: list[Execution]) -> list[Execution]:
    """``executions``, after checking that none raised."""
    assert all(e.status == "ok" for e in executions), [e.error for e in executions]
    return executions


def states(executions: list[Execution]) -> list[str]:
    """ "restored" or "ran" per execution, from incrcell's marker."""
    return ["restored" if e.restored else "ran" for e in executions]


def incrcell_lines(executions: list[Execution]) -> list[str]:
    """The lines incrcell said on stderr (its one-line warnings) during ``executions``."""
    return [
        line
        for e in executions
        for o in e.outputs
        if o.get("name") == "stderr"
        for line in o["text"].splitlines()
        if line.startswith("incrcell:")
    ]


def normalise_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs without incrcell's marker, with adjacent stream chunks merged (as Jupyter shows them)."""
    merged: list[dict[str, Any]] = []
    for o in outputs:
        if o.get("metadata", {}).get("incrcell"):
            continue
        o = {k: v for k, v in o.items() if k not in ("execution_count", "transient")}
        if (
            o["output_type"] == "stream"
            and merged
            and merged[-1]["output_type"] == "stream"
            and merged[-1]["name"] == o["name"]
        ):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + o["text"]}
        else:
            merged.append(o)
    return merged


class Kernel:
    """One running IPython kernel (ipykernel), restartable."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env={**os.environ, **env})
        self._connect()

    def _connect(self) -> None:
        self.comm_inbox: list[dict[str, Any]] = []  # comm messages seen on iopub, not yet taken
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=TIMEOUT)

    def restart(self) -> None:
        """Restart as JupyterLab does: the kernel is asked to shut down, and its exit waits for
        the writes incrcell does in the background (killed at once, it would lose them, and
        their cells would run again: see test_kernel's test of a killed kernel)."""
        self.kc.stop_channels()
        self.km.restart_kernel(now=False)
        self._connect()

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def send(self, code: str, cell_id: str | None = None) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        metadata = {"cellId": cell_id} if cell_id else {}
        msg = self.kc.session.msg("execute_request", content, metadata=metadata)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def collect(self, msg_id: str, timeout: float = TIMEOUT) -> Execution:
        outputs: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                raise TimeoutError(f"no reply to {msg_id} within {timeout} s") from None
            self._keep_comm(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind == "stream":
                outputs.append(
                    {"output_type": "stream", "name": content["name"], "text": content["text"]}
                )
            elif kind in ("display_data", "execute_result", "error"):
                output = {"output_type": kind, **content}
                outputs.append(output)
            elif kind == "clear_output":
                outputs.append({"output_type": "clear_output", "wait": content["wait"]})
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        content = reply["content"]
        error = content if content["status"] == "error" else None  # ename, evalue, traceback
        return Execution(content["status"], content.get("execution_count"), outputs, error)

    def run(self, code: str, cell_id: str | None = None, timeout: float = TIMEOUT) -> Execution:
        return self.collect(self.send(code, cell_id), timeout)

    def run_all(self, cells: list[tuple[str, str]]) -> list[Execution]:
        """Run ``(cell_id, source)`` pairs in order, like JupyterLab's Run All."""
        return [self.run(source, cell_id) for cell_id, source in cells]

    # -- comms, driven as a frontend drives them -------------------------------------
    def _keep_comm(self, msg: dict[str, Any]) -> None:
        if msg["msg_type"] in ("comm_open", "comm_msg", "comm_close"):
            self.comm_inbox.append(msg)

    def comm_open(self, target: str, data: dict[str, Any] | None = None) -> str:
        """Open a comm to ``target`` in the kernel; returns its comm id."""
        comm_id = uuid.uuid4().hex
        self.kc.shell_channel.send(
            self.kc.session.msg(
                "comm_open", {"comm_id": comm_id, "target_name": target, "data": data or {}}
            )
        )
        return comm_id

    def comm_send(self, comm_id: str, data: Any) -> str:
        """Send ``data`` on a comm; returns the message id its replies have as parent."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def comm_wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Take the first comm message (comm_open/msg/close, from iopub) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for index, msg in enumerate(self.comm_inbox):
                if predicate(msg):
                    return self.comm_inbox.pop(index)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise queue.Empty
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(f"no such comm message within {timeout} s") from None
            self._keep_comm(msg)

    def value(self, expression: str) -> str:
        """``repr`` of an expression evaluated in the kernel, without touching history."""
        msg_id = self.kc.execute("", silent=True, user_expressions={"v": expression})
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        result = reply["content"]["user_expressions"]["v"]
        if result["status"] != "ok":
            raise AssertionError(
                f"{expression!r} failed: {result.get('ename')}: {result.get('evalue')}"
            )
        return result["data"]["text/plain"]


def run_notebook(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute a notebook file with nbclient in a fresh kernel; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        NotebookClient(
            nb,
            timeout=TIMEOUT,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb
