"""Running one notebook in a real kernel with incrcell, for ``incrcell run``.

The runner knows incrcell only through its documented interfaces, as JupyterLab
with the sidebar does:

- cells run through **nbclient** (so outputs, execution counts and metadata are
  exactly what ``jupyter nbconvert --execute`` writes), each ``execute_request``
  carrying ``metadata={"cellId": cell.id}`` as JupyterLab sends it, so that a
  run and an interactive session share cache entries and lineage;
- ``%load_ext incrcell`` is sent before the first cell when the notebook does not
  load incrcell itself, as a silent execution outside the notebook (never in
  it, and without an execution count, so counts start at 1 as in a plain run);
  restored cells carry no "restored" note unless ``markers`` is asked for
  (``%incrcell config marker=off``, sent the same way);
- per-cell states, reasons and timings come from the sidebar's comm protocol
  (labextension/PROTOCOL.md), read by a second client of the kernel, a
  sidebar without a panel: it opens a comm to target ``incrcell`` with the
  notebook's code cells and reads ``state`` messages.  ``--plan`` is that
  protocol's prediction in a fresh kernel where no cell ran.

Forcing a cell is the documented ``%%incrcell rerun`` directive, put in front
of the source *sent* to the kernel (the notebook keeps its source); the cells
depending on it, from the protocol's ``depends_on``, are forced too.

Fails safe: a cell error is the notebook's (reported, exit 1); a state the
kernel does not give (incrcell not loaded yet, an old kernel) leaves the cell
described by what the runner saw itself (it ran, or raised).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

TARGET = "incrcell"
PROTOCOL = 1
#: How a cell is forced (incrcell's ``%%incrcell rerun`` directive, README).
RERUN = "%%incrcell rerun\n"
#: A cell starting with an ``%%incrcell`` directive: forcing replaces it
#: (``nocache`` cells always run and are left as they are).
_DIRECTIVE = re.compile(r"\A[ \t]*%%incrcell[ \t]+(\S+)[^\n]*(?:\n|\Z)")
#: A notebook that loads incrcell itself (then the runner does not).
_LOADS = re.compile(r"^[ \t]*%(?:re)?load_ext[ \t]+incrcell[ \t]*$", re.MULTILINE)
_TIMEOUT_ERROR = "CellTimeoutError"
#: Seconds to wait for the kernel's answer on the comm.
ANSWER_TIMEOUT = 120.0
#: Seconds a kernel gets to exit once asked to (jupyter_client's default is 5).
SHUTDOWN_WAIT = 120.0

# Cell states (the protocol's), and the runner's own for cells that did not execute.
RESTORED, RAN, UNCACHEABLE, ERROR, NOT_RUN = "restored", "ran", "uncacheable", "error", "not_run"
EXECUTED = (RESTORED, RAN, UNCACHEABLE, ERROR)


class RunError(Exception):
    """The notebook could not be run at all (kernel, incrcell): one line, exit 2."""


@dataclass
class Cell:
    """A code cell of the notebook as run: its number among the code cells (1-based,
    as reasons name cells: ``cell 3``), its id, and the source sent to the kernel."""

    index: int
    position: int  # in nb.cells
    id: str
    label: str
    source: str
    runs: bool  # nbclient executes it (not empty, not tagged skip-execution)
    done: bool = False  # executed in this run


@dataclass
class CellResult:
    index: int
    id: str
    label: str
    state: str  # restored, ran, uncacheable, error; not_run when the run stopped before it
    reason: str
    seconds: float = 0.0
    saved_seconds: float = 0.0
    code: str = ""  # the reason's code (incrcell/reasons.py), as the kernel sent it

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "code": self.code,
            "seconds": round(self.seconds, 6),
            "saved_seconds": round(self.saved_seconds, 6),
            "label": self.label,
        }


@dataclass
class Failure:
    """A cell that raised (or ran out of time)."""

    index: int
    id: str
    label: str
    ename: str
    evalue: str
    traceback: list[str]
    stopped: bool  # the run stopped there

    @property
    def timed_out(self) -> bool:
        return self.ename == _TIMEOUT_ERROR

    def headline(self) -> str:
        what = (
            self.evalue
            if self.timed_out
            else f"raised {self.ename}: {self.evalue}"
            if self.evalue
            else f"raised {self.ename}"
        )
        return f"cell {self.index} `{self.label[:60]}` {what}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "ename": self.ename,
            "evalue": self.evalue,
            "traceback": self.traceback,
        }


@dataclass
class Prediction:
    index: int
    id: str
    label: str
    prediction: str  # restore, run, unknown
    reason: str
    code: str = ""  # the reason's code (incrcell/reasons.py), as the kernel sent it

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "prediction": self.prediction,
            "reason": self.reason,
            "code": self.code,
            "label": self.label,
        }


@dataclass
class Options:
    kernel: str
    timeout: float | None = None
    allow_errors: bool = False
    no_cache: bool = False
    markers: bool = False
    force: list[str] = field(default_factory=list)  # cell ids to force (before dependents)


class Observer:
    """What a display is told while a notebook runs (this one says nothing)."""

    live = False  # wants states pushed while cells run

    def started(self, cell: Cell) -> None:
        """The cell is sent to the kernel."""

    def finished(self, cell: Cell, spent: float, failed: bool, reported: bool) -> None:
        """``reported``: the kernel's states will describe this cell."""

    def states(self, cells: list[dict[str, Any]]) -> None:
        """A ``state`` message arrived: its CellStates."""


def label(source: str) -> str:
    """The first non-empty line, after an ``%%incrcell`` directive (as the protocol's labels)."""
    match = _DIRECTIVE.match(source)
    body = source[match.end() :] if match else source
    return next((line.strip() for line in body.splitlines() if line.strip()), "")[:80]


def ensure_ids(nb: nbformat.NotebookNode, name: str) -> None:
    """Give every cell an id, as JupyterLab does when it saves an nbformat 4.4 notebook.

    Missing or duplicate ids get one derived from the notebook's file name and
    the cell's position: the same on every run, so a notebook written elsewhere
    (``-o``) keeps its lineage.  The notebook becomes nbformat 4.5 if it was older.
    """
    seen: set[str] = set()
    for position, cell in enumerate(nb.cells):
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not cell_id or cell_id in seen:
            digest = hashlib.sha1(f"{name}\0{position}".encode()).hexdigest()
            cell_id = f"incrcell-{digest[:12]}"
            while cell_id in seen:
                cell_id = f"incrcell-{uuid.uuid4().hex[:12]}"
            cell["id"] = cell_id
        seen.add(cell_id)
    if nb.nbformat == 4 and nb.nbformat_minor < 5:
        nb.nbformat_minor = 5


def code_cells(nb: nbformat.NotebookNode) -> list[Cell]:
    cells: list[Cell] = []
    for position, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        runs = bool(cell.source.strip()) and "skip-execution" not in cell.metadata.get("tags", [])
        cells.append(Cell(len(cells) + 1, position, cell.id, label(cell.source), cell.source, runs))
    return cells


def loading_cell(cells: list[Cell]) -> Cell | None:
    """The notebook's own ``%load_ext incrcell`` cell, if it has one."""
    return next((c for c in cells if c.runs and _LOADS.search(c.source)), None)


def forced_source(source: str) -> str:
    """``source`` with ``%%incrcell rerun`` first (a ``nocache`` cell runs anyway)."""
    match = _DIRECTIVE.match(source)
    if match is None:
        return RERUN + source
    if match.group(1) == "nocache":
        return source
    return RERUN + source[match.end() :]


def dependents(seeds: set[str], state: dict[str, Any]) -> set[str]:
    """``seeds`` and every cell that reaches one of them through ``depends_on``."""
    readers: dict[str, set[str]] = {}
    for cell in state.get("cells", []):
        for upstream in cell.get("depends_on", []):
            readers.setdefault(upstream.get("id"), set()).add(cell.get("id"))
    found, todo = set(seeds), list(seeds)
    while todo:
        for reader in readers.get(todo.pop(), ()):
            if reader not in found:
                found.add(reader)
                todo.append(reader)
    return found


# -- the kernel clients ------------------------------------------------------------------
class _LabKernelClient(AsyncKernelClient):
    """A kernel client whose execute requests carry the cell id, as JupyterLab's do."""

    cell_id: str | None = None

    def execute(self, code: str, *args: Any, **kwargs: Any) -> Any:
        if self.cell_id is None:
            return super().execute(code, *args, **kwargs)
        content = {
            "code": code,
            "silent": False,
            "store_history": kwargs.get("store_history", True),
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": kwargs.get("stop_on_error", True),
        }
        msg = self.session.msg("execute_request", content, metadata={"cellId": self.cell_id})
        self.shell_channel.send(msg)
        return msg["header"]["msg_id"]


class _Client(NotebookClient):
    """nbclient, with cell ids sent, and quiet about the sidebar's comm."""

    def __init__(self, nb: nbformat.NotebookNode, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        # the kernel opens a comm to the sidebar when incrcell loads: no widget to track
        self.comm_open_handlers[TARGET] = lambda msg: None

    def create_kernel_manager(self) -> Any:
        km = super().create_kernel_manager()
        km.client_factory = _LabKernelClient
        # a kernel asked to shut down may still be finishing its uploads to a remote
        # cache: give it that time before it is killed (it exits as soon as it is done)
        km.shutdown_wait_time = SHUTDOWN_WAIT
        return km


def _lab(client: _Client) -> _LabKernelClient:
    """nbclient's kernel client, which :meth:`_Client.create_kernel_manager` made ours."""
    assert isinstance(client.kc, _LabKernelClient)
    return client.kc


class Sidebar:
    """The runner's sidebar: a second client of the kernel, speaking the comm protocol."""

    def __init__(self, kc: Any, on_state: Callable[[list[dict[str, Any]]], None]) -> None:
        self.kc = kc
        self.on_state = on_state
        self.comm_id: str | None = None
        self.state: dict[str, Any] | None = None  # the last state received
        self.errors: list[str] = []  # `error` messages received
        self._waiting: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        # hidden execution -> (its stream outputs, set when the kernel went idle after it)
        self._hidden: dict[str, tuple[list[tuple[str, str]], asyncio.Event]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, km: Any, on_state: Callable[[list[dict[str, Any]]], None]) -> Sidebar:
        kc = km.client()
        # a session of its own: a cloned session numbers its messages from 0 again, and
        # two clients sending the same msg_id confuse the kernel and nbclient
        kc.session.session = uuid.uuid4().hex
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        sidebar = cls(kc, on_state)
        sidebar._reader = asyncio.ensure_future(sidebar._read())
        return sidebar

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        self.kc.stop_channels()

    # -- messages in -------------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            msg = await self.kc.get_iopub_msg()
            try:
                self._dispatch(msg)
            except Exception as exc:  # a malformed message: say it, keep reading
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        parent = msg.get("parent_header", {}).get("msg_id", "")
        if parent in self._hidden:
            streams, idle = self._hidden[parent]
            if kind == "stream":
                streams.append((content.get("name", ""), content.get("text", "")))
            elif kind == "status" and content.get("execution_state") == "idle":
                idle.set()
            return
        if content.get("comm_id") != self.comm_id or self.comm_id is None:
            return
        if kind == "comm_close":
            self.comm_id = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_result(None)
            return
        data = content.get("data") or {}
        if kind not in ("comm_msg", "comm_open") or data.get("protocol") != PROTOCOL:
            return
        if data.get("type") == "state":
            self.state = data
            self.on_state(data.get("cells", []))
        elif data.get("type") == "error":
            self.errors.append(str(data.get("message", "")))
        else:
            return
        waiting = self._waiting.get(parent)
        if waiting is not None and not waiting.done():
            waiting.set_result(data)

    async def _answer(self, msg_id: str, timeout: float) -> dict[str, Any] | None:
        future = self._waiting[msg_id]
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiting.pop(msg_id, None)

    # -- messages out ------------------------------------------------------------------
    def _send(self, kind: str, content: dict[str, Any]) -> str:
        msg = self.kc.session.msg(kind, content)
        self._waiting[msg["header"]["msg_id"]] = asyncio.get_running_loop().create_future()
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    async def execute_hidden(self, code: str) -> tuple[bool, str, list[tuple[str, str]]]:
        """Run ``code`` silently (no history, no execution count); (ok, error, streams)."""
        msg_id = self.kc.execute(code, silent=True, store_history=False)
        streams, idle = self._hidden[msg_id] = ([], asyncio.Event())
        try:
            while True:
                reply = await self.kc.get_shell_msg(timeout=ANSWER_TIMEOUT)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            # its outputs are on iopub before the kernel says it is idle again
            await asyncio.wait_for(idle.wait(), ANSWER_TIMEOUT)
        finally:
            del self._hidden[msg_id]
        content = reply["content"]
        error = f"{content.get('ename')}: {content.get('evalue')}"
        return content["status"] == "ok", error, streams

    async def open(self, cells: list[Cell]) -> dict[str, Any] | None:
        """Open the comm with the notebook's cells; the first state, or None if incrcell
        is not loaded (the kernel closes the comm)."""
        self.comm_id = uuid.uuid4().hex
        msg_id = self._send(
            "comm_open",
            {"comm_id": self.comm_id, "target_name": TARGET, "data": _cells_message(cells)},
        )
        return await self._answer(msg_id, ANSWER_TIMEOUT)

    async def request(self, message: dict[str, Any], timeout: float = ANSWER_TIMEOUT) -> Any:
        """Send one protocol message; the kernel's answer (a state or an error), or None."""
        if self.comm_id is None:
            return None
        msg_id = self._send(
            "comm_msg", {"comm_id": self.comm_id, "data": {"protocol": PROTOCOL, **message}}
        )
        return await self._answer(msg_id, timeout)


def _cells_message(cells: list[Cell]) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL,
        "type": "cells",
        "cells": [{"id": c.id, "source": c.source} for c in cells],
    }


# -- one notebook ------------------------------------------------------------------------
@dataclass
class Outcome:
    """What running (or planning) one notebook gave."""

    cells: list[CellResult] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # cells that raised, in order
    notes: list[str] = field(default_factory=list)  # one-line warnings (incrcell's, the kernel's)


class NotebookRun:
    """One notebook in one fresh kernel: :meth:`plan` or :meth:`execute`."""

    def __init__(
        self, nb: nbformat.NotebookNode, path: Path, options: Options, observer: Observer
    ) -> None:
        self.nb = nb
        self.path = path
        self.options = options
        self.observer = observer
        self.cells = code_cells(nb)
        self.loader = loading_cell(self.cells)  # the notebook's own %load_ext cell
        self.by_id = {c.id: c for c in self.cells}
        self.outcome = Outcome()
        self.sidebar: Sidebar | None = None
        self.forced_seeds = {cell_id for cell_id in options.force if cell_id in self.by_id}
        self.forced: set[str] = set()
        self._errors: dict[int, dict[str, Any]] = {}  # position -> execute reply content
        self.dead = False  # the kernel died
        self.interrupted = False  # Ctrl-C: the run is cancelled
        self.connected = False  # the comm is open: the kernel's states describe the cells

    def _client(self) -> _Client:
        timeout = self.options.timeout
        return _Client(
            self.nb,
            kernel_name=self.options.kernel,
            timeout_func=(lambda cell: timeout) if timeout else None,
            interrupt_on_timeout=True,
            error_on_timeout={
                "ename": _TIMEOUT_ERROR,
                "evalue": f"ran longer than {timeout or 0:g} s (--timeout) and was interrupted",
                "traceback": [],
            },
            allow_errors=self.options.allow_errors,
            resources={"metadata": {"path": str(self.path.parent)}},
            on_cell_error=self._on_cell_error,
            log=_QUIET,
        )

    def _on_cell_error(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self._errors[cell_index] = execute_reply.get("content", {})

    @asynccontextmanager
    async def _kernel(self, client: _Client) -> AsyncIterator[None]:
        """A fresh kernel for the notebook, shut down on the way out.

        A kernel that cannot start is a RunError.  Ctrl-C cancels the run (and
        the kernel is shut down): nbclient's own handler would only kill the kernel,
        and the run would go on to report a dead kernel as the notebook's error.
        """
        entered = False
        try:
            async with client.async_setup_kernel():
                entered = True
                task = asyncio.current_task()
                if task is not None:
                    try:
                        asyncio.get_running_loop().add_signal_handler(
                            signal.SIGINT, self._interrupt, client, task
                        )
                    except (RuntimeError, NotImplementedError):  # not the main thread
                        pass
                yield
                # nbclient reads its iopub only while a cell runs: the sidebar's messages
                # since are unread there, and a kernel asked to shut down waits (until
                # SIGTERM) to deliver them; nbclient stops its channels only afterwards
                _lab(client).stop_channels()
        except Exception as exc:
            if entered:
                raise
            raise RunError(
                f"could not start kernel {self.options.kernel!r}: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None

    def _interrupt(self, client: _Client, task: asyncio.Task[Any]) -> None:
        self.interrupted = True
        client.shutdown_kernel = "immediate"
        task.cancel()

    async def _load(self) -> None:
        """Load incrcell in the kernel, outside the notebook, and set its marker."""
        assert self.sidebar is not None
        ok, error, streams = await self.sidebar.execute_hidden("%load_ext incrcell")
        if ok:  # %load_ext only prints why it did not load: the next magic tells
            said = " ".join(" ".join(text.split()) for _, text in streams if text.strip())
            ok, error, _ = await self.sidebar.execute_hidden(self._marker())
            error = said or error
        if not ok:
            raise RunError(f"kernel {self.options.kernel!r} cannot load incrcell: {error}")
        self._relay(streams)

    def _marker(self) -> str:
        """The magic that shows or hides the "restored" note (hidden in written notebooks)."""
        return f"%incrcell config marker={'on' if self.options.markers else 'off'}"

    def _relay(self, streams: list[tuple[str, str]]) -> None:
        """incrcell's one-line warnings from a hidden execution (its stdout is config text)."""
        for name, text in streams:
            if name == "stderr":
                self.outcome.notes += [line for line in text.splitlines() if line.strip()]

    async def _connect(self) -> dict[str, Any] | None:
        """Open the comm; apply --force (needs the graph of the first state)."""
        assert self.sidebar is not None
        state = await self.sidebar.open(self.cells)
        if state is None or state.get("type") != "state":
            return None
        self.forced = dependents(self.forced_seeds, state) if self.forced_seeds else set()
        if self.forced:
            for cell in self.cells:
                if cell.id in self.forced and not cell.done:
                    cell.source = forced_source(cell.source)
            state = await self.sidebar.request(_cells_message(self.cells))
        return state if state and state.get("type") == "state" else None

    # -- --plan ------------------------------------------------------------------------
    async def plan(self) -> Outcome:
        client = self._client()
        async with self._kernel(client):
            self.sidebar = await Sidebar.connect(client.km, lambda cells: None)
            try:
                await self._load()
                state = await self._connect()
            finally:
                await self.sidebar.close()
        predicted = {c["id"]: c for c in (state or {}).get("cells", [])}
        before_load = self.loader.index if self.loader else 0
        for cell in self.cells:
            if not cell.runs:
                continue
            got = predicted.get(cell.id, {})
            prediction, reason = got.get("prediction", "unknown"), got.get("prediction_reason", "")
            if cell.index < before_load:
                prediction = "run"
                reason = f"runs before incrcell is loaded (cell {before_load} loads it)"
            elif state is None:
                reason = "the kernel gave no prediction"
            code = got.get("prediction_code", "") if reason == got.get("prediction_reason") else ""
            self.outcome.predictions.append(
                Prediction(
                    cell.index, cell.id, got.get("label") or cell.label, prediction, reason, code
                )
            )
        return self.outcome

    # -- a run -------------------------------------------------------------------------
    async def execute(self) -> Outcome:
        client = self._client()
        measured: dict[str, tuple[float, bool]] = {}  # id -> (seconds, raised)
        async with self._kernel(client):
            info = await _lab(client).kernel_info(reply=True, timeout=60)
            language = info["content"].get("language_info")
            if language:
                self.nb.metadata["language_info"] = language
            self.sidebar = await Sidebar.connect(client.km, self.observer.states)
            try:
                if self.loader is None and not self.options.no_cache:
                    await self._load()
                    self.connected = await self._open_early()
                for cell in self.cells:
                    if not cell.runs:
                        continue
                    if await self._run_cell(client, cell, measured):
                        break
                    if cell is self.loader and not self.connected:
                        self.connected = await self._loaded_by_notebook()
                final = await self._final_state()
            finally:
                await self.sidebar.close()
            client.set_widgets_metadata()
        self._results(final, measured)
        return self.outcome

    async def _open_early(self) -> bool:
        """Open the comm before the cells run when something needs it then: a live
        display (states pushed after cells), --force (the graph), --no-cache (`enable`)."""
        if not (self.observer.live or self.forced_seeds or self.options.no_cache):
            return False
        state = await self._connect()
        if state is not None and self.options.no_cache:
            await self.sidebar.request({"type": "enable", "enabled": False})  # type: ignore[union-attr]
        return state is not None

    async def _loaded_by_notebook(self) -> bool:
        """After the notebook's own ``%load_ext incrcell`` cell: markers off, the comm."""
        assert self.sidebar is not None
        if not self.options.markers and not self.options.no_cache:
            ok, _, streams = await self.sidebar.execute_hidden(self._marker())
            if ok:
                self._relay(streams)
        return await self._open_early()

    async def _run_cell(
        self, client: _Client, cell: Cell, measured: dict[str, tuple[float, bool]]
    ) -> bool:
        """Execute one cell; True when the run stops here."""
        node = self.nb.cells[cell.position]
        original = node.source
        node.source = cell.source  # what the kernel runs (forced: with %%incrcell rerun)
        _lab(client).cell_id = cell.id
        self.observer.started(cell)
        started = time.monotonic()
        stopped = False
        try:
            await client.async_execute_cell(
                node, cell.position, execution_count=client.code_cells_executed + 1
            )
        except CellExecutionError:
            stopped = True
        except DeadKernelError:
            if self.interrupted:  # nbclient says so of any cancelled cell
                raise asyncio.CancelledError() from None
            stopped = self.dead = True
            self._errors[cell.position] = {
                "ename": "DeadKernelError",
                "evalue": "the kernel died while the cell ran",
                "traceback": [],
            }
        finally:
            node.source = original
            _lab(client).cell_id = None
        cell.done = True
        seconds = time.monotonic() - started
        raised = cell.position in self._errors
        measured[cell.id] = (seconds, raised)
        self.observer.finished(cell, seconds, raised, self.connected and not self.options.no_cache)
        # a cell tagged raises-exception is expected to raise (nbclient's convention)
        if raised and "raises-exception" not in node.metadata.get("tags", []):
            content = self._errors[cell.position]
            self.outcome.failures.append(
                Failure(
                    cell.index,
                    cell.id,
                    cell.label,
                    str(content.get("ename", "")),
                    str(content.get("evalue", "")),
                    list(content.get("traceback", [])),
                    stopped,
                )
            )
        if stopped:
            self._clear_after(cell)
        if self._errors.get(cell.position, {}).get("ename") == _TIMEOUT_ERROR:
            # the interrupt may not have stopped it: do not wait for it at shutdown
            client.shutdown_kernel = "immediate"
        return stopped

    def _clear_after(self, failed: Cell) -> None:
        """Cells after the one that stopped the run did not run now: no outputs from
        another run are left under them (papermill does the same)."""
        for cell in self.cells:
            if cell.index > failed.index:
                node = self.nb.cells[cell.position]
                node.outputs = []
                node.execution_count = None

    async def _final_state(self) -> dict[str, Any] | None:
        assert self.sidebar is not None
        if self.options.no_cache or self.dead:
            return None
        if not self.connected:
            return await self._connect()
        # after a failure the kernel may still be busy with an interrupted cell: wait less
        timeout = ANSWER_TIMEOUT if not self.outcome.failures else 15.0
        answer = await self.sidebar.request({"type": "request_state"}, timeout)
        return answer if answer and answer.get("type") == "state" else None

    def _results(
        self, state: dict[str, Any] | None, measured: dict[str, tuple[float, bool]]
    ) -> None:
        reported = {c["id"]: c for c in (state or {}).get("cells", [])}
        stop = next((f for f in self.outcome.failures if f.stopped), None)
        for cell in self.cells:
            if not cell.runs:
                continue
            got = reported.get(cell.id, {})
            if cell.id not in measured:
                reason = f"not run: cell {stop.index} raised" if stop else "not run"
                self.outcome.cells.append(
                    CellResult(cell.index, cell.id, cell.label, NOT_RUN, reason)
                )
                continue
            seconds, raised = measured[cell.id]
            if got.get("state") in EXECUTED:
                result = CellResult(
                    cell.index,
                    cell.id,
                    got.get("label") or cell.label,
                    got["state"],
                    got.get("reason", ""),
                    float(got.get("duration") or seconds),
                    float(got.get("saved") or 0.0),
                    got.get("code") or "",
                )
            else:  # incrcell did not see it: before %load_ext, or --no-cache
                why = (
                    "--no-cache: ran without the cache"
                    if self.options.no_cache
                    else "incrcell was not loaded when it ran"
                )
                result = CellResult(
                    cell.index,
                    cell.id,
                    cell.label,
                    ERROR if raised else RAN,
                    "raised an exception" if raised else why,
                    seconds,
                )
            if raised and result.state != ERROR:  # e.g. a timeout the kernel did not record
                result.state, result.reason, result.code = ERROR, "raised an exception", ""
            if self._errors.get(cell.position, {}).get("ename") == _TIMEOUT_ERROR:
                result.reason, result.code = str(self._errors[cell.position].get("evalue")), ""
            self.outcome.cells.append(result)
        if self.sidebar is not None:
            self.outcome.notes += [f"the kernel said: {e}" for e in self.sidebar.errors]


#: nbclient's log: the runner reports timeouts, errors and dead kernels itself.
_QUIET = logging.getLogger("incrcell.run.nbclient")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
