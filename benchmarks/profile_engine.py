"""Where incrcell's time goes: the benchmark cells in an in-process IPython shell, profiled.

Usage: ``.venv/bin/python benchmarks/profile_engine.py [--tiny 200] [--top 25]``

Runs the scenarios of ``run.py`` (cold, warm, edit-last on the pipeline
notebook; cold and warm on the tiny-cells notebook), each in a fresh Python
process as a kernel restart would, with ``%load_ext incrcell`` in an
``InteractiveShell`` (no kernel, no ZMQ). cProfile is only enabled inside
incrcell's own work (``Engine.plan``, ``Engine.finish`` and the replay of a
restored cell), so user code is neither profiled nor slowed down. For each
scenario it prints, per cell: the cell's wall time, the time incrcell spent
in plan / finish / replay, the bytes it read from and wrote to the cache;
then the functions that dominate incrcell's time, and the throughput of the
main byte-crunching steps (MB/s).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from notebook import edited_last, pipeline_cells, tiny_cells  # noqa: E402

# Groups of low-level functions, by substring of their pstats name, for the summary.
GROUPS = {
    "xxh3 hashing (xxhash update/digest)": ("xxhash", "xxh3"),
    "HMAC-SHA256 (signing / verifying)": ("_hashlib", "hmac"),
    "pickle dump (hash stream + serialise)": (
        "dump' of '_pickle",
        "Pickler' objects",
        "persistent_id",
        "reducer_override",
    ),
    "pickle load (unpickling)": ("_pickle.loads", "built-in method _pickle.loads"),
    "file write (os.write)": ("posix.write",),
    "file read (readinto)": ("readinto",),
    "file system calls (open/mkstemp/rename/stat/mkdir)": (
        "posix.replace",
        "posix.stat",
        "posix.open",
        "posix.close",
        "posix.lstat",
        "posix.mkdir",
        "io.open",
        "posix.unlink",
        "posix.fstat",
    ),
    "source analysis (ast)": ("analysis.py", "compile", "ast.py"),
    "package versions / metadata": ("packages.py", "importlib/metadata", "find_spec"),
    "json": ("json",),
}


# Functions timed individually (outermost calls only), without cProfile's distortion:
# (module, object in it or None, attribute, label). Nested ones are noted in the label.
TIMED = [
    ("incrcell.fingerprint", "ValueHasher", "hash", "ValueHasher.hash (content hash of a value)"),
    ("incrcell.persist", None, "dumps", "serialise.dumps (pickling a value to store)"),
    ("incrcell.store.file", "FileBackend", "write", "FileBackend.write (temp file, write, rename)"),
    (
        "incrcell.store.cache",
        "Store",
        "_read",
        "Store._read (allocate + read + digest a cache file)",
    ),
    (
        "incrcell.store.cache",
        None,
        "aligned_buffer",
        "  of which codec.aligned_buffer (bytearray alloc)",
    ),
    (
        "incrcell.store.signing",
        "Signer",
        "sign",
        "Signer.sign (HMAC-SHA256, writing and verifying)",
    ),
    ("incrcell.serialise", None, "loads", "serialise.loads (unpickling a value)"),
    ("incrcell.engine", None, "package_versions", "packages.package_versions"),
    ("incrcell.engine", None, "analyse_cell", "analysis.analyse_cell"),
    ("incrcell.store.file", "tempfile", "mkstemp", "tempfile.mkstemp (creating cache files)"),
    ("incrcell.store.file", "os", "makedirs", "os.makedirs (cache shard directories)"),
    ("incrcell.store.file", "os", "replace", "os.replace (renaming cache files into place)"),
    ("incrcell.kernel.outputs", None, "replay", "outputs.replay (re-emitting outputs)"),
]


def instrument() -> dict[str, list]:
    """Wrap the TIMED functions; returns label -> [calls, seconds] (live counters)."""
    import importlib

    counters: dict[str, list] = {}
    for module_name, owner_name, attr, label in TIMED:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        original = getattr(owner, attr, None)
        if original is None:
            continue  # the engine changed: skip what no longer exists
        counter = counters[label] = [0, 0.0]
        depth = [0]

        def wrapper(*args, _original=original, _counter=counter, _depth=depth, **kwargs):
            if _depth[0]:
                return _original(*args, **kwargs)
            _depth[0] += 1
            t0 = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                _depth[0] -= 1
                _counter[0] += 1
                _counter[1] += time.perf_counter() - t0

        if owner_name in ("tempfile", "os"):
            # patch only the store's use: give it a private namespace proxy
            proxy = types.SimpleNamespace(
                **{k: getattr(owner, k) for k in dir(owner) if not k.startswith("__")}
            )
            setattr(proxy, attr, wrapper)
            setattr(module, owner_name, proxy)
        else:
            setattr(owner, attr, wrapper)
    return counters


def run_scenario(name: str, n_tiny: int, top: int, use_cprofile: bool = True) -> dict:
    """Run one scenario in this process (a fresh one) and return its measurements."""
    from IPython.core.interactiveshell import InteractiveShell

    cells = {
        "cold": pipeline_cells(),
        "warm": pipeline_cells(),
        "edit-last": edited_last(pipeline_cells()),
        "tiny-cold": tiny_cells(n_tiny),
        "tiny-warm": tiny_cells(n_tiny),
    }[name]
    shell = InteractiveShell.instance()
    real_stdout = sys.stdout
    sys.stdout = io.StringIO()  # cell output: not shown
    load_id, load_src = cells[0]
    t = time.perf_counter()
    shell.run_cell(load_src, store_history=True, cell_id=load_id)
    load_time = time.perf_counter() - t

    from incrcell.kernel.extension import active as loaded
    from incrcell.store.cache import Store
    from incrcell.store.file import FileBackend

    extension = loaded(shell)
    assert extension is not None, "incrcell did not load"
    active = extension.hooks
    engine = extension.engine
    profile = cProfile.Profile()
    spent: dict[str, float] = {}
    io_bytes = {"read": 0, "written": 0}

    def timed(label, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            if use_cprofile:
                profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                if use_cprofile:
                    profile.disable()
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        return wrapper

    engine.plan = timed("plan", engine.plan)
    engine.finish = timed("finish", engine.finish)
    active.replay = timed("replay", active.replay)
    original_read, original_write = Store._read, FileBackend.write

    def counting_read(self, name):
        data, version, digests = original_read(self, name)
        io_bytes["read"] += len(data)
        return data, version, digests

    def counting_write(self, name, chunks):
        written = original_write(self, name, chunks)
        io_bytes["written"] += written
        return written

    Store._read, FileBackend.write = counting_read, counting_write
    components = instrument()

    rows = []
    for cell_id, source in cells[1:]:
        spent.clear()
        io_bytes.update(read=0, written=0)
        before = {label: list(v) for label, v in components.items()}
        t0 = time.perf_counter()
        result = shell.run_cell(source, store_history=True, cell_id=cell_id)
        wall = time.perf_counter() - t0
        if not result.success:
            raise RuntimeError(f"{name}: cell {cell_id} failed: {result.error_in_exec!r}")
        record = engine.records.get(f"cell:{cell_id}")
        rows.append(
            {
                "cell": cell_id,
                "wall": wall,
                **{k: spent.get(k, 0.0) for k in ("plan", "finish", "replay")},
                "read": io_bytes["read"],
                "written": io_bytes["written"],
                "components": {
                    label: [v[0] - before[label][0], v[1] - before[label][1]]
                    for label, v in components.items()
                },
                "state": record.state if record else "?",
                "reason": str(record.reason or "") if record else "",
            }
        )
    sys.stdout = real_stdout

    functions = []
    stats = pstats.Stats(profile) if use_cprofile else None
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items() if stats else ():  # type: ignore[attr-defined]
        short = f"{Path(file).name}:{line}({func})" if file != "~" else func
        functions.append({"name": short, "calls": nc, "tottime": tt, "cumtime": ct})
    functions.sort(key=lambda f: f["tottime"], reverse=True)
    cumulative = sorted(
        (f for f in functions if "incrcell" in f["name"] or ".py:" in f["name"]),
        key=lambda f: f["cumtime"],
        reverse=True,
    )
    groups = {}
    for group, needles in GROUPS.items():
        groups[group] = sum(
            f["tottime"] for f in functions if any(needle in f["name"] for needle in needles)
        )
    return {
        "scenario": name,
        "load": load_time,
        "rows": rows,
        "top": functions[:top],
        "cumulative": cumulative[:top],
        "groups": groups,
        "engine_total": sum(r["plan"] + r["finish"] + r["replay"] for r in rows),
    }


def show(result: dict) -> str:
    out = []
    name, rows = result["scenario"], result["rows"]
    tiny = name.startswith("tiny")
    out.append(f"## {name}  (%load_ext incrcell: {result['load'] * 1000:.0f} ms)")
    out.append("")
    wall = sum(r["wall"] for r in rows)
    engine = result["engine_total"]
    read = sum(r["read"] for r in rows) / 1e6
    written = sum(r["written"] for r in rows) / 1e6
    out.append(
        f"cells {len(rows)}, wall {wall:.3f} s, of which incrcell {engine:.3f} s "
        f"(plan {sum(r['plan'] for r in rows):.3f}, "
        f"finish {sum(r['finish'] for r in rows):.3f}, "
        f"replay {sum(r['replay'] for r in rows):.3f}); "
        f"read {read:.1f} MB, wrote {written:.1f} MB; "
        f"per cell: incrcell {engine / len(rows) * 1000:.2f} ms"
    )
    if result["top"]:
        out.append(
            "(profiled: cProfile inflates Python-heavy parts; "
            "C work such as hashing and I/O is not)"
        )
    else:
        out.append("(timed without cProfile)")
    out.append("")
    totals: dict[str, list] = {}
    for r in rows:
        for label, (calls, seconds) in r["components"].items():
            total = totals.setdefault(label, [0, 0.0])
            total[0] += calls
            total[1] += seconds
    out.append(
        "Time in selected incrcell functions (outermost calls; timers only, no cProfile "
        "inside them unless this is a cProfile run):"
    )
    out.append("")
    out.append("| function | calls | seconds | ms per cell |")
    out.append("|---|---:|---:|---:|")
    for label, (calls, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        if calls:
            out.append(f"| {label} | {calls} | {seconds:.3f} | {seconds / len(rows) * 1000:.2f} |")
    out.append("")
    if not tiny:
        out.append(
            "| cell | state | wall s | plan s | finish s | replay s | MB read | MB written |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            out.append(
                f"| {r['cell']} | {r['state']} | {r['wall']:.3f} | {r['plan']:.3f} | "
                f"{r['finish']:.3f} | {r['replay']:.3f} | {r['read'] / 1e6:.1f} | "
                f"{r['written'] / 1e6:.1f} |"
            )
        out.append("")
    if not result["top"]:
        return "\n".join(out)
    out.append("Time by kind of work (tottime inside incrcell's calls):")
    for group, seconds in sorted(result["groups"].items(), key=lambda kv: -kv[1]):
        if seconds >= 0.001:
            out.append(
                f"  {seconds:8.3f} s  {group}"
                + (f"  ({seconds / len(rows) * 1000:.3f} ms/cell)" if tiny else "")
            )
    out.append("")
    out.append("Top functions by own time:")
    out.append(f"  {'tottime s':>10} {'cumtime s':>10} {'calls':>8}  function")
    for f in result["top"]:
        out.append(f"  {f['tottime']:10.4f} {f['cumtime']:10.4f} {f['calls']:8d}  {f['name']}")
    out.append("")
    out.append("Top Python functions by cumulative time:")
    for f in result["cumulative"]:
        out.append(f"  {f['tottime']:10.4f} {f['cumtime']:10.4f} {f['calls']:8d}  {f['name']}")
    out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # internal: run one, print JSON
    parser.add_argument("--tiny", type=int, default=200)
    parser.add_argument(
        "--no-cprofile",
        action="store_true",
        help="only time incrcell's calls (no cProfile overhead, no function list)",
    )
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "profile.md",
        help="where the report is also written (default benchmarks/profile.md)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="scenarios to run (cold warm edit-last tiny-cold tiny-warm)",
    )
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario, args.tiny, args.top, not args.no_cprofile)))
        return
    scenarios = args.only or ["cold", "warm", "edit-last", "tiny-cold", "tiny-warm"]
    # warm and edit-last need the cache a cold run leaves (tiny-warm: tiny-cold's)
    order = ["cold", "warm", "edit-last", "tiny-cold", "tiny-warm"]
    needed = set(scenarios)
    if needed & {"warm", "edit-last"}:
        needed.add("cold")
    if "tiny-warm" in needed:
        needed.add("tiny-cold")
    scenarios = [name for name in order if name in needed]
    sections = ["# incrcell engine profile (benchmarks/profile_engine.py)", ""]
    with tempfile.TemporaryDirectory(prefix="incrcell-profile-") as root:
        env = {
            **os.environ,
            "INCRCELL_CACHE_DIR": f"{root}/cache",
            "XDG_CONFIG_HOME": f"{root}/config",
            # as in run.py: one BLAS thread, so that the training cell's time is stable
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        for name in scenarios:
            if name == "tiny-cold":  # its own empty cache
                env["INCRCELL_CACHE_DIR"] = f"{root}/tiny-cache"
            command = [
                sys.executable,
                __file__,
                "--scenario",
                name,
                "--tiny",
                str(args.tiny),
                "--top",
                str(args.top),
            ] + (["--no-cprofile"] if args.no_cprofile else [])
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"scenario {name} failed")
            section = show(json.loads(done.stdout.strip().splitlines()[-1]))
            print(section, flush=True)
            sections.append(section)
    args.output.write_text("\n".join(sections))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
