"""``incrcell run``: execute notebooks incrementally, from the command line and in CI.

``incrcell run NOTEBOOK.ipynb [NOTEBOOK ... | DIR]`` runs each notebook in a
fresh kernel with incrcell loaded, from the notebook's directory, with the
same cache as interactive sessions: unchanged cells are restored, the others
run.  It follows ``jupyter nbconvert --execute`` and papermill, which users
already know:

- outputs and execution counts are written back as nbconvert writes them,
  ``--inplace`` (the default) or ``-o OUT.ipynb``; restored cells carry their
  outputs as a real run would, without incrcell's "restored" note (``--markers``
  keeps it);
- ``-p NAME VALUE`` / ``-f params.yaml`` inject a cell tagged
  ``injected-parameters`` after the cell tagged ``parameters``
  (:mod:`incrcell.parameters`);
- ``--plan`` says, per cell, whether it would be restored or run and why,
  without running anything; ``--force CELL`` runs that cell (its number, as
  ``--plan`` shows it, or its id) and every cell depending on it;
  ``--no-cache`` runs plainly;
- ``--json`` prints one JSON object; otherwise a live display on a terminal,
  and a one-line summary per notebook (``12 restored, 2 ran, 41.3 s saved``);
- exit status 0 when every cell succeeded, 1 when a cell raised (or timed
  out: ``--timeout S`` per cell; ``--allow-errors`` keeps going, the status is
  still 1; a cell tagged ``raises-exception`` is expected to raise), 2 for a
  usage error, a missing notebook or kernel, or a kernel that cannot load
  incrcell, with one line on stderr.

Notebooks are run one after the other; a failing notebook does not stop the
next ones.  A notebook whose run failed is written all the same, with the
error under the failing cell and no outputs under the cells after it
(papermill's behaviour), so that the failure can be read in the notebook.

The kernel side is reached only through documented interfaces (see
:mod:`incrcell.runner`), so this module never imports IPython.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class UsageError(Exception):
    """A mistake in the command line or its files: one line, exit status 2."""


def add_parser(groups: Any) -> argparse.ArgumentParser:
    """Register ``run`` among the ``incrcell`` command's subcommands."""
    run = groups.add_parser(
        "run",
        help="execute notebooks incrementally (CI, scheduled reports)",
        description="Execute notebooks in a fresh kernel with incrcell: unchanged cells are "
        "restored from the cache, the others run. Outputs are written back like "
        "`jupyter nbconvert --execute`. Exit status: 0 when every cell succeeded, 1 when "
        "a cell raised, 2 for usage errors or a missing notebook or kernel.",
    )
    run.add_argument(
        "notebooks", nargs="+", metavar="NOTEBOOK", help="notebooks, or directories of notebooks"
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--inplace", action="store_true", help="write the outputs into the notebook (default)"
    )
    where.add_argument(
        "-o", "--output", type=Path, metavar="OUT.ipynb", help="write the executed notebook here"
    )
    run.add_argument(
        "--plan",
        action="store_true",
        help="say per cell whether it would be restored or run, and why; run nothing",
    )
    run.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="CELL",
        help="run this cell (its number among the code cells, as --plan shows it, or its "
        "cell id) and every cell that depends on it; repeatable",
    )
    run.add_argument("--no-cache", action="store_true", help="run plainly: no cache at all")
    run.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter (papermill's convention: True/False/None, int, float, else text)",
    )
    run.add_argument(
        "-f",
        "--parameters-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.yaml",
        help="parameters from a YAML mapping",
    )
    run.add_argument(
        "--allow-errors",
        action="store_true",
        help="keep running after a cell raises (the exit status is still 1)",
    )
    run.add_argument("--timeout", type=_seconds, metavar="S", help="seconds allowed per cell")
    run.add_argument(
        "--kernel", metavar="NAME", help="kernel to use (default: the notebook's kernelspec)"
    )
    run.add_argument(
        "--markers",
        action="store_true",
        help="keep incrcell's 'restored' note under restored cells in the written outputs",
    )
    return run


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


@dataclass
class _Job:
    path: Path
    name: str  # as shown
    output: Path | None
    nb: Any
    options: Any  # runner.Options


def main(args: argparse.Namespace) -> int:
    """Run the ``incrcell run`` command parsed into ``args``; its exit status."""
    try:
        jobs = _prepare(args)
    except UsageError as exc:
        print(f"incrcell run: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(jobs, args)
    except KeyboardInterrupt:
        return 130


def _notebooks(arguments: list[str]) -> list[Path]:
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.ipynb")
                if not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UsageError(f"no notebooks in {argument}")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise UsageError(f"no such notebook: {argument}")
    return paths


def _prepare(args: argparse.Namespace) -> list[_Job]:
    """Everything checked before any kernel starts: notebooks, parameters, kernels, cells."""
    # nbformat imports jsonschema, which compiles an IRI grammar at import when the optional
    # rfc3987-syntax is installed (JupyterLab's environment has it): seconds of CPU per
    # command for a format nbformat never checks. Absent, jsonschema leaves that format out.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from . import parameters, runner

    paths = _notebooks(args.notebooks)
    if args.plan and (args.output or args.inplace):
        raise UsageError("--plan runs nothing and writes nothing: drop -o/--inplace")
    if args.no_cache and (args.plan or args.force):
        raise UsageError(
            "--no-cache runs every cell plainly: it cannot be combined with "
            f"{'--plan' if args.plan else '--force'}"
        )
    if args.output and len(paths) > 1:
        raise UsageError("-o names one output notebook: run several notebooks --inplace")
    if args.output and not (args.output.parent or Path(".")).is_dir():
        raise UsageError(f"no such directory for -o: {args.output.parent}")
    if args.force and len(paths) > 1:
        raise UsageError("--force names cells of one notebook: run one notebook with it")
    try:
        values = parameters.collect(args.parameters_file, [tuple(p) for p in args.parameter])
    except parameters.ParameterError as exc:
        raise UsageError(str(exc)) from None
    specs = KernelSpecManager()
    jobs = []
    for path in paths:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:
            raise UsageError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
        runner.ensure_ids(nb, path.name)
        if values and not parameters.inject(nb, values):
            print(
                f"incrcell run: {path} has no cell tagged `parameters`: "
                "the parameters go into a new first cell",
                file=sys.stderr,
            )
        kernel = args.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
        try:
            specs.get_kernel_spec(kernel)
        except NoSuchKernel:
            hint = "" if args.kernel else " (the notebook's kernelspec; choose one with --kernel)"
            raise UsageError(
                f"no kernel named {kernel!r}{hint}; `jupyter kernelspec list` shows them"
            ) from None
        options = runner.Options(
            kernel=kernel,
            timeout=args.timeout,
            allow_errors=args.allow_errors,
            no_cache=args.no_cache,
            markers=args.markers,
            force=_forced(args.force, runner.code_cells(nb), path),
        )
        output = None if args.plan else (args.output or path)
        jobs.append(_Job(path, str(path), output, nb, options))
    return jobs


def _forced(names: list[str], cells: list[Any], path: Path) -> list[str]:
    """Cell ids of ``--force`` arguments: an id, or else a number among the code cells (an
    id may be all digits: nbformat draws them at random)."""
    ids = []
    for name in names:
        if any(cell.id == name for cell in cells):
            ids.append(name)
        elif name.isdigit():
            number = int(name)
            if not 1 <= number <= len(cells):
                raise UsageError(f"{path} has no code cell {number} (it has {len(cells)})")
            ids.append(cells[number - 1].id)
        else:
            raise UsageError(f"{path} has no code cell with id {name!r}")
    return ids


def _run(jobs: list[_Job], args: argparse.Namespace) -> int:
    import asyncio

    from .progress import Display
    from .runner import NotebookRun, Observer, RunError

    display = Display(quiet=args.json)
    outcomes, reports = [], []
    status = 0
    for job in jobs:
        observer = display.begin(job.name) if not args.plan else Observer()
        run = NotebookRun(job.nb, job.path, job.options, observer)
        try:
            outcome = asyncio.run(run.plan() if args.plan else run.execute())
        except BaseException as exc:
            display.abort(observer)
            if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                print(f"incrcell run: {job.name}: interrupted; not written", file=sys.stderr)
                return 130
            if not isinstance(exc, RunError):
                raise
            print(f"incrcell run: {job.name}: {exc}", file=sys.stderr)
            return 2
        for note in outcome.notes:
            print(f"incrcell run: {job.name}: {note}", file=sys.stderr)
        if args.plan:
            display.plan(job.name, outcome)
        else:
            display.end(job.name, outcome, observer)
            try:
                _write(job.nb, job.output)
            except OSError as exc:
                print(
                    f"incrcell run: cannot write {job.output}: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 2
            for failure in outcome.failures:
                _report_failure(job.name, failure)
            if outcome.failures:
                status = 1
        outcomes.append(outcome)
        reports.append(_json_notebook(job, outcome, args.plan))
    if len(jobs) > 1:
        display.total(outcomes, args.plan)
    if args.json:
        print(json.dumps(_json(reports, outcomes, args.plan), indent=2))
    return status


def _write(nb: Any, path: Path | None) -> None:
    """Write the executed notebook atomically (a temp file renamed over it)."""
    import nbformat

    if path is None:
        return
    directory = path.parent if str(path.parent) else Path(".")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            nbformat.write(nb, stream)
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _report_failure(name: str, failure: Any) -> None:
    """The failing cell in one line, then its traceback (colours only on a terminal)."""
    print(f"incrcell run: {name}: {failure.headline()}", file=sys.stderr)
    traceback = "\n".join(failure.traceback)
    if traceback:
        print(traceback if sys.stderr.isatty() else _ANSI.sub("", traceback), file=sys.stderr)


def _json_notebook(job: _Job, outcome: Any, plan: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"path": str(job.path)}
    if plan:
        data["cells"] = [p.to_json() for p in outcome.predictions]
        return data
    data["output"] = str(job.output) if job.output else None
    data["cells"] = [c.to_json() for c in outcome.cells]
    data["errors"] = [
        {**f.to_json(), "traceback": [_ANSI.sub("", line) for line in f.traceback]}
        for f in outcome.failures
    ]
    data["totals"] = _totals(outcome.cells)
    return data


def _totals(cells: list[Any]) -> dict[str, Any]:
    from .runner import ERROR, NOT_RUN, RAN, RESTORED, UNCACHEABLE

    totals: dict[str, Any] = {
        state: sum(c.state == state for c in cells)
        for state in (RESTORED, RAN, UNCACHEABLE, ERROR, NOT_RUN)
    }
    totals["seconds"] = round(sum(c.seconds for c in cells), 6)
    totals["saved_seconds"] = round(sum(c.saved_seconds for c in cells), 6)
    return totals


def _json(reports: list[dict[str, Any]], outcomes: list[Any], plan: bool) -> dict[str, Any]:
    """The ``--json`` object: every code cell of every notebook, and totals.

    Run: ``{"cells": [{"notebook", "index", "id", "state", "reason", "seconds",
    "saved_seconds", "label"}], "totals": {...}, "notebooks": [{"path", "output",
    "cells", "errors", "totals"}]}``; plan: the same with ``prediction`` in place of
    ``state`` and counts of ``restore`` / ``run`` / ``unknown``.
    """
    cells = [{"notebook": r["path"], **c} for r in reports for c in r["cells"]]
    if plan:
        totals = {
            kind: sum(c["prediction"] == kind for c in cells)
            for kind in ("restore", "run", "unknown")
        }
        return {"plan": True, "cells": cells, "totals": totals, "notebooks": reports}
    return {
        "plan": False,
        "cells": cells,
        "totals": _totals([c for o in outcomes for c in o.cells]),
        "notebooks": reports,
    }
