"""The per-cell planning shortcuts give exactly what the generic code they replace gives.

A cell's key is made of its normalised source and the digests of what it reads: a
shortcut that differs from the code it replaces changes keys (or, worse, merges two).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import incrcell
from incrcell.analysis import _definitions, parse_cell
from incrcell.fingerprint import ValueHasher, _dump, _native_digest

_SNIPPETS = [
    "x_1 = x_0 + 1",
    "{**a, 'b': 1}",
    "f'{x!r:>{w}}'",
    "del a[1:2:3], b",
    "x: int",
    "global a; nonlocal b",
    "await x",
    "async def f():\n  async with a as b: await c\n  [x async for x in y]",
    "match x:\n case None: pass\n case [1, *r]: pass\n case {'a': 1, **kw}: pass\n"
    " case C(a=1) if g: pass",
    "try:\n  pass\nexcept E as e:\n  def f(): pass\nelse:\n  class C: pass\nfinally:\n  lambda: 0",
    "for i in x:\n  while y:\n    with z:\n      if w:\n        async def g(): pass\n"
    "else:\n  def h(): pass",
    "@d\nclass C(B, metaclass=M):\n  def m(self): pass\n  class D: pass",
    "x = " + " + ".join(f"a{i}" for i in range(300)),  # deep: one frame per level
]


def _sources() -> list[str]:
    package = pathlib.Path(incrcell.__file__).parent
    return _SNIPPETS + [path.read_text() for path in sorted(package.glob("*.py"))]


@pytest.mark.parametrize("source", _sources())
def test_dump_is_ast_dump(source: str) -> None:
    tree = parse_cell(source)
    assert _dump(tree) == ast.dump(tree, annotate_fields=True, include_attributes=False)


@pytest.mark.parametrize("source", _sources())
def test_definitions_are_those_ast_walk_finds(source: str) -> None:
    tree = parse_cell(source)
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    assert _definitions(tree.body) == {n.name for n in ast.walk(tree) if isinstance(n, kinds)}


@pytest.mark.parametrize(
    "value",
    [
        *(0, 1, -1, 255, 256, 2**31, -(2**31) - 1, 2**63, -(2**200), 2**600_000),
        *(1.5, -0.0, float("nan"), float("inf"), True, False, None),
        *("", "abc", "é" * 10, "\ud800x", "x" * 70_000, "é" * 40_000),
        *(b"", b"x", b"y" * 70_000),  # 64 KiB and more: written outside the pickle frame
    ],
    ids=lambda value: type(value).__name__,  # (no repr: a huge int has none)
)
def test_native_digest_is_the_hash_picklers(value: object) -> None:
    with ValueHasher() as hasher:
        assert _native_digest(value) == hasher._isolated(value, value)
        assert hasher.hash(value) == _native_digest(value)
