"""Cells run in-process, with or without the engine, the way IPython runs them.

Shared by the engine's tests (``test_engine.py``) and the differential tests
(``differential.py``), so that "a plain run" and "a run under incrcell" are
the same code everywhere.

A "notebook" is a :class:`Session`: an engine plus a namespace that is the
``__dict__`` of a fresh ``__main__`` module (as in IPython, so that functions
and classes defined by cells have ``__module__ == "__main__"``).  A kernel
restart is a new Session on the same cache directory.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from incrcell.config import Config
from incrcell.engine import CellRecord, Engine, Plan, Restore
from incrcell.kernel.hooks import split_directive
from incrcell.store import Entry
from incrcell.store.signing import KEY_ENV, signing_key


def execute(source: str, namespace: dict[str, Any], filename: str) -> Any:
    """Run a cell like IPython does: all statements, and the value of a last expression."""
    tree = ast.parse(source)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        return eval(compile(last, filename, "eval"), namespace)
    return None


@dataclass
class Ran:
    """What running a cell's code did: its Out value, what it printed, what it raised."""

    value: Any
    stdout: str
    error: Exception | None


def run_code(source: str, namespace: dict[str, Any], filename: str) -> Ran:
    """Run a cell's code plainly, capturing its stdout and its exception (as IPython shows them)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            value = execute(source, namespace, filename)
    except Exception as exc:
        return Ran(None, out.getvalue(), exc)
    return Ran(value, out.getvalue(), None)


@dataclass
class Outcome:
    """What one simulated cell execution did."""

    plan: Plan
    record: CellRecord
    value: Any  # the Out value (returned by restore on a hit)
    stdout: str  # what the cell printed (empty on a restore)
    error: BaseException | None = None

    @property
    def ran(self) -> bool:
        return not isinstance(self.plan, Restore)

    @property
    def restored(self) -> bool:
        return isinstance(self.plan, Restore)

    @property
    def shown(self) -> str:
        """The stdout a user sees under the cell: printed by its code, or replayed on a hit."""
        if not isinstance(self.plan, Restore):
            return self.stdout
        return "".join(
            o["text"]
            for o in self.plan.entry.outputs
            if o.get("type") == "stream" and o.get("name") == "stdout"
        )


def run_cell(
    engine: Engine,
    ns: dict[str, Any],
    source: str,
    cell_id: str | None = None,
    execution_count: int | None = None,
) -> Outcome:
    """One cell execution, as the IPython hooks drive the engine (``%%incrcell`` first
    lines included)."""
    directive, source = split_directive(source)
    plan = engine.plan(
        source, ns, cell_id=cell_id, execution_count=execution_count, directive=directive
    )
    if isinstance(plan, Restore):
        value = engine.restore(plan, ns)
        record = engine.finish(
            plan, ns, success=True, outputs=list(plan.entry.outputs), result=value
        )
        return Outcome(plan, record, value, "")
    recording = engine.recording(plan)  # None: nothing of its run is stored
    with recording.running() if recording is not None else contextlib.nullcontext():
        ran = run_code(source, ns, f"<cell {execution_count}>")
    if ran.error is not None:
        record = engine.finish(plan, ns, success=False, recording=recording)
        return Outcome(plan, record, None, ran.stdout, ran.error)
    outputs = [{"type": "stream", "name": "stdout", "text": ran.stdout}] if ran.stdout else []
    record = engine.finish(
        plan, ns, success=True, outputs=outputs, result=ran.value, recording=recording
    )
    return Outcome(plan, record, ran.value, ran.stdout)


class Session:
    """One kernel: an engine and a fresh ``__main__`` namespace."""

    def __init__(self, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = builtins
        monkeypatch.setitem(sys.modules, "__main__", self.module)
        self.ns: dict[str, Any] = self.module.__dict__
        self.engine = Engine(Config(cache_dir=cache_dir))
        self.count = 0

    def run(self, source: str, cell_id: str | None = None) -> Outcome:
        self.count += 1
        return run_cell(self.engine, self.ns, source, cell_id, self.count)

    def run_all(self, cells: list[tuple[str, str]]) -> dict[str, Outcome]:
        return {cell_id: self.run(source, cell_id) for cell_id, source in cells}

    def plan(self, source: str, cell_id: str | None = None) -> Plan:
        return self.engine.plan(source, self.ns, cell_id=cell_id)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private cache directory, and a signing key created under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    signing_key.cache_clear()
    yield tmp_path / "cache"
    signing_key.cache_clear()


def bare_entry(
    key: str, source: str, bundle: str, components: dict[str, Any] | None = None
) -> Entry:
    """The entry of a cell that printed nothing and whose values are all in ``bundle``
    (tests that fill a store directly, without running cells)."""
    return Entry(
        key=key,
        source=source,
        variables={},
        deleted=[],
        outputs=[],
        result=None,
        duration=1.0,
        created=time.time(),
        components=components or {},
        bundle=bundle,
    )
