"""Packaging: incrcell's declared dependencies are enough for a kernel and for the
``incrcell`` command, and bring no Jupyter server (issue 15, item 10).

A fresh virtual environment gets exactly the distributions that ``[project]
dependencies`` of pyproject.toml need, followed through their own requirements:
the ones installed beside the tests, linked in (offline, and in a second), so that
nothing else is importable there.  incrcell itself comes from this checkout
(``PYTHONPATH``), as the tests' other kernels get it.  ``incrcell run`` in that
environment runs a notebook twice in a kernel of that environment: its cell runs,
then is restored.  An import incrcell needs but does not declare fails here.
The sidebar's side, JupyterLab with the prebuilt extension, is the browser tests'.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import incrcell

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(incrcell.__file__).resolve().parent.parent
SERVERS = ("jupyterlab", "jupyter_server", "notebook")

pytestmark = [pytest.mark.kernel, pytest.mark.slow]  # a venv, two kernels: ~10 s


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def closure(requirements: list[Requirement]) -> list[metadata.Distribution]:
    """The installed distributions ``requirements`` need, theirs included, markers evaluated
    (extras too); a missing one fails the test, naming it."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            found[name] = distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} (needed by incrcell) is not installed")
        for text in distribution.requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            ):
                todo.append(needed)
    return list(found.values())


def kernel_only_environment(directory: Path) -> Path:
    """A virtual environment in ``directory`` holding only the distributions incrcell
    declares it needs, linked from this one's; its python."""
    venv.create(directory, with_pip=False)
    python = directory / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for distribution in closure(declared()):
        here = Path(str(distribution.locate_file("")))
        tops = {Path(file).parts[0] for file in distribution.files or []}
        assert tops, f"{distribution.metadata['Name']} lists no files"
        for top in tops - {"..", "__pycache__"}:  # "..": scripts and data outside site-packages
            if (here / top).exists() and not (site / top).exists():
                (site / top).symlink_to(here / top)
    return python


def test_a_kernel_only_environment_loads_incrcell_and_caches(
    tmp_path: Path, cache_env: dict[str, str]
) -> None:
    python = kernel_only_environment(tmp_path / "env")
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell("total = sum(range(10))\nprint(total)"),
        nbformat.v4.new_code_cell(
            "import importlib.util, sys\n"
            f"print(sys.prefix, [m for m in {SERVERS!r} if importlib.util.find_spec(m)])"
        ),
    ]
    notebook = work / "nb.ipynb"
    nbformat.write(nb, notebook)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
        **cache_env,
        "PYTHONPATH": str(ROOT),
        "PYTHONNOUSERSITE": "1",
        "HOME": str(tmp_path / "home"),  # no user kernelspec: the environment's own kernel
        "JUPYTER_PATH": "",
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def run() -> dict[str, str]:
        done = subprocess.run(
            [python, "-m", "incrcell.cli", "run", notebook, "--json"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return {cell["index"]: cell["state"] for cell in json.loads(done.stdout)["cells"]}

    assert run()[1] == "ran"
    outputs = [cell.outputs for cell in nbformat.read(notebook, as_version=4).cells]
    assert outputs[0][0]["text"] == "45\n"
    prefix, servers = outputs[1][0]["text"].split(" ", 1)
    assert Path(prefix) == tmp_path / "env"  # the kernel ran in the kernel-only environment
    assert servers == "[]\n"  # and no Jupyter server is importable there
    assert run()[1] == "restored"
    assert nbformat.read(notebook, as_version=4).cells[0].outputs[0]["text"] == "45\n"
    for server in SERVERS:  # nor in the command's process
        found = subprocess.run(
            [python, "-c", f"import {server}"], env=env, capture_output=True, text=True
        )
        assert found.returncode != 0 and "ModuleNotFoundError" in found.stderr, server
