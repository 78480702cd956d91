"""Fixtures shared by the suite, and the markers of what a test needs.

Markers (registered in pyproject.toml; ``--strict-markers`` refuses others):
``kernel`` starts real IPython kernels, ``browser`` drives JupyterLab in
chromium, ``slow`` takes long at the default settings (2,000 generated
sequences, the demo notebooks), ``lint`` runs the style checks.  The inner
loop in CONTRIBUTING.md deselects them.  ``kernel`` is set here, on every test
that starts a kernel itself or through one of its fixtures (any code naming
``Kernel`` or ``run_notebook``), so that a new kernel test cannot forget it.

The SeaweedFS server of tests/seaweed.py is a fixture of the session here, so that every
test file shares one server (tests stay apart by bucket): as a fixture of each test
module it would start once per module.

The whole suite runs on two pytest-xdist workers (``-n 2`` in pyproject.toml's addopts;
``-n 0`` runs in this process, for a debugger).  :func:`pytest_xdist_make_scheduler`
hands a worker whole files, so that a module's fixtures start once and its tests keep
their order, and the browser files (``tests/test_sidebar_*.py``) to one worker as one
unit: two JupyterLabs and chromiums at once would starve each other on two cores.  The
files with slow or browser tests are handed out first (longest first), the rest in the
order collected.

Before anything runs, :func:`pytest_configure` compiles this checkout's incrcell (and
tests/) to bytecode: the kernels the tests start import incrcell anew each time, and with
PYTHONDONTWRITEBYTECODE set (as in CI) they would compile all of it at every start
(about 0.2 s each).  They still import this checkout's sources; a stale ``.pyc`` is
never used (Python checks the source's mtime and size).
"""

from __future__ import annotations

import compileall
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from seaweed import bucket_fixture, seaweed_fixture  # noqa: F401  (fixtures, for every test file)

from kernel import Kernel

# The names in tests/kernel.py that start real kernels.
_STARTS_KERNELS = frozenset({"Kernel", "run_notebook"})


def _starts_kernels(function: Callable[..., object] | None) -> bool:
    code = getattr(function, "__code__", None)
    return code is not None and not _STARTS_KERNELS.isdisjoint(code.co_names)


#: The files of browser tests: one unit of work for pytest-xdist (see the module's docstring).
_BROWSER_FILES = "tests/test_sidebar_"
_CHECKOUT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # once, in the process that starts the workers
        compileall.compile_dir(_CHECKOUT / "incrcell", quiet=1)
        compileall.compile_dir(_CHECKOUT / "tests", maxlevels=0, quiet=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        fixtures = [defs[-1].func for defs in info.name2fixturedefs.values()] if info else []
        if any(map(_starts_kernels, [getattr(item, "function", None), *fixtures])):
            item.add_marker(pytest.mark.kernel)
    if hasattr(config, "workerinput"):
        # The longest files first, for the scheduler (a stable sort: each file keeps its order).
        long = {item.path for item in items if item.get_closest_marker("slow")}
        long |= {item.path for item in items if item.get_closest_marker("browser")}
        items.sort(key=lambda item: item.path not in long)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Whole files to each worker in the order collected, the browser files as one unit
    (xdist's own scheduler when ``--dist`` names another than the default)."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return _BROWSER_FILES if file.startswith(_BROWSER_FILES) else file

    config.option.loadscopereorder = False  # the order collected, not the largest file first
    return FileScheduling(config, log)


#: While the workers start: our stderr, the pipe they get instead, how many are still to start.
_spawning: list[int] = []


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[object]) -> None:
    """The workers get a pipe as their stderr, which a thread copies to ours.  With ours
    (a log file in CI) a worker would keep that file open (pytest keeps the original stderr
    while it captures), and the file watch of the in-process tests would see it grow while
    a cell runs (this process writing its progress): the cell would be uncacheable."""
    read, write = os.pipe()
    _spawning[:] = [os.dup(2), write, len(specs)]
    os.dup2(write, 2)
    threading.Thread(target=_relay, args=(read, os.dup(_spawning[0])), daemon=True).start()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_newgateway(gateway: object) -> None:
    """Our own stderr back once the last worker started with the pipe."""
    _spawning[2] -= 1
    if _spawning[2] == 0:
        stderr, write, _ = _spawning
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(write)


def _relay(read: int, stderr: int) -> None:
    """What the workers write to their stderr, to ours, until the last of them exits."""
    with open(read, "rb", buffering=0) as source, open(stderr, "wb", buffering=0) as target:
        while chunk := source.read(1 << 16):
            target.write(chunk)


@pytest.fixture(autouse=True)
def _quick_cells(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quick cells (incrcell/quick.py) off, unless the test is marked ``quick``: the tests
    use trivial cells (``a = 1``) to stand for cells worth caching, and test the cache with
    them.  The quick cells' own tests and the differential fuzzer run with them on (the
    default), the kernels the tests start inherit the setting."""
    if request.node.get_closest_marker("quick") is None:
        monkeypatch.setenv("INCRCELL_QUICK", "off")


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    """A private cache directory and signing key for one test."""
    return {
        "INCRCELL_CACHE_DIR": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # a fresh font cache, as on a new machine: building it writes files mid-cell
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
        "PYTHONHASHSEED": "random",
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def kernel(workdir: Path, cache_env: dict[str, str]):
    k = Kernel(workdir, cache_env)
    yield k
    k.shutdown()


@pytest.fixture
def npm() -> str:
    """The ``npm`` that runs the labextension's scripts; its node_modules must be installed
    (``pip install -e '.[test]'`` does it). Missing: a failure in CI, else a skip."""
    found = shutil.which("npm")
    if (
        found is None
        or not (Path(__file__).resolve().parent.parent / "labextension" / "node_modules").is_dir()
    ):
        reason = "npm or labextension/node_modules missing (pip install -e '.[test]' creates them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found
