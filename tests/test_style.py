"""The style checks, run by the suite's one command (marker ``lint``; ``-m "not lint"``
skips them): ruff's lint and format check on the repository, mypy on ``incrcell/``
(both configured in pyproject.toml), and the labextension's prettier and eslint
(``npm run lint:check``).  Each runs as a subprocess; a finding fails the test with
the tool's own output, which says what to fix (``ruff check --fix``, ``ruff format``,
``npm run lint`` fix most of it).

Also the layering rule ruff cannot state (CONTRIBUTING.md, "The layers"): the store
imports nothing of incrcell outside ``incrcell/store/``, and nothing that deserialises.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint

ROOT = Path(__file__).resolve().parent.parent
LABEXTENSION = ROOT / "labextension"


def _passes(command: list[str], cwd: Path = ROOT) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        found = f"`{' '.join(command)}` in {cwd}:\n{result.stdout}{result.stderr}"
        pytest.fail(found, pytrace=False)


def test_ruff_check() -> None:
    _passes([sys.executable, "-m", "ruff", "check", "."])


def test_ruff_format() -> None:
    _passes([sys.executable, "-m", "ruff", "format", "--check", "."])


def test_mypy() -> None:
    _passes([sys.executable, "-m", "mypy"])  # the files of [tool.mypy]


def test_labextension_prettier_and_eslint(npm: str) -> None:
    _passes([npm, "run", "--silent", "lint:check"], cwd=LABEXTENSION)


# What would let the store turn bytes into objects (it hands out verified bytes only).
_DESERIALISERS = {"pickle", "_pickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}


def test_the_store_imports_only_itself() -> None:
    found = []
    for path in sorted((ROOT / "incrcell" / "store").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                found.append(f"{path.name}: from {'.' * node.level}{node.module or ''}")
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            found += [
                f"{path.name}: {name}"
                for name in names
                if name.split(".")[0] in _DESERIALISERS
                or (name.startswith("incrcell") and not name.startswith("incrcell.store"))
            ]
    assert found == []
