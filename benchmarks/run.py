"""Benchmark incrcell in real IPython kernels, driven like JupyterLab's Run All.

Usage: ``.venv/bin/python benchmarks/run.py [--repeat N] [--tiny N] [--peers] [--quick]``

Scenarios (each tool in a fresh kernel process per round):

- plain:        Run All of the pipeline notebook without incrcell;
- cold:         Run All with ``%load_ext incrcell`` on an empty cache;
- warm:         restart, Run All again: every cell should be restored;
- warm-evicted: restart, the cache dropped from the page cache, Run All;
- edit-last:    restart, edit the last cell, Run All: all but the last restored;
- tiny:         200 trivial cells, plain vs incrcell on an empty cache, then warm: quick
                cells (incrcell/quick.py), run again rather than restored; and "tiny
                cached", the same with ``INCRCELL_QUICK=off``, every cell restored.

``--peers`` runs the same notebook and scenarios through joblib's ``Memory`` and
marimo's ``persistent_cache`` too (``peers.py``; ``requirements-peers.txt``).
``--quick`` shrinks the notebook to check the machinery in a minute or two.

Run All is timed like JupyterLab does it: every ``execute_request`` (with
``metadata={"cellId": ...}``) is sent at once, and the run ends when the last
cell's reply arrives. A cell's time is from the previous cell's end (or the
first send) to its own end; the sum of the cells' times is the run's time.
The whole-process wall clock adds the kernel's start (or restart). Results go
to stdout and ``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import pagecache  # noqa: E402
import peers  # noqa: E402
from notebook import (  # noqa: E402
    FULL,
    QUICK,
    edited_last,
    pipeline_cells,
    tiny_cells,
    write_pipeline_ipynb,
)

from kernel import Kernel as TestKernel  # noqa: E402  (tests/kernel.py)

TIMEOUT = 900.0

# Targets (issue 14): fractions of the plain Run All (sums of the cells' times), and ms of
# overhead per trivial cell; edit-last must cost at most warm + the last cell's plain time.
COLD_TARGET = 1.05
WARM_TARGET = 0.03
EVICTED_TARGET = 0.05
TINY_TARGET_MS = 1.0
TINY_WARM_TARGET_MS = 0.0  # a warm run of trivial cells no slower than plain
SCENARIOS = ("cold", "warm", "warm-evicted", "edit-last")
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class CellRun:
    cell_id: str
    seconds: float
    status: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def restored(self) -> bool:
        return any(
            o.get("metadata", {}).get("incrcell")
            for o in self.outputs
            if o["output_type"] == "display_data"
        )


@dataclass
class RunAll:
    name: str
    cells: list[CellRun]
    wall: float = 0.0  # the whole process: kernel (re)start or interpreter start, and the run
    missed: list[str] = field(default_factory=list)  # a peer's wrapped cells that recomputed

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.cells)

    def cell(self, cell_id: str) -> CellRun:
        return next(c for c in self.cells if c.cell_id == cell_id)

    def without_load(self) -> float:
        return sum(c.seconds for c in self.cells if c.cell_id != "load-ext")


class Kernel(TestKernel):
    """The tests' kernel driver, plus a timed Run All that sends every cell at once."""

    def _connect(self) -> None:
        super()._connect()
        self._drain()

    def _drain(self) -> None:
        for get in (self.kc.get_iopub_msg, self.kc.get_shell_msg):
            while True:
                try:
                    get(timeout=0.2)
                except queue.Empty:
                    break

    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def run_all(self, name: str, cells: list[tuple[str, str]]) -> RunAll:
        """Send every cell at once, as JupyterLab's Run All does; collect until the last is done."""
        ids: list[str] = []
        start = time.perf_counter()
        for cell_id, source in cells:
            content = {
                "code": source,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": False,
            }
            msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
            self.kc.shell_channel.send(msg)
            ids.append(msg["header"]["msg_id"])
        index = {msg_id: i for i, msg_id in enumerate(ids)}
        outputs: list[list[dict[str, Any]]] = [[] for _ in ids]
        ended: list[float | None] = [None] * len(ids)
        replies: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + TIMEOUT
        shell, iopub = self.kc.shell_channel, self.kc.iopub_channel
        poller = zmq.Poller()  # block on both sockets: no busy loop competing with the kernel
        poller.register(shell.socket, zmq.POLLIN)
        poller.register(iopub.socket, zmq.POLLIN)
        idle: set[int] = set()  # outputs are complete once iopub says idle
        while len(idle) < len(ids) or len(replies) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: Run All did not finish within {TIMEOUT} s")
            ready = dict(poller.poll(1000))
            now = time.perf_counter()
            if shell.socket in ready:
                msg = shell.get_msg(timeout=0)
                i = index.get(msg["parent_header"].get("msg_id"))
                if i is not None:
                    replies[i] = msg["content"]
                    if ended[i] is None:  # the reply can arrive before iopub's idle
                        ended[i] = now
            if iopub.socket not in ready:
                continue
            msg = iopub.get_msg(timeout=0)
            i = index.get(msg["parent_header"].get("msg_id"))
            if i is None:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                idle.add(i)
                ended[i] = min(ended[i] or float("inf"), now)
            elif kind == "stream":
                outputs[i].append(
                    {"output_type": "stream", "name": content["name"], "text": content["text"]}
                )
            elif kind in ("display_data", "execute_result", "error"):
                outputs[i].append({"output_type": kind, **content})
        runs, previous = [], start
        for i, (cell_id, _) in enumerate(cells):
            end = max(ended[i], previous)  # type: ignore[type-var]
            reply = replies[i]
            error = (
                "" if reply["status"] == "ok" else f"{reply.get('ename')}: {reply.get('evalue')}"
            )
            runs.append(CellRun(cell_id, end - previous, reply["status"], outputs[i], error))
            previous = end
        failed = [c for c in runs if c.status != "ok"]
        if failed:
            raise RuntimeError(f"{name}: cell {failed[0].cell_id} failed: {failed[0].error}")
        return RunAll(name, runs)


def diagnose(kernel: Kernel, run: RunAll, problem: str) -> None:
    """Print what incrcell said (stderr of every cell, ``%incrcell status``), then fail."""
    for cell in run.cells:
        for o in cell.outputs:
            if o["output_type"] == "stream" and o["name"] == "stderr":
                log(f"  [{cell.cell_id} stderr] {o['text'].strip()}")
    status = kernel.run_all("status", [("incrcell-status", "%incrcell status")])
    log("".join(o.get("text", "") for o in status.cells[0].outputs))
    raise AssertionError(problem)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine() -> dict[str, str]:
    import numpy
    import pandas

    import incrcell

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        cores = str(os.cpu_count())
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": cores,
        "memory": mem,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "incrcell": incrcell.__version__,
    }


def engine_digest() -> str:
    """Digest of incrcell's source files: which version of the engine was measured."""
    import xxhash

    import incrcell

    state = xxhash.xxh3_64()
    root = Path(incrcell.__file__).parent
    for path in sorted(root.rglob("*.py")):  # the core, the store and kernel packages
        state.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return state.hexdigest()


def compile_bytecode() -> None:
    """Compile incrcell to bytecode, as installing it from a wheel does (pip compiles on
    install): an editable install run with PYTHONDONTWRITEBYTECODE would otherwise make
    every kernel compile incrcell from source at ``%load_ext``, a cost users never pay."""
    import compileall

    import incrcell

    compileall.compile_dir(Path(incrcell.__file__).parent, quiet=1)


def log(text: str) -> None:
    print(text, flush=True)


VALUES_SIZE = """\\
def _values_size():
    import pickle, types
    total = 0
    for name, value in list(globals().items()):
        if name.startswith("_") or name in ("In", "Out", "exit", "quit", "get_ipython"):
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        buffers = []
        try:
            total += len(pickle.dumps(value, protocol=5, buffer_callback=buffers.append))
        except Exception:
            continue
        total += sum(b.raw().nbytes for b in buffers)
    return total
print(_values_size())"""


@dataclass
class Tool:
    """A caching tool run through the pipeline: how to tell which cells it restored.

    incrcell must restore every cell it can: a miss stops the benchmark (it is a bug).
    A peer's recomputed cells are its real behaviour (joblib hashes a DataFrame loaded
    from its cache differently from the one it stored, so the next wrapped cell
    misses): they are recorded in ``RunAll.missed`` and shown in the table.
    """

    name: str
    #: the cells of a warm or edit-last ``run`` that should have come from the cache but did not
    missed: Callable[[RunAll, bool], list[str]]
    #: how many cells of ``run`` came from the cache
    hits: Callable[[RunAll], int]
    failed: str = ""  # why the tool stopped (a peer that fails does not stop the others)


def _incrcell_missed(run: RunAll, edited: bool) -> list[str]:
    expected = run.cells[1:-1] if edited else run.cells[1:]
    missed = [c.cell_id for c in expected if not c.restored]
    if run.cells[0].restored or (edited and run.cells[-1].restored):
        missed.append("(a cell that must run was restored)")
    return missed


def _computed(run: RunAll, cell_id: str) -> bool:
    """Whether a peer's wrapped cell ran its body (a miss) in ``run``."""
    line = peers.computed(cell_id)
    return any(line in o.get("text", "") for c in run.cells for o in c.outputs)


def _peer_missed(run: RunAll, edited: bool) -> list[str]:
    return [cid for cid in peers.WRAPPED if _computed(run, cid)]


def _peer_hits(run: RunAll) -> int:
    return sum(not _computed(run, cid) for cid in peers.WRAPPED)


INCRCELL = Tool("incrcell", _incrcell_missed, lambda r: sum(c.restored for c in r.cells))


class Bench:
    def __init__(self, root: Path, blas_threads: int, sizes: tuple[int, int, int]) -> None:
        self.root = root
        self.blas_threads = blas_threads
        self.sizes = sizes
        self.work = root / "work"
        self.work.mkdir()
        self.results: dict[str, list[RunAll]] = {}
        self.cache_sizes: dict[str, list[int]] = {}
        self.evicted: dict[str, list[tuple[int, int]]] = {}  # (bytes dropped, still resident)
        self.values_size: int | None = None
        self.counter = 0

    def env(self) -> tuple[dict[str, str], Path]:
        self.counter += 1
        cache = self.root / f"cache-{self.counter}"
        env = {
            "INCRCELL_CACHE_DIR": str(cache),
            "XDG_CONFIG_HOME": str(self.root / f"config-{self.counter}"),
            "XDG_CACHE_HOME": str(self.root / f"xdg-cache-{self.counter}"),
        }
        if self.blas_threads:
            for var in BLAS_THREAD_VARS:
                env[var] = str(self.blas_threads)
        return env, cache

    def keep(self, run: RunAll, note: str = "") -> RunAll:
        self.results.setdefault(run.name, []).append(run)
        if not note:
            note = f"{sum(c.restored for c in run.cells)}/{len(run.cells)} cells restored"
        log(f"  {run.name:<24} {run.seconds:8.2f} s  wall {run.wall:7.2f} s  ({note})")
        return run

    def start(self, env: dict[str, str]) -> tuple[Kernel, float]:
        started = time.perf_counter()
        kernel = Kernel(self.work, env)
        return kernel, time.perf_counter() - started

    def plain(self, name: str, cells: list[tuple[str, str]], values: bool = False) -> None:
        env, _ = self.env()
        kernel, startup = self.start(env)
        try:
            run = kernel.run_all(name, cells)
            run.wall = startup + run.seconds
            self.keep(run)
            if values and self.values_size is None:
                sized = kernel.run_all("values", [("values-size", VALUES_SIZE)])
                self.values_size = int(sized.cells[0].outputs[-1]["text"])
        finally:
            kernel.shutdown()

    def _evict(self, tool: str, cache: Path) -> None:
        dropped = pagecache.evict(cache)
        self.evicted.setdefault(tool, []).append((dropped, pagecache.resident(cache)))

    def _check(self, tool: Tool, run: RunAll, scenario: str, kernel: Kernel | None) -> None:
        """Keep ``run``, after checking it restored what it should (see :class:`Tool`)."""
        self.keep(run, f"{tool.hits(run)}/{len(run.cells)} cells from the cache")
        if scenario == "cold":
            # nothing restored: for incrcell no marker, for a peer every wrapped body ran
            if tool is INCRCELL:
                wrong = [c.cell_id for c in run.cells if c.restored]
            else:
                wrong = [cid for cid in peers.WRAPPED if not _computed(run, cid)]
            if wrong:
                raise AssertionError(f"{run.name}: restored on an empty cache: {wrong}")
            return
        run.missed = tool.missed(run, scenario == "edit-last")
        if run.missed and kernel is not None and tool is INCRCELL:
            diagnose(kernel, run, f"{run.name}: wrong cells restored or not: {run.missed}")
        if run.missed:
            log(f"  {run.name}: recomputed {', '.join(run.missed)}")

    def kernel_tool(self, tool: Tool, cells: list[tuple[str, str]], cache: Path, env) -> None:
        """cold, then restart + warm, restart + evict + warm, restart + edit-last, one kernel."""
        kernel, startup = self.start(env)
        try:
            for scenario in SCENARIOS:
                if scenario != "cold":
                    started = time.perf_counter()
                    kernel.restart()
                    startup = time.perf_counter() - started
                if scenario == "warm-evicted":
                    self._evict(tool.name, cache)
                source = edited_last(cells) if scenario == "edit-last" else cells
                run = kernel.run_all(f"{tool.name} {scenario}", source)
                run.wall = startup + run.seconds
                self._check(tool, run, scenario, kernel)
                if scenario == "cold":
                    self.cache_sizes.setdefault(tool.name, []).append(dir_size(cache))
        finally:
            kernel.shutdown()
            shutil.rmtree(cache, ignore_errors=True)

    def pipeline_incrcell(self) -> None:
        env, cache = self.env()
        self.kernel_tool(INCRCELL, pipeline_cells(True, self.sizes), cache, env)

    def pipeline_joblib(self, tool: Tool) -> None:
        env, _ = self.env()
        cache = self.root / f"joblib-{self.counter}"
        cells = peers.joblib_cells(pipeline_cells(False, self.sizes), cache)
        self.kernel_tool(tool, cells, cache, env)

    def marimo_run(self, name: str, app: Path, cells: list[tuple[str, str]]) -> RunAll:
        """Run a marimo app in a fresh interpreter; its cells' times from marimo's evaluator."""
        env, _ = self.env()
        out = app.with_suffix(".json")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(HERE / "peers.py"), "run-marimo", str(app), str(out)],
            cwd=app.parent,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        wall = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"{name}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        timed = json.loads(out.read_text())
        by_code = {source.strip(): cid for cid, source in peers.marimo_sources(cells)}
        runs = [
            CellRun(by_code.get(code.strip(), f"marimo-{i}"), seconds, "ok")
            for i, (code, seconds) in enumerate(timed["cells"])
        ]
        runs[-1].outputs.append({"output_type": "stream", "name": "stdout", "text": done.stdout})
        return RunAll(name, runs, wall)

    def pipeline_marimo(self, tool: Tool, apps: dict[str, Path]) -> None:
        """cold, warm, warm-evicted, edit-last: each a fresh process, one cache directory."""
        self.counter += 1
        folder = self.root / f"marimo-{self.counter}"
        folder.mkdir()
        cache = folder / "__marimo__" / "cache"
        cells = pipeline_cells(False, self.sizes)
        try:
            for scenario in SCENARIOS:
                edited = scenario == "edit-last"
                app = folder / apps["edit-last" if edited else "pipeline"].name
                shutil.copy(apps["edit-last" if edited else "pipeline"], app)
                if scenario == "warm-evicted":
                    self._evict(tool.name, cache)
                run = self.marimo_run(
                    f"{tool.name} {scenario}", app, edited_last(cells) if edited else cells
                )
                self._check(tool, run, scenario, None)
                if scenario == "cold":
                    self.cache_sizes.setdefault(tool.name, []).append(dir_size(cache))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def tiny_marimo(self, app: Path, n: int) -> None:
        """The trivial cells as a marimo app (nothing to cache: marimo's own cost a cell)."""
        self.counter += 1
        folder = self.root / f"marimo-{self.counter}"
        folder.mkdir()
        try:
            shutil.copy(app, folder / app.name)
            run = self.marimo_run("marimo tiny", folder / app.name, tiny_cells(n, False))
            self.keep(run, f"{len(run.cells)} cells")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def tiny_incrcell(self, n: int, cached: bool) -> None:
        """The trivial cells cold then warm: quick cells (the default), which run again and
        store nothing; or, ``cached``, with quick cells off, every cell stored and restored."""
        env, cache = self.env()
        name = "tiny cached" if cached else "tiny"
        if cached:
            env["INCRCELL_QUICK"] = "off"
        cells = tiny_cells(n, incrcell=True)
        kernel, startup = self.start(env)
        try:
            cold = kernel.run_all(f"{name} cold", cells)
            cold.wall = startup + cold.seconds
            self.keep(cold)
            assert not any(c.restored for c in cold.cells)
            started = time.perf_counter()
            kernel.restart()
            warm = kernel.run_all(f"{name} warm", cells)
            warm.wall = time.perf_counter() - started
            self.keep(warm)
            if cached and not all(c.restored for c in warm.cells[1:]):
                diagnose(kernel, warm, "tiny warm run did not restore every cell")
            if not cached and (any(c.restored for c in warm.cells) or dir_size(cache) > 1 << 20):
                diagnose(kernel, warm, "tiny's quick cells were cached")
        finally:
            kernel.shutdown()
            shutil.rmtree(cache, ignore_errors=True)

    # -- summary ---------------------------------------------------------------
    def median(self, name: str, what=lambda r: r.seconds) -> float:
        return statistics.median(what(r) for r in self.results[name])

    def samples(self, name: str, what=lambda r: r.seconds) -> str:
        return ", ".join(f"{what(r):.2f}" for r in self.results[name])


def _mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def report(
    bench: Bench, info: dict[str, str], n_tiny: int, total_wall: float, tools: list[Tool]
) -> str:
    med = bench.median
    plain = med("plain")
    cold, warm = med("incrcell cold"), med("incrcell warm")
    evicted, edit = med("incrcell warm-evicted"), med("incrcell edit-last")
    last_plain = med("plain", lambda r: r.cells[-1].seconds)
    last_edit = med("incrcell edit-last", lambda r: r.cells[-1].seconds)
    load = med("incrcell cold", lambda r: r.cell("load-ext").seconds)
    tiny_plain = med("tiny plain")
    tiny_cold = med("tiny cold", RunAll.without_load)
    tiny_warm = med("tiny warm", RunAll.without_load)
    per_cell = (tiny_cold - tiny_plain) / n_tiny * 1000
    per_cell_warm = (tiny_warm - tiny_plain) / n_tiny * 1000
    cached_cold = med("tiny cached cold", RunAll.without_load)
    cached_warm = med("tiny cached warm", RunAll.without_load)

    def ok(flag: bool) -> str:
        return "pass" if flag else "**FAIL**"

    def wall(name: str) -> str:
        return f"{med(name, lambda r: r.wall) / med('plain', lambda r: r.wall):.3f}"

    rows = [
        ("plain Run All (no incrcell)", f"{plain:.2f}", "1.000", "1.000", "", ""),
        (
            "cold: first run, empty cache",
            f"{cold:.2f}",
            f"{cold / plain:.3f}",
            wall("incrcell cold"),
            f"≤ {COLD_TARGET:.2f}",
            ok(cold <= COLD_TARGET * plain),
        ),
        (
            "warm: restart, Run All, all restored",
            f"{warm:.2f}",
            f"{warm / plain:.3f}",
            wall("incrcell warm"),
            f"≤ {WARM_TARGET:.2f} ({WARM_TARGET * plain:.2f} s)",
            ok(warm <= WARM_TARGET * plain),
        ),
        (
            "warm, cache evicted from the page cache",
            f"{evicted:.2f}",
            f"{evicted / plain:.3f}",
            wall("incrcell warm-evicted"),
            f"≤ {EVICTED_TARGET:.2f} ({EVICTED_TARGET * plain:.2f} s)",
            ok(evicted <= EVICTED_TARGET * plain),
        ),
        (
            "edit-last: restart, last cell edited",
            f"{edit:.2f}",
            f"{edit / plain:.3f}",
            wall("incrcell edit-last"),
            f"≤ warm + the last cell's plain time ({warm:.2f} + {last_plain:.3f} s)",
            ok(edit <= warm + last_plain),
        ),
        (
            "  of which the edited last cell",
            f"{last_edit:.3f}",
            "",
            "",
            f"its plain time: {last_plain:.3f} s",
            "",
        ),
        (f"tiny: {n_tiny} trivial cells, plain", f"{tiny_plain:.2f}", "1.000", "", "", ""),
        (
            f"tiny: {n_tiny} trivial cells, incrcell cold",
            f"{tiny_cold:.2f}",
            f"{tiny_cold / tiny_plain:.3f}",
            "",
            f"≤ {TINY_TARGET_MS:g} ms/cell over plain: {per_cell:+.2f} ms/cell",
            ok(per_cell <= TINY_TARGET_MS),
        ),
        (
            f"tiny: {n_tiny} trivial cells, incrcell warm",
            f"{tiny_warm:.2f}",
            f"{tiny_warm / tiny_plain:.3f}",
            "",
            f"no slower than plain: {per_cell_warm:+.2f} ms/cell",
            ok(per_cell_warm <= TINY_WARM_TARGET_MS),
        ),
        (
            f"tiny cached (quick=off): {n_tiny} trivial cells cold",
            f"{cached_cold:.2f}",
            f"{cached_cold / tiny_plain:.3f}",
            "",
            f"{(cached_cold - tiny_plain) / n_tiny * 1000:+.2f} ms/cell, every cell stored",
            "",
        ),
        (
            f"tiny cached (quick=off): {n_tiny} trivial cells warm",
            f"{cached_warm:.2f}",
            f"{cached_warm / tiny_plain:.3f}",
            "",
            f"{(cached_warm - tiny_plain) / n_tiny * 1000:+.2f} ms/cell, every cell restored",
            "",
        ),
    ]
    lines = ["## incrcell benchmark results", ""]
    lines.append(
        "| scenario | seconds (sum of the cells) | ratio to plain | whole process, "
        "ratio to plain | target (issue 14) | result |"
    )
    lines.append("|---|---:|---:|---:|---|---|")
    lines += [f"| {' | '.join(r)} |" for r in rows]
    lines.append("")
    reps = len(bench.results["plain"])
    lines.append(
        f"Medians of {reps} runs of the pipeline and {len(bench.results['tiny plain'])} "
        "of tiny; a run's time is the sum of its cells' times, from the first "
        "execute_request to the last reply, all requests sent at once as JupyterLab does; "
        "the whole process adds the kernel's start or restart. The incrcell times include "
        f"the `%load_ext incrcell` cell ({load:.2f} s cold); tiny's incrcell times do not."
    )
    lines.append("")
    names = list(bench.results)

    def sampled(name: str) -> str:
        if name.startswith("tiny"):
            return bench.samples(name, RunAll.without_load)
        return bench.samples(name)

    lines.append(
        "Samples (s, sum of the cells; tiny's incrcell runs without the `%load_ext` cell): "
        + "; ".join(f"{name} {sampled(name)}" for name in names)
        + "."
    )
    lines.append("")
    lines += side_by_side(bench, n_tiny, tools)
    lines.append("")
    lines.append("### Per cell (median seconds)")
    lines.append("")
    columns = [n for n in names if n == "plain" or n.startswith(tuple(f"{t.name} " for t in tools))]
    columns = [n for n in columns if not n.endswith(" tiny")]
    lines.append("| cell | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    cell_ids = dict.fromkeys(
        c.cell_id for name in columns for r in bench.results[name] for c in r.cells
    )
    for cell_id in cell_ids:

        def cell_time(name: str) -> str:
            times = [  # (B023: called in this iteration only)
                c.seconds
                for r in bench.results[name]
                for c in r.cells
                if c.cell_id == cell_id  # noqa: B023
            ]
            return f"{statistics.median(times):.3f}" if times else "–"

        lines.append(f"| {cell_id} | " + " | ".join(cell_time(n) for n in columns) + " |")
    lines.append("")
    lines.append("### Machine")
    lines.append("")
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines.append(f"- whole benchmark: {total_wall / 60:.1f} min wall clock")
    lines.append("")
    return "\n".join(lines)


def side_by_side(bench: Bench, n_tiny: int, tools: list[Tool]) -> list[str]:
    """Every tool's scenarios as ratios to plain (sums of the cells, then whole
    processes), the trivial cells' overhead, the cache on disk and the values in it."""
    med = bench.median
    plain, plain_wall = med("plain"), med("plain", lambda r: r.wall)
    tiny_plain = med("tiny plain") / n_tiny * 1000

    def ratio(name: str, what: Callable[[RunAll], float], base: float) -> str:
        if name not in bench.results:
            return "–"
        return f"{med(name, what) / base:.3f}"

    def trivial(tool: Tool) -> str:
        if tool is INCRCELL and "tiny cold" in bench.results:
            cold = med("tiny cold", RunAll.without_load) / n_tiny * 1000 - tiny_plain
            warm = med("tiny warm", RunAll.without_load) / n_tiny * 1000 - tiny_plain
            return f"{cold:+.2f} cold, {warm:+.2f} warm"
        if tool.name == "marimo" and "marimo tiny" in bench.results:
            own = med("marimo tiny") / n_tiny * 1000
            return f"0 (no cell wrapped; marimo's own runtime: {own:.2f} ms a cell)"
        return "0 (no cell wrapped)"

    def missed(tool: Tool, scenario: str) -> str:
        cells = {c for r in bench.results.get(f"{tool.name} {scenario}", []) for c in r.missed}
        return f" ({', '.join(sorted(cells))} recomputed)" if cells else ""

    lines = ["### Side by side", ""]
    head = (
        "| tool | cold | warm | edit-last | warm, evicted "
        "| trivial cell, ms over plain | cache on disk |"
    )
    rule = "|---|---:|---:|---:|---:|---|---:|"
    for title, what, base in (
        ("sum of the cells' times", lambda r: r.seconds, plain),
        ("whole process (kernel or interpreter start included)", lambda r: r.wall, plain_wall),
    ):
        lines += [f"Ratios to plain Jupyter, {title}:", "", head, rule]
        lines.append(
            f"| plain Jupyter | 1.000 ({base:.2f} s) | = cold | = cold | = cold | 0 "
            f"({tiny_plain:.2f} ms a cell) | – |"
        )
        for tool in tools:
            if tool.failed and not any(n.startswith(tool.name) for n in bench.results):
                lines.append(f"| {tool.name} | failed: {tool.failed} | | | | | |")
                continue
            cells = [ratio(f"{tool.name} {s}", what, base) + missed(tool, s) for s in SCENARIOS]
            sizes = bench.cache_sizes.get(tool.name)
            size = _mib(statistics.median(sizes)) if sizes else "–"
            cold, warm, evicted, edit = cells
            lines.append(
                f"| {tool.name} | {cold} | {warm} | {edit} | {evicted} | {trivial(tool)} | {size} |"
            )
        lines.append("")
    for tool in tools:
        if tool.failed:
            lines.append(f"{tool.name} failed: {tool.failed}")
            lines.append("")
    if bench.values_size is not None:
        lines.append(
            f"The values the notebook leaves (every variable, pickled with protocol 5, "
            f"buffers counted once): {_mib(bench.values_size)}."
        )
    dropped = [
        f"{tool}: {_mib(statistics.median(d for d, _ in runs))} dropped, at most "
        f"{_mib(max(r for _, r in runs))} still resident"
        for tool, runs in bench.evicted.items()
    ]
    if dropped:
        lines.append("Page cache before the evicted runs (mincore): " + "; ".join(dropped) + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads in the kernels (default 1: on a 2-core machine a "
        "second BLAS thread makes the training cell's time vary by +-30%%; "
        "0 = the library's default)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of plain and of each tool's scenarios (median reported; default 3)",
    )
    parser.add_argument("--tiny", type=int, default=200, help="trivial cells in the tiny scenario")
    parser.add_argument(
        "--tiny-repeat",
        type=int,
        default=3,
        help="runs of the (quick) tiny scenarios (median reported; default 3)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run joblib's Memory and marimo's persistent_cache "
        "(pip install -r benchmarks/requirements-peers.txt)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a notebook 20 times smaller: checks the machinery, the numbers mean nothing",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    args = parser.parse_args()

    started = time.perf_counter()
    write_pipeline_ipynb(HERE / "pipeline.ipynb")
    info = machine()
    digest = engine_digest()
    info["incrcell source digest"] = digest
    compile_bytecode()
    root = Path(tempfile.mkdtemp(prefix="incrcell-bench-"))
    tools = [INCRCELL]
    apps: dict[str, Path] = {}
    sizes = QUICK if args.quick else FULL
    if args.peers:
        tools += peer_tools(root, sizes, args.tiny, apps, info)
    log("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    try:
        bench = Bench(root, args.blas_threads, sizes)
        info["BLAS threads in the kernels"] = str(args.blas_threads or "library default")
        if args.quick:
            info["notebook"] = "**--quick: 20 times smaller; these numbers mean nothing**"
        rounds = max(args.repeat, args.tiny_repeat)
        for rep in range(rounds):
            log(f"round {rep + 1}")
            steps: list[tuple[Tool | None, Callable[[], None]]] = []
            if rep < args.repeat:
                steps += [
                    (None, lambda: bench.plain("plain", pipeline_cells(False, sizes), True)),
                    (INCRCELL, bench.pipeline_incrcell),
                ]
                for tool in tools[1:]:
                    if tool.name == "joblib":
                        steps.append((tool, lambda t=tool: bench.pipeline_joblib(t)))
                    else:
                        steps.append((tool, lambda t=tool: bench.pipeline_marimo(t, apps)))
            if rep < args.tiny_repeat:
                steps += [
                    (None, lambda: bench.plain("tiny plain", tiny_cells(args.tiny, False))),
                    (INCRCELL, lambda: bench.tiny_incrcell(args.tiny, cached=False)),
                    (INCRCELL, lambda: bench.tiny_incrcell(args.tiny, cached=True)),
                ]
                if "tiny" in apps:
                    marimo = next(t for t in tools if t.name == "marimo")
                    steps.append((marimo, lambda: bench.tiny_marimo(apps["tiny"], args.tiny)))
            if rep % 2:  # alternate the order: a drift of the machine favours no tool
                steps.reverse()
            for tool, step in steps:
                if tool is None or tool is INCRCELL:
                    step()
                    continue
                if tool.failed:
                    continue
                try:
                    step()
                except Exception as error:  # a peer that fails stops itself, not the run
                    tool.failed = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    log(f"  {tool.name} failed, skipped from now on: {tool.failed}")
            if rep + 1 < rounds:  # numbers so far, should the run be cut short
                partial = report(bench, info, args.tiny, time.perf_counter() - started, tools)
                note = f"**Partial: {rep + 1} of {rounds} rounds done; the run goes on.**"
                args.output.write_text(partial.replace("### Machine", f"{note}\n\n### Machine"))
        text = report(bench, info, args.tiny, time.perf_counter() - started, tools)
        if engine_digest() != digest:
            warning = (
                "**Warning: incrcell's source changed while the benchmark ran; "
                "these numbers mix engine versions. Run it again.**"
            )
            log(warning)
            text = text.replace("### Machine", warning + "\n\n### Machine")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(text)
    args.output.write_text(text)
    log(f"written to {args.output}")


def peer_tools(
    root: Path, sizes: tuple[int, int, int], n_tiny: int, apps: dict[str, Path], info: dict
) -> list[Tool]:
    """The peers that can run here (one line for each that cannot); marimo's app files."""
    tools = []
    for name in ("joblib", "marimo"):
        try:
            module = __import__(name)
        except ImportError as error:
            log(
                f"{name}: not installed ({error}); skipped. pip install -r "
                "benchmarks/requirements-peers.txt"
            )
            continue
        info[name] = module.__version__
        tool = Tool(name, _peer_missed, _peer_hits)
        if name == "marimo":
            try:
                folder = root / "marimo-apps"
                folder.mkdir()
                cells = pipeline_cells(False, sizes)
                apps["pipeline"] = folder / "pipeline.py"
                apps["edit-last"] = folder / "pipeline_edited.py"
                apps["tiny"] = folder / "tiny.py"
                peers.write_marimo_app(cells, apps["pipeline"])
                peers.write_marimo_app(edited_last(cells), apps["edit-last"])
                peers.write_marimo_app(tiny_cells(n_tiny, False), apps["tiny"])
            except Exception as error:
                log(f"marimo: could not write its app files ({error}); skipped")
                apps.clear()
                continue
        tools.append(tool)
    return tools


if __name__ == "__main__":
    main()
