from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kernel import Kernel


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
