"""packages.py: the map of installed distributions, kept on disk between kernels."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest

from incrcell import packages


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory distributions are installed in (on sys.path, an install prefix), and a
    private cache directory; the map is computed anew for the test."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setenv("INCRCELL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(site))
    prefixes = packages._install_prefixes()
    monkeypatch.setattr(packages, "_install_prefixes", lambda: (*prefixes, f"{site}{os.sep}"))
    packages._distributions.cache_clear()
    yield site
    packages._distributions.cache_clear()


def _scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the full scans of the installed distributions from now on."""
    calls: list[int] = []
    scan = importlib.metadata.packages_distributions

    def counted() -> dict[str, list[str]]:
        calls.append(1)
        return scan()

    monkeypatch.setattr(importlib.metadata, "packages_distributions", counted)
    return calls


def test_a_restarted_kernel_reads_the_map_back(installed: Path, monkeypatch) -> None:
    first = dict(packages._distributions())
    assert "numpy" in first["numpy"]
    packages._distributions.cache_clear()  # a new process
    scans = _scans(monkeypatch)
    assert dict(packages._distributions()) == first and scans == []


def test_installing_or_removing_a_distribution_scans_again(installed: Path, monkeypatch) -> None:
    packages._distributions()
    (installed / "newpkg-1.0.dist-info").mkdir()  # what pip install leaves
    stat = installed.stat()
    os.utime(installed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a coarse clock
    packages._distributions.cache_clear()
    scans = _scans(monkeypatch)
    packages._distributions()
    assert scans == [1]


def test_a_damaged_map_is_computed_anew(installed: Path, monkeypatch) -> None:
    packages._distributions()
    path, _ = packages._distributions_file()
    path.write_text('{"installed": "x", "map": [')
    packages._distributions.cache_clear()
    scans = _scans(monkeypatch)
    assert "numpy" in packages._distributions()["numpy"] and scans == [1]
    assert sys.modules["incrcell.packages"] is packages
