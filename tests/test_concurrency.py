"""Four real kernels running notebooks on one cache while ``incrcell cache gc`` runs in a loop.

No crash, no wrong value, no corrupt file, and no entry lost except by
eviction: with a cap the notebooks fit in, the second Run All of every
kernel restores every cell; with a cap far too small, every value is still
the one a plain run gives and every file left verifies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kernel import LOAD, Kernel

ROOT = Path(__file__).parent.parent
KERNELS = 4


def notebook(k: int) -> list[tuple[str, str]]:
    """Shared cells (the same key in every kernel: deduplicated) and cells of its own."""
    return [
        LOAD,
        (
            "shared",
            "import numpy as np\nbase = np.arange(300_000, dtype=np.float64)\nprint(base.sum())",
        ),
        ("mine", f"mine = base * {k + 1}\nprint(mine.sum())"),
        ("big", f"big = np.full(200_000, {k}.5)\nbig.sum()"),
        ("tail", "total = float(mine.sum() + big.sum())\ntotal"),
    ]


def expected_total(k: int) -> float:
    return float(sum(range(300_000)) * (k + 1) + 200_000 * (k + 0.5))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "incrcell.cli", "cache", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )


class GcLoop:
    """``incrcell cache gc --max-size S`` over and over, in a thread, until stopped."""

    def __init__(self, env: dict[str, str], max_size: str) -> None:
        self.env, self.max_size = env, max_size
        self.failures: list[str] = []
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            done = cli(self.env, "gc", "--max-size", self.max_size)
            self.runs += 1
            if done.returncode != 0 or done.stderr:
                self.failures.append(done.stdout + done.stderr)

    def __enter__(self) -> GcLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_everywhere(kernels: list[Kernel]) -> list[list]:
    """Every kernel's Run All at once; returns their executions."""
    results: list[list] = [[] for _ in kernels]
    errors: list[BaseException] = []

    def drive(k: int) -> None:
        try:
            results[k] = kernels[k].run_all(notebook(k))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(k,)) for k in range(len(kernels))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def check_values(kernels: list[Kernel], runs: list[list]) -> None:
    for k, (kernel, executions) in enumerate(zip(kernels, runs)):
        assert all(e.status == "ok" for e in executions), [e.error for e in executions]
        assert float(kernel.value("total")) == expected_total(k)
        assert float(kernel.value("float(mine.sum())")) == float(sum(range(300_000)) * (k + 1))
        assert kernel.value("float(big[0])") == f"{k}.5"


def warnings_in(executions: list) -> list[str]:
    return [
        o["text"]
        for e in executions
        for o in e.outputs
        if o["output_type"] == "stream" and o["name"] == "stderr" and "incrcell" in o["text"]
    ]


@pytest.fixture
def kernels(tmp_path: Path, cache_env: dict[str, str]):
    started = []
    try:
        for k in range(KERNELS):
            workdir = tmp_path / f"work{k}"
            workdir.mkdir()
            started.append(Kernel(workdir, cache_env))
        yield started
    finally:
        for kernel in started:
            kernel.shutdown()


def test_four_kernels_and_gc_in_a_loop(kernels: list[Kernel], cache_env: dict[str, str]) -> None:
    # a cap the notebooks fit in: gc never has to evict, so nothing may be lost
    with GcLoop(cache_env, "1GB") as loop:
        cold = run_everywhere(kernels)
        check_values(kernels, cold)
        for kernel in kernels:
            kernel.restart()
        warm = run_everywhere(kernels)
    check_values(kernels, warm)
    assert loop.runs >= 2 and not loop.failures, loop.failures
    for executions in cold + warm:
        assert not warnings_in([*executions]), warnings_in(executions)
    for executions in warm:
        assert [e.restored for e in executions[1:]] == [True] * 4, [e.outputs for e in executions]

    # a cap far too small: gc evicts all the time, under the kernels' reads and writes
    with GcLoop(cache_env, "3MB") as loop:
        for _ in range(2):
            for kernel in kernels:
                kernel.restart()
            check_values(kernels, run_everywhere(kernels))
    assert loop.runs >= 2 and not loop.failures, loop.failures
    verified = cli(cache_env, "verify", "--json")
    assert verified.returncode in (0, 1), verified.stderr
    assert "corrupt" not in verified.stdout and "signature" not in verified.stdout, verified.stdout
