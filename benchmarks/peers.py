"""The benchmark notebook wrapped for incrcell's peers: joblib's ``Memory`` and marimo's
``persistent_cache``, the way their documentation shows.

The expensive cells (:data:`WRAPPED`) are wrapped; the cheap ones run as they are, as a
user of either tool would leave them. A wrapped cell is split into its body and, if the
cell ends in a displayed expression (``raw.head()``), that expression, which stays
outside the cached part (a cached block cannot display). Each wrapped body starts with
``print("bench: computed <cell>")`` (:func:`computed`): the body runs only on a miss, so
this line tells hits from misses exactly, at the cost of one print.

- joblib: the Jupyter notebook, with a first cell ``memory = Memory(<dir>, verbose=0)``;
  each wrapped cell becomes ``@memory.cache def <cell>(<inputs>): <body>; return
  (<outputs>)`` and ``(<outputs>) = <cell>(<inputs>)``. Inputs are the data the body
  reads from earlier cells (joblib hashes them on every call); modules and functions
  are left as globals, as one writes it by hand. Run in a real kernel like plain.
- marimo: a marimo app file (made by ``marimo convert`` from the same cells), each
  wrapped body inside ``with mo.persistent_cache(name="<cell>"):``; its cache is the
  default ``__marimo__/cache`` beside the app file. Run as a script in a fresh process
  per "restart" (``python peers.py run-marimo APP OUT``): the cells' times are those of
  marimo's own cell evaluator, the process's wall clock is timed by the caller.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

#: The expensive cells of ``notebook.pipeline_cells()``: what a user would wrap.
WRAPPED = ("generate", "clean", "features", "labels", "train")


def computed(cell_id: str) -> str:
    """The line a wrapped cell's body prints when it runs (a miss)."""
    return f"bench: computed {cell_id}"


def _split_display(source: str) -> tuple[str, str]:
    """``source`` as (body, trailing displayed expression or "")."""
    tree = ast.parse(source)
    last = tree.body[-1]
    is_print = (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Name)
        and last.value.func.id == "print"
    )
    if not isinstance(last, ast.Expr) or is_print:
        return source, ""
    lines = source.splitlines()
    return "\n".join(lines[: last.lineno - 1]), "\n".join(lines[last.lineno - 1 :])


class _Names(ast.NodeVisitor):
    """Names a cell binds at its top level, by kind, and every name it reads."""

    def __init__(self) -> None:
        self.data: list[str] = []  # assigned values, in order of first binding
        self.code: set[str] = set()  # modules and functions
        self.reads: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.reads.add(node.id)
        elif node.id not in self.data:
            self.data.append(node.id)

    def _nested(self, node: ast.AST) -> None:
        """A nested scope binds nothing at the top level; only its reads count."""
        self.reads |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _nested
    visit_Lambda = _nested

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.code.add(node.name)
        self._nested(node)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.code |= {(a.asname or a.name).split(".")[0] for a in node.names}

    visit_ImportFrom = visit_Import


def _names(source: str) -> _Names:
    names = _Names()
    names.visit(ast.parse(source))
    return names


def joblib_cells(cells: list[tuple[str, str]], location: Path) -> list[tuple[str, str]]:
    """The pipeline as a joblib notebook: a ``Memory`` cell, then the cells, wrapped ones
    as ``@memory.cache`` functions."""
    out = [
        (
            "joblib-memory",
            f"from joblib import Memory\nmemory = Memory({str(location)!r}, verbose=0)",
        )
    ]
    data: set[str] = set()  # values bound by earlier cells
    for cell_id, source in cells:
        names = _names(source)
        if cell_id in WRAPPED:
            body, display = _split_display(source)
            inputs = ", ".join(sorted(names.reads & data))
            outputs = "".join(f"{name}, " for name in _names(body).data)
            code = (
                f"@memory.cache\ndef {cell_id.replace('-', '_')}({inputs}):\n"
                + textwrap.indent(f"print({computed(cell_id)!r})\n{body}", "    ")
                + f"\n    return ({outputs})\n\n\n"
                f"({outputs}) = {cell_id.replace('-', '_')}({inputs})"
            )
            source = code + (f"\n{display}" if display else "")
        data |= set(names.data) - names.code
        out.append((cell_id, source))
    return out


def marimo_sources(cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pipeline's cells with the wrapped ones in ``with mo.persistent_cache(...)``
    (the first cell also imports marimo)."""
    out = []
    for i, (cell_id, source) in enumerate(cells):
        if cell_id in WRAPPED:
            body, display = _split_display(source)
            block = textwrap.indent(f"print({computed(cell_id)!r})\n{body}", "    ")
            source = f"with mo.persistent_cache(name={cell_id!r}):\n{block}"
            source += f"\n{display}" if display else ""
        if i == 0:
            source = f"import marimo as mo\n{source}"
        out.append((cell_id, source))
    return out


def write_marimo_app(cells: list[tuple[str, str]], path: Path) -> None:
    """Write ``marimo_sources(cells)`` as a marimo app file, with marimo's own converter."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for cell_id, source in marimo_sources(cells):
        nb.cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
    ipynb = path.with_suffix(".ipynb")
    nbformat.write(nb, str(ipynb))
    subprocess.run(
        [sys.executable, "-m", "marimo", "convert", str(ipynb), "-o", str(path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    ipynb.unlink()


def _run_marimo(app_path: Path, out: Path) -> None:
    """Run a marimo app as a script, timing each cell in marimo's evaluator; write
    ``{"cells": [[code, seconds], ...], "run": seconds}`` to ``out``."""
    import importlib.util

    from marimo._runtime.app import script_runner

    times: list[tuple[str, float]] = []
    evaluate = script_runner.Evaluator.evaluate_sync

    def timed(self, cell, glbls):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return evaluate(self, cell, glbls)
        finally:
            times.append((cell.code, time.perf_counter() - start))

    script_runner.Evaluator.evaluate_sync = timed  # type: ignore[method-assign]
    spec = importlib.util.spec_from_file_location("bench_app", app_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    start = time.perf_counter()
    module.app.run()
    run = time.perf_counter() - start
    out.write_text(json.dumps({"cells": times, "run": run}))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "run-marimo":
        sys.exit("usage: peers.py run-marimo APP.py OUT.json")
    _run_marimo(Path(sys.argv[2]), Path(sys.argv[3]))
