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
"""

from __future__ import annotations

import os
import shutil
import sys
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        fixtures = [defs[-1].func for defs in info.name2fixturedefs.values()] if info else []
        if any(map(_starts_kernels, [getattr(item, "function", None), *fixtures])):
            item.add_marker(pytest.mark.kernel)


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
