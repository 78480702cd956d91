"""packages.py: the map of installed distributions, kept on disk between kernels."""

from __future__ import annotations

import importlib.metadata
import inspect
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
    scan = packages.top_level_map

    def counted(distributions) -> dict[str, list[str]]:
        calls.append(1)
        return scan(distributions)

    monkeypatch.setattr(packages, "top_level_map", counted)
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


def _reference(distributions) -> dict[str, list[str]]:
    """Python 3.13's ``packages_distributions``, through its ``PackagePath`` objects."""
    found: dict[str, list[str]] = {}
    for dist in distributions:
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:
            names = {
                (f.parts[0] if len(f.parts) > 1 else inspect.getmodulename(f) or str(f))
                for f in dist.files or ()
            }
            tops = sorted(n for n in names if "." not in n)
        for top in tops:
            found.setdefault(top, []).append(dist.metadata["Name"])
    return found


def test_the_map_is_what_python_3_13_infers_for_every_installed_distribution() -> None:
    assert packages.top_level_map(importlib.metadata.distributions()) == _reference(
        importlib.metadata.distributions()
    )


def test_the_map_of_wheels_without_top_level_eggs_and_odd_paths(tmp_path: Path) -> None:
    def dist(directory: str, metadata: str, **files: str) -> None:
        where = tmp_path / directory
        where.mkdir()
        (where / ("PKG-INFO" if directory.endswith(".egg-info") else "METADATA")).write_text(
            metadata
        )
        for name, text in files.items():
            (where / name.replace("_txt", ".txt")).write_text(text)

    record = "\n".join(
        [
            "fastmod.cpython-311-x86_64-linux-gnu.so,sha256=x,10",  # an extension module alone
            "hatched/__init__.py,sha256=y,5",
            '"odd,name/a.py",sha256=z,1',  # quoted: a comma in the path
            "./dotted/./b.py,,",
            "single.py,,",
            "hatched-1.0.dist-info/METADATA,,",
            "../../bin/tool,,",
            "/abs/path.py,,",
            "trailing/,,",
            "",
        ]
    )
    dist(
        "hatched-1.0.dist-info",
        "Metadata-Version: 2.1\nname:  Hatched\n\nName: body",
        RECORD=record,
    )
    dist(
        "declared-2.0.dist-info",
        "Name: declared\n",
        top_level_txt="decl\nother\n",
        RECORD="x/y.py,,",
    )
    dist(
        "old-0.1.egg-info",
        "Metadata-Version: 1.0\nName: old\n",
        SOURCES_txt="old/__init__.py\nsetup.py\n",
    )
    found = packages.top_level_map(importlib.metadata.distributions(path=[str(tmp_path)]))
    assert found == _reference(importlib.metadata.distributions(path=[str(tmp_path)]))
    assert found["fastmod"] == found["hatched"] == found["odd,name"] == ["Hatched"]
    assert found["decl"] == found["other"] == ["declared"] and "x" not in found
    assert found["old"] == ["old"] and found["setup"] == ["old"]
