"""Differential testing: random notebooks and edits, run plainly and under incrcell.

incrcell's first promise is that a restored notebook ends exactly as a plain
run would.  The direct check: generate a notebook (a list of cells) and a
sequence of edits, and after every edit "restart the kernel and Run All"
twice, once plainly and once under incrcell (a new engine on the same cache
directory each time), then compare what every cell showed (stdout, the Out
value's repr, the exception type) and how the kernel ended: every user name
with its value *and* its aliasing structure (which names and containers hold
the same object, which arrays share memory), the files in the working
directory, the module random states, the environment variable and numpy print
options that cells may set.

The pieces, importable on their own:

- :func:`sequences`: a hypothesis strategy for :class:`Sequence` (initial
  files, a notebook, the edit steps), whose cells are drawn from statement
  templates grouped by *mechanism* (in-place mutation, aliasing, file writes,
  random draws...), so that a test can switch mechanisms on and off.
- :class:`Executor`: a kernel to run cells in.  :class:`SimulatedKernel` is
  one in this process: a :class:`harness.Session` plus the process-wide
  state a real kernel owns (working directory, local modules in
  ``sys.modules``, random states, environment, numpy print options),
  swapped in while it runs; ``incrcell=False`` runs cells with
  :func:`harness.run_code` only.  test_differential.py has real kernels.
- :func:`describe_state`: a canonical, comparable description of a kernel's
  state; in a real kernel, a last cell prints it.
- :func:`check`: runs a sequence in two executors and raises
  :class:`Divergence` with a readable report at the first difference;
  :func:`check_in_process` with simulated kernels.

Nothing generated may depend on ids, time, or hash seeds (no ``id()``, no
sets of strings, no clocks), so that a plain run is deterministic; the
self-test runs plain against plain to hold that.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import importlib
import inspect
import io
import os
import random
import re
import shutil
import sys
import types
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st

from harness import Outcome, Session, run_code
from incrcell import packages

# --------------------------------------------------------------------------- mechanisms

#: Every mechanism the generator can exercise; plain assignments, prints and
#: Out values ("basic") are always on.
MECHANISMS = frozenset({
    "mutation",     # lst.append, d.update, arr[0] = ..., obj.attr = ...
    "aliases",      # b = a, views, containers holding another name's object, class attributes
    "functions",    # functions reading globals, mutating arguments, writing globals
    "classes",      # a class defined in a cell, instances made and changed later
    "file_reads",   # open(...).read(), np.load, pd.read_csv, and edits of those files
    "file_writes",  # open(..., 'w'/'a'), np.save, df.to_csv, os.remove
    "random",       # random / numpy legacy global state: seeds and draws; numpy Generators
    "modules",      # a local module helpers.py, imported, edited, its attributes set
    "effects",      # environment variables, numpy print options, a shell command writing a file
    "dynamic",      # globals(), eval, exec, setattr
    "unpicklable",  # generators, locks
    "errors",       # exceptions, some after partial mutation
    "delete",       # del
    "pandas",       # DataFrames, their columns set in place
})

# Names a cell may bind, by kind: templates use names of a kind defined earlier.
KINDS: dict[str, tuple[str, ...]] = {
    "num": ("a", "b", "c"),
    "list": ("xs", "ys"),
    "dict": ("d",),
    "array": ("arr", "view"),
    "frame": ("df", "df2"),
    "object": ("obj", "obj2"),
    "class": ("K",),
    "f": ("f",),
    "g": ("g",),
    "h": ("h",),
    "text": ("text",),
    "rng": ("rng",),
    "module": ("helpers",),
    "scale": ("scale",),
    "gen": ("gen",),
    "lock": ("lock",),
    "mode": ("mode",),
}

#: Modules a notebook imports from its working directory (a kernel restart forgets them).
LOCAL_MODULES = ("helpers",)
#: The environment variable cells may set: a restart resets it.
ENV_VAR = "INCRCELL_DIFF_MODE"
#: Files cells read and write, and edits change.
DATA_FILES = ("data.txt", "table.csv", "arr.npy", "helpers.py", "out.txt", "log.txt", "shell.txt")


class _Picker:
    """What a template draws: names of a kind already defined, new targets, small ints."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any], defined: set[str]) -> None:
        self.draw = draw
        self.defined = defined
        self.bound: set[str] = set()
        self.unbound: set[str] = set()

    def use(self, kind: str) -> str:
        return self.draw(st.sampled_from(sorted(n for n in KINDS[kind] if n in self.defined)))

    def new(self, kind: str) -> str:
        name = self.draw(st.sampled_from(KINDS[kind]))
        self.bound.add(name)
        return name

    def binds(self, name: str) -> str:
        self.bound.add(name)
        return name

    def delete(self, kind: str) -> str:
        name = self.use(kind)
        self.unbound.add(name)
        return name

    def int(self, low: int = 0, high: int = 9) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: tuple[str, ...]) -> str:
        return self.draw(st.sampled_from(options))


@dataclass(frozen=True)
class Template:
    """One statement (or a few) a cell can hold; ``needs`` are kinds that must be defined."""

    mechanism: str
    needs: tuple[str, ...]
    render: Callable[[_Picker], str]


_CLASS = """class {name}:
    scale = {scale}

    def __init__(self, v):
        self.v = v
        self.items = []

    def total(self):
        return self.v * K.scale + len(self.items)

    def __repr__(self):
        return f'K({{self.v!r}}, {{self.items!r}})'"""


def _t(mechanism: str, needs: str, render: Callable[[_Picker], str]) -> Template:
    return Template(mechanism, tuple(needs.split()), render)


TEMPLATES: tuple[Template, ...] = (
    # basic: assignments over earlier names, prints, Out values
    _t("basic", "", lambda p: f"{p.new('num')} = {p.int()}"),
    _t("basic", "num", lambda p: f"{p.new('num')} = {p.use('num')} + {p.int()}"),
    _t("basic", "num", lambda p: f"{p.new('num')} = {p.use('num')} * {p.use('num')} - {p.int()}"),
    _t("basic", "", lambda p: f"{p.new('list')} = [{p.int()}, {p.int()}, {p.int()}]"),
    _t("basic", "list num", lambda p: f"{p.new('list')} = [x * {p.use('num')} for x in {p.use('list')}]"),
    _t("basic", "num", lambda p: f"{p.binds('d')} = {{'k': {p.use('num')}, 'v': [{p.int()}, {p.int()}]}}"),
    _t("basic", "num",
       lambda p: f"{p.binds('arr')} = np.arange({p.int(1, 5)}, dtype=float) * {p.use('num')}"),
    _t("basic", "", lambda p: f"{p.binds('arr')} = np.linspace(0, 1, {p.int(2, 6)})"),
    _t("basic", "num list", lambda p: f"print({p.use('num')}, {p.use('list')})"),
    _t("basic", "array", lambda p: f"print({p.use('array')})"),
    _t("basic", "dict", lambda p: "d"),
    _t("basic", "num", lambda p: f"{p.use('num')} + {p.int()}"),
    _t("basic", "list", lambda p: p.use("list")),
    _t("basic", "array", lambda p: f"{p.use('array')}.sum()"),
    _t("basic", "list array",
       lambda p: f"{p.new('num')} = len({p.use('list')}) + int({p.use('array')}.sum())"),
    # in-place mutation
    _t("mutation", "list num", lambda p: f"{p.use('list')}.append({p.use('num')})"),
    _t("mutation", "list", lambda p: f"{p.use('list')}.extend([{p.int()}, {p.int()}])"),
    _t("mutation", "list", lambda p: f"{p.use('list')}.sort()"),
    _t("mutation", "list", lambda p: f"{p.use('list')}.pop()"),
    _t("mutation", "list num", lambda p: f"{p.use('list')}[0] = {p.use('num')}"),
    _t("mutation", "dict num", lambda p: f"d['k'] = {p.use('num')}"),
    _t("mutation", "dict", lambda p: f"d.update(z={p.int()})"),
    _t("mutation", "dict", lambda p: f"d['v'].append({p.int()})"),
    _t("mutation", "array num", lambda p: f"{p.use('array')}[0] = {p.use('num')}"),
    _t("mutation", "array", lambda p: f"{p.use('array')} += {p.int()}"),
    _t("mutation", "num", lambda p: f"{p.use('num')} += {p.int()}"),
    _t("mutation", "object num", lambda p: f"{p.use('object')}.v = {p.use('num')}"),
    _t("mutation", "object", lambda p: f"{p.use('object')}.items.append({p.int()})"),
    # aliasing: several names (or containers) for one object
    _t("aliases", "list", lambda p: f"{p.new('list')} = {p.use('list')}"),
    _t("aliases", "dict", lambda p: f"{p.new('list')} = d['v']"),
    _t("aliases", "dict list", lambda p: f"d['v'] = {p.use('list')}"),
    _t("aliases", "array",
       lambda p: f"{p.new('array')} = {p.use('array')}{p.choice(('[::2]', '[1:]', '.reshape(-1)', ''))}"),
    _t("aliases", "dict array", lambda p: f"d['arr'] = {p.use('array')}"),
    _t("aliases", "dict", lambda p: f"d['arr'][0] = {p.int()}"),
    _t("aliases", "list", lambda p: f"{p.new('list')} = [{p.use('list')}, {p.use('list')}]"),
    _t("aliases", "object", lambda p: f"{p.new('object')} = {p.use('object')}"),
    _t("aliases", "object list", lambda p: f"{p.use('object')}.items = {p.use('list')}"),
    _t("aliases", "class", lambda p: f"K.scale = {p.int()}"),
    _t("aliases", "frame", lambda p: f"{p.new('frame')} = {p.use('frame')}"),
    # functions reading globals, mutating their argument, writing a global
    _t("functions", "num", lambda p: f"def {p.binds('f')}(x):\n    return x + {p.use('num')}"),
    _t("functions", "num", lambda p: f"{p.binds('f')} = lambda x: x * {p.use('num')}"),
    _t("functions", "", lambda p: f"def {p.binds('g')}(seq):\n    seq.append(len(seq))"),
    _t("functions", "num",
       lambda p: f"def {p.binds('h')}():\n    global c\n    c = {p.use('num')} * 2"),
    _t("functions", "f num", lambda p: f"{p.new('num')} = f({p.use('num')})"),
    _t("functions", "f", lambda p: f"print(f({p.int()}))"),
    _t("functions", "f", lambda p: f"{p.new('list')} = list(map(f, range(3)))"),
    _t("functions", "g list", lambda p: f"g({p.use('list')})"),
    _t("functions", "h", lambda p: f"h()\n{p.binds('c')}"),
    # classes
    _t("classes", "", lambda p: _CLASS.format(name=p.binds("K"), scale=p.int())),
    _t("classes", "class num", lambda p: f"{p.new('object')} = K({p.use('num')})"),
    _t("classes", "object", lambda p: f"{p.new('num')} = {p.use('object')}.total()"),
    _t("classes", "object", lambda p: f"print({p.use('object')})"),
    _t("classes", "object", lambda p: p.use("object")),
    # files read (inputs)
    _t("file_reads", "", lambda p: f"{p.binds('text')} = open('data.txt').read()"),
    _t("file_reads", "text", lambda p: "print(text.upper())"),
    _t("file_reads", "text", lambda p: f"{p.new('list')} = text.split()"),
    _t("file_reads", "", lambda p: f"{p.new('num')} = len(open('data.txt').read())"),
    _t("file_reads", "", lambda p: f"{p.new('frame')} = pd.read_csv('table.csv')"),
    _t("file_reads", "", lambda p: f"{p.binds('arr')} = np.load('arr.npy')"),
    _t("file_reads", "", lambda p: f"{p.new('list')} = open('table.csv').read().splitlines()"),
    # files written (outputs)
    _t("file_writes", "num", lambda p: f"open('out.txt', 'w').write(str({p.use('num')}))"),
    _t("file_writes", "list",
       lambda p: f"open('data.txt', 'w').write(' '.join(map(str, {p.use('list')})))"),
    _t("file_writes", "num", lambda p: f"open('log.txt', 'a').write(str({p.use('num')}) + '\\n')"),
    _t("file_writes", "array", lambda p: f"np.save('arr.npy', {p.use('array')})"),
    _t("file_writes", "frame", lambda p: f"{p.use('frame')}.to_csv('table.csv', index=False)"),
    _t("file_writes", "", lambda p: f"{p.binds('text')} = open('out.txt').read()"),
    _t("file_writes", "", lambda p: f"{p.new('num')} = len(open('log.txt').readlines())"),
    _t("file_writes", "", lambda p: "os.remove('out.txt')"),
    # random draws from the module-level states, seeds, numpy Generators
    _t("random", "", lambda p: f"{p.new('num')} = random.random()"),
    _t("random", "", lambda p: f"{p.new('num')} = random.randint(0, 9)"),
    _t("random", "", lambda p: f"{p.new('list')} = random.sample(range(10), 3)"),
    _t("random", "", lambda p: f"{p.binds('arr')} = np.random.rand(3)"),
    _t("random", "", lambda p: f"{p.new('num')} = int(np.random.randint(0, 100))"),
    _t("random", "", lambda p: "print(random.random())"),
    _t("random", "", lambda p: f"random.seed({p.int()})"),
    _t("random", "", lambda p: f"np.random.seed({p.int()})"),
    _t("random", "list", lambda p: f"random.shuffle({p.use('list')})"),
    _t("random", "", lambda p: f"{p.binds('rng')} = np.random.default_rng({p.int()})"),
    _t("random", "rng", lambda p: f"{p.new('num')} = float(rng.random())"),
    _t("random", "rng", lambda p: f"{p.binds('arr')} = rng.integers(0, 10, size=3)"),
    # a local module: imported, used, its attributes set
    _t("modules", "", lambda p: f"import {p.binds('helpers')}"),
    _t("modules", "", lambda p: f"from helpers import {p.binds('scale')}"),
    _t("modules", "module num", lambda p: f"{p.new('num')} = helpers.scale({p.use('num')})"),
    _t("modules", "scale", lambda p: f"{p.new('num')} = scale({p.int()})"),
    _t("modules", "module", lambda p: f"helpers.LEVEL = {p.int()}"),
    _t("modules", "module", lambda p: "print(helpers.LEVEL)"),
    # side effects outside the namespace and the files Python opens
    _t("effects", "", lambda p: f"os.environ['{ENV_VAR}'] = '{p.choice(('fast', 'slow'))}'"),
    _t("effects", "", lambda p: f"{p.binds('mode')} = os.environ.get('{ENV_VAR}', 'unset')"),
    _t("effects", "mode", lambda p: "print(mode)"),
    _t("effects", "", lambda p: f"np.set_printoptions(precision={p.int(1, 4)})"),
    _t("effects", "", lambda p: f"os.system('echo {p.int()} > shell.txt')"),
    _t("effects", "", lambda p: f"{p.binds('text')} = open('shell.txt').read()"),
    # reads and writes the analysis cannot see
    _t("dynamic", "", lambda p: f"globals()['{p.new('num')}'] = {p.int()}"),
    _t("dynamic", "num", lambda p: f"{p.new('num')} = eval('{p.use('num')} + 1')"),
    _t("dynamic", "list", lambda p: f"exec('{p.use('list')}.append({p.int()})')"),
    _t("dynamic", "object num", lambda p: f"setattr({p.use('object')}, 'v', {p.use('num')})"),
    # values that cannot be pickled
    _t("unpicklable", "num", lambda p: f"{p.binds('gen')} = (i * {p.use('num')} for i in range(3))"),
    _t("unpicklable", "gen", lambda p: f"{p.new('num')} = next(gen)"),
    _t("unpicklable", "", lambda p: f"{p.binds('lock')} = threading.Lock()"),
    _t("unpicklable", "lock", lambda p: "lock.acquire(blocking=False)"),
    _t("unpicklable", "lock", lambda p: "print(lock.locked())"),
    # exceptions, some after partial work
    _t("errors", "list", lambda p: f"{p.use('list')}.append({p.int()})\nraise ValueError('boom')"),
    _t("errors", "num", lambda p: f"{p.use('num')} += 1\nraise RuntimeError('after partial work')"),
    _t("errors", "num", lambda p: f"assert {p.use('num')} < {p.int()}, 'too big'"),
    _t("errors", "list", lambda p: f"{p.new('num')} = {p.use('list')}[{p.int(0, 3)}]"),
    # del
    _t("delete", "num", lambda p: f"del {p.delete('num')}"),
    _t("delete", "list", lambda p: f"del {p.delete('list')}"),
    _t("delete", "list", lambda p: f"del {p.use('list')}[0]"),
    _t("delete", "dict", lambda p: "del d['k']"),
    # pandas
    _t("pandas", "",
       lambda p: f"{p.new('frame')} = pd.DataFrame({{'x': [1, 2, 3], 'y': [{p.int()}, 0.5, 2.0]}})"),
    _t("pandas", "frame num", lambda p: f"{p.use('frame')}['z'] = {p.use('frame')}['x'] * {p.use('num')}"),
    _t("pandas", "frame", lambda p: f"{p.use('frame')}.loc[0, 'x'] = {p.int()}"),
    _t("pandas", "frame", lambda p: f"{p.new('num')} = int({p.use('frame')}['x'].sum())"),
    _t("pandas", "frame", lambda p: f"print({p.use('frame')})"),
    _t("pandas", "frame", lambda p: p.use("frame")),
    _t("pandas", "frame", lambda p: f"{p.new('frame')} = {p.use('frame')}.copy()"),
)


def first_cell(mechanisms: Collection[str]) -> str:
    """The notebook's first cell: imports, and seeds when cells draw random numbers.

    A fresh kernel's random state is unpredictable; seeding first makes a
    plain run deterministic.  Edits never touch this cell.
    """
    source = "import os, random, threading\nimport numpy as np\nimport pandas as pd"
    if "random" in mechanisms:
        source += "\nrandom.seed(0)\nnp.random.seed(0)"
    return source


def _several(draw: Callable[[st.SearchStrategy[Any]], Any], low: int, high: int,
             odds: int = 1) -> Iterator[int]:
    """``range(high)``, cut short after ``low`` items by a drawn "one more?" (odds:1 for yes).

    Hypothesis shrinks this by deleting any one item's draws; a count drawn
    up front would only shrink from the end, keeping irrelevant cells.
    """
    for index in range(high):
        if index >= low and draw(st.integers(0, odds)) == 0:
            return
        yield index


@st.composite
def cell_sources(draw: Callable[[st.SearchStrategy[Any]], Any], mechanisms: frozenset[str],
                 defined: set[str], max_statements: int = 2) -> str:
    """One cell of 1..max_statements templates; updates ``defined`` with what it binds."""
    lines = []
    for _ in _several(draw, 1, max_statements):
        eligible = [t for t in TEMPLATES if t.mechanism in mechanisms | {"basic"}
                    and all(any(n in defined for n in KINDS[k]) for k in t.needs)]
        template = draw(st.sampled_from(eligible))
        picker = _Picker(draw, defined)
        lines.append(template.render(picker))
        defined |= picker.bound
        defined -= picker.unbound - picker.bound
    return "\n".join(lines)


# --------------------------------------------------------------------------- files

@st.composite
def file_contents(draw: Callable[[st.SearchStrategy[Any]], Any], name: str) -> bytes:
    """Content for one of the DATA_FILES (each in the format the cells expect)."""
    if name == "table.csv":
        rows = draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=3))
        return ("x,y\n" + "".join(f"{x},{y}\n" for x, y in rows)).encode()
    if name == "arr.npy":
        buffer = io.BytesIO()
        np.save(buffer, np.arange(draw(st.integers(1, 4))) * draw(st.integers(1, 3)))
        return buffer.getvalue()
    if name == "helpers.py":
        level, op = draw(st.integers(1, 3)), draw(st.sampled_from(["x * LEVEL", "x + LEVEL"]))
        return f"LEVEL = {level}\n\n\ndef scale(x):\n    return {op}\n".encode()
    return draw(st.sampled_from([b"alpha beta", b"1 2 3", b"", b"x\ny\n"]))


# --------------------------------------------------------------------------- edits and sequences

def _show(name: str, content: bytes) -> str:
    """A file's content for a report: .npy files as the array they hold."""
    if name.endswith(".npy"):
        try:
            return f"np.save of {np.load(io.BytesIO(content))!r}"
        except (ValueError, OSError, EOFError):  # not an array file (any more)
            pass
    return repr(content)


Cells = list[tuple[str, str]]  # (cell id, source)


@dataclass(frozen=True)
class Edit:
    """One change between two runs, to the notebook or to a file of the working directory.

    ``index`` counts cells after the first (which edits never touch), modulo
    their number, so that an edit drawn for one notebook applies to any.
    """

    kind: str  # replace, insert, delete, move, comment, write, touch, remove
    index: int = 0
    target: int = 0  # move: where to
    cell_id: str = ""  # insert: the new cell's id
    source: str = ""  # replace, insert
    file: str = ""  # write, touch, remove
    content: bytes = b""  # write

    def apply(self, cells: Cells, workdir: Path) -> None:
        path = workdir / self.file
        if self.kind == "write":
            path.write_bytes(self.content)
        elif self.kind == "touch":
            if path.exists():
                stat = path.stat()
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        elif self.kind == "remove":
            path.unlink(missing_ok=True)
        elif self.kind == "insert":
            cells.insert(1 + self.index % len(cells), (self.cell_id, self.source))
        elif len(cells) > 1:
            i = 1 + self.index % (len(cells) - 1)
            if self.kind == "replace":
                cells[i] = (cells[i][0], self.source)
            elif self.kind == "comment":  # same code: must still be restored
                cells[i] = (cells[i][0], "# edited\n" + cells[i][1] + "  # still the same")
            elif self.kind == "delete":
                del cells[i]
            elif self.kind == "move":
                cells.insert(1 + self.target % (len(cells) - 1), cells.pop(i))

    def __str__(self) -> str:
        if self.kind in ("replace", "insert"):
            return f"{self.kind} cell #{self.index} with {self.source!r}"
        if self.kind == "move":
            return f"move cell #{self.index} to #{self.target}"
        if self.kind in ("comment", "delete"):
            return f"{self.kind} cell #{self.index}"
        if self.kind == "write":
            return f"write {self.file} = {_show(self.file, self.content)}"
        return f"{self.kind} {self.file}"


@dataclass(frozen=True)
class Step:
    """Edits, then a Run All: in a restarted kernel unless ``same_kernel``."""

    edits: tuple[Edit, ...]
    same_kernel: bool = False
    continue_on_error: bool = False  # Run All stops at the first error; cell by cell does not


@dataclass(frozen=True)
class Sequence:
    """Initial files and notebook, then steps; the first run is steps[0] (with no edits)."""

    files: tuple[tuple[str, bytes], ...]
    cells: tuple[tuple[str, str], ...]
    steps: tuple[Step, ...]


def _mechanism_edits(mechanisms: frozenset[str]) -> list[str]:
    kinds = ["replace", "insert", "delete", "move", "comment"]
    if mechanisms & {"file_reads", "file_writes", "modules", "effects"}:
        kinds += ["write", "touch", "remove"]
    return kinds


def _edited_files(mechanisms: frozenset[str]) -> list[str]:
    files = []
    if mechanisms & {"file_reads", "file_writes"}:
        files += ["data.txt", "table.csv", "arr.npy", "out.txt", "log.txt"]
    if "modules" in mechanisms:
        files.append("helpers.py")
    if "effects" in mechanisms:
        files.append("shell.txt")
    return files


@st.composite
def edits(draw: Callable[[st.SearchStrategy[Any]], Any], mechanisms: frozenset[str],
          defined: set[str], cell_id: str) -> Edit:
    kind = draw(st.sampled_from(_mechanism_edits(mechanisms)))
    index = draw(st.integers(0, 20))
    if kind in ("replace", "insert"):
        source = draw(cell_sources(mechanisms, defined))
        return Edit(kind, index, cell_id=cell_id, source=source)
    if kind == "move":
        return Edit(kind, index, target=draw(st.integers(0, 20)))
    if kind in ("write", "touch", "remove"):
        name = draw(st.sampled_from(_edited_files(mechanisms)))
        content = draw(file_contents(name)) if kind == "write" else b""
        return Edit(kind, file=name, content=content)
    return Edit(kind, index)


@st.composite
def sequences(draw: Callable[[st.SearchStrategy[Any]], Any], mechanisms: Collection[str] = MECHANISMS,
              max_cells: int = 6, max_steps: int = 3, max_edits: int = 2) -> Sequence:
    """A random notebook, its initial files, a first Run All, then 1..max_steps Run Alls,
    each after 0..max_edits edits."""
    mechanisms = frozenset(mechanisms)
    unknown = mechanisms - MECHANISMS
    assert not unknown, f"unknown mechanisms {sorted(unknown)}"
    files = [(name, draw(file_contents(name))) for name in DATA_FILES
             if name != "helpers.py" or "modules" in mechanisms]
    defined: set[str] = set()
    cells = [("c0", first_cell(mechanisms))]
    for number in _several(draw, 1, max_cells, odds=4):
        cells.append((f"c{number + 1}", draw(cell_sources(mechanisms, defined))))
    steps = [Step(())]
    for number in _several(draw, 1, max_steps):
        step_edits = tuple(draw(edits(mechanisms, defined, f"e{number + 1}.{k}"))
                           for k in _several(draw, 0, max_edits))
        steps.append(Step(step_edits, draw(st.booleans()), draw(st.booleans())))
    return Sequence(tuple(files), tuple(cells), tuple(steps))


# --------------------------------------------------------------------------- canonical state

_HISTORY = re.compile(r"^(_+|_\d+|_i+|_i\d+|_ih|_oh|_dh|In|Out)$")
_NOTEBOOK_MODULES = ("__main__", *LOCAL_MODULES)  # whose classes are described by content
# Class attributes that are not the class's content: ``__slotnames__`` is a cache
# that pickling an instance adds (copyreg), so a plain run may lack it.
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__",
                         "__slotnames__"})


def _code(code: types.CodeType) -> tuple[Any, ...]:
    """A function's code without where it was compiled (filename, line numbers)."""
    consts = tuple(_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return (code.co_name, code.co_argcount, code.co_varnames, code.co_names,
            code.co_freevars, code.co_code.hex(), consts)


class _Describer:
    """Canonical descriptions of a namespace's values, aliasing included.

    Values are visited in a fixed order (names sorted, containers in their
    order).  A mutable object is described by its content at its first visit
    and as ``("same object as", path)`` at every later one, the path being
    where it was first met (``xs``, ``d['v']``, ``obj.items``); an array also
    says which earlier array it shares memory with, and at what offset.  Two
    namespaces have equal descriptions exactly when they hold equal values
    with the same sharing.
    """

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.seen: dict[int, str] = {}  # id -> path of the first visit
        self.alive: list[Any] = []  # keeps those ids unique while describing
        self.arrays: list[tuple[np.ndarray, str]] = []

    def __call__(self, value: Any, path: str) -> Any:
        kind = type(value)
        if value is None:
            return None
        if kind in (bool, int, str, bytes):
            return (kind.__name__, value)
        if kind in (float, complex) or isinstance(value, np.generic):
            return (kind.__name__, repr(value))
        if kind is tuple:
            return ("tuple", [self(v, f"{path}[{i}]") for i, v in enumerate(value)])
        if value is self.namespace:
            return ("the namespace",)
        if id(value) in self.seen:
            return ("same object as", self.seen[id(value)])
        self.seen[id(value)] = path
        self.alive.append(value)
        return self._content(value, path)

    def _items(self, pairs: Iterable[tuple[str, Any]], path: str) -> list[Any]:
        """Attributes (name, description), as met at ``path.name``."""
        return [(k, self(v, f"{path}.{k}")) for k, v in pairs]

    def _content(self, value: Any, path: str) -> tuple[Any, ...]:
        if isinstance(value, list):
            return ("list", [self(v, f"{path}[{i}]") for i, v in enumerate(value)])
        if isinstance(value, dict):
            return ("dict", [(self(k, f"{path}.<key>"), self(v, f"{path}[{k!r}]"))
                             for k, v in value.items()])
        if isinstance(value, (set, frozenset)):
            return (type(value).__name__, sorted(repr(self(v, f"{path}.<item>")) for v in value))
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, pd.DataFrame):
            return ("DataFrame", repr(value.to_dict(orient="split")), [str(t) for t in value.dtypes])
        if isinstance(value, pd.Series):
            return ("Series", value.name, repr(value.to_dict()), str(value.dtype))
        if isinstance(value, types.FunctionType):
            return ("function", value.__module__, value.__qualname__, _code(value.__code__),
                    self(value.__defaults__, f"{path}.__defaults__"),
                    self(value.__kwdefaults__, f"{path}.__kwdefaults__"),
                    [self(c.cell_contents, f"{path}.<closure {i}>")
                     for i, c in enumerate(value.__closure__ or ())],
                    self._globals(value))
        if isinstance(value, type):
            if value.__module__ not in _NOTEBOOK_MODULES:
                return ("type", value.__module__, value.__qualname__)
            return ("class", value.__module__, value.__qualname__,
                    [self(b, f"{path}.<base>") for b in value.__bases__],
                    self._items(sorted((k, v) for k, v in vars(value).items() if k not in _CLASS_SKIP),
                                path))
        if isinstance(value, types.ModuleType):
            if value.__name__ not in LOCAL_MODULES:
                return ("module", value.__name__)
            return ("module", value.__name__,
                    self._items(sorted((k, v) for k, v in vars(value).items() if not k.startswith("__")),
                                path))
        if isinstance(value, np.random.Generator):
            return ("Generator", self(value.bit_generator.state, f"{path}.<state>"))
        if isinstance(value, types.GeneratorType):
            return ("generator", value.__qualname__, inspect.getgeneratorstate(value),
                    self._items(sorted(inspect.getgeneratorlocals(value).items()), f"{path}.<locals>"))
        if hasattr(value, "locked") and hasattr(value, "acquire"):
            return ("lock", value.locked())
        if type(value).__module__ in _NOTEBOOK_MODULES:
            return ("instance", self(type(value), f"{path}.<class>"),
                    self._items(getattr(value, "__dict__", {}).items(), path))
        shown = repr(value)
        return ("other", type(value).__qualname__, "" if " at 0x" in shown else shown)

    def _globals(self, function: types.FunctionType) -> Any:
        """The namespace, a module's globals, or a private dict (a stale snapshot)."""
        if function.__globals__ is self.namespace:
            return ("the namespace",)
        module = sys.modules.get(function.__module__)
        if module is not None and function.__globals__ is vars(module):
            return ("globals of", function.__module__)
        return ("private globals", sorted(function.__globals__))

    def _array(self, value: np.ndarray, path: str) -> tuple[Any, ...]:
        address = value.__array_interface__["data"][0]
        memory: tuple[Any, ...] = ("own memory",)
        for other, other_path in self.arrays:
            if np.shares_memory(value, other):
                memory = ("shares memory with", other_path,  # strides matter only then
                          address - other.__array_interface__["data"][0], value.strides, other.strides)
                break
        self.arrays.append((value, path))
        content = ([self(v, f"{path}.flat[{i}]") for i, v in enumerate(value.ravel().tolist())]
                   if value.dtype == object else repr(value.tolist()))  # repr: exact, and readable
        return ("ndarray", str(value.dtype), value.shape, content,
                "writeable" if value.flags.writeable else "read-only", memory)


def user_names(namespace: dict[str, Any], hidden: Collection[str] = ()) -> list[str]:
    """The names a notebook's cells bound: not dunders, IPython's history or ``hidden`` ones."""
    return sorted(n for n in namespace
                  if not n.startswith("__") and not _HISTORY.match(n) and n not in hidden)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe_files(directory: Path) -> dict[str, str]:
    """``{relative path: content}`` (short content verbatim, else a digest); caches excluded."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            data = path.read_bytes()
            found[path.relative_to(directory).as_posix()] = repr(data) if len(data) <= 80 else _digest(data)
    return found


def describe_state(namespace: dict[str, Any], directory: Path = Path("."),
                   hidden: Collection[str] = ()) -> dict[str, Any]:
    """Everything a later cell could observe: user names (values and sharing), files,
    the module random states, the environment variable and numpy's print options."""
    describe = _Describer(namespace)
    np_state = np.random.get_state()
    return {
        "namespace": {name: describe(namespace[name], name) for name in user_names(namespace, hidden)},
        "files": describe_files(directory),
        "random": _digest(repr(random.getstate()).encode()),
        "numpy.random": _digest(repr((np_state[0], np_state[1].tobytes(), *np_state[2:])).encode()),
        "environment": os.environ.get(ENV_VAR),
        "printoptions": repr(sorted(np.get_printoptions().items())),
    }


def first_difference(plain: dict[str, Any], tested: dict[str, Any]) -> str:
    """Where two :func:`describe_state` results first differ, both sides shown ('' if equal)."""
    for key in sorted(set(plain) | set(tested)):
        x, y = plain.get(key, "<absent>"), tested.get(key, "<absent>")
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):  # namespace, files: the first name
            name = next(n for n in sorted(set(x) | set(y))
                        if x.get(n, "<absent>") != y.get(n, "<absent>"))
            key, x, y = f"{key} `{name}`", x.get(name, "<absent>"), y.get(name, "<absent>")
        return f"{key}:\n      plain:    {x!r}\n      incrcell: {y!r}"
    return ""


# --------------------------------------------------------------------------- simulated kernels

#: A fresh kernel's random state: unpredictable in reality, a fixed one here
#: (not the notebook's seed, so that a missing seed shows).
_FRESH_SEED = 20240601
_DEFAULT_PRINTOPTIONS = np.get_printoptions()


@dataclass
class _ProcessState:
    """What a kernel process owns besides its namespace, and a restart resets."""

    random: Any = field(default_factory=lambda: random.Random(_FRESH_SEED).getstate())
    np_random: Any = field(default_factory=lambda: np.random.RandomState(_FRESH_SEED).get_state())
    environment: str | None = None
    printoptions: dict[str, Any] = field(default_factory=lambda: _DEFAULT_PRINTOPTIONS)
    modules: dict[str, types.ModuleType] = field(default_factory=dict)
    # incrcell's own memory of the local modules this process loaded (which code is in memory):
    # per process like sys.modules, so per simulated kernel
    imported: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def current(cls) -> _ProcessState:
        return cls(random.getstate(), np.random.get_state(), os.environ.get(ENV_VAR),
                   np.get_printoptions(), {n: sys.modules[n] for n in LOCAL_MODULES if n in sys.modules},
                   dict(packages._imported))

    def install(self) -> None:
        random.setstate(self.random)
        np.random.set_state(self.np_random)
        if self.environment is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = self.environment
        np.set_printoptions(**self.printoptions)
        for name in LOCAL_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(self.modules)
        packages._imported.clear()
        packages._imported.update(self.imported)


@dataclass(frozen=True)
class CellResult:
    """What a user sees of one cell: its stdout, its Out value, its exception."""

    cell_id: str
    stdout: str
    out: str | None  # repr of the Out value, None when there is none
    error: str | None  # the exception's type name
    how: str = field(default="", compare=False)  # incrcell: restored / ran (why), for reports


class Executor(Protocol):
    """A kernel to run notebooks in, in a fixed working directory: simulated or real."""

    #: True when it may run while another executor runs (a real kernel: another process).
    parallel: bool

    def restart(self) -> None: ...

    def run_all(self, cells: Cells, continue_on_error: bool) -> list[CellResult]: ...

    def state(self) -> dict[str, Any]:
        """:func:`describe_state` of the kernel now."""
        ...


class SimulatedKernel:
    """A kernel process simulated in this one, in ``cwd``; ``incrcell``: the engine drives it.

    The process state of :class:`_ProcessState`, the working directory,
    ``sys.path[0]`` and ``__main__`` are the kernel's only while it is
    :meth:`active`, so that two kernels can take turns.  A restart is a new
    Session (on the same cache directory) and a fresh process state.
    """

    parallel = False  # it borrows this process's state while active

    def __init__(self, cwd: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                 incrcell: bool) -> None:
        self.cwd, self.cache_dir, self.monkeypatch = cwd, cache_dir, monkeypatch
        self.incrcell = incrcell
        self.restart()

    def restart(self) -> None:
        self.session = Session(self.cache_dir, self.monkeypatch)
        self.process = _ProcessState()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer, cwd, main = _ProcessState.current(), os.getcwd(), sys.modules["__main__"]
        bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # a module edited within a second must not load stale
        os.chdir(self.cwd)
        sys.path.insert(0, str(self.cwd))
        sys.modules["__main__"] = self.session.module
        importlib.invalidate_caches()
        self.process.install()
        try:
            yield
        finally:
            self.process = _ProcessState.current()
            outer.install()
            sys.modules["__main__"] = main
            sys.path.remove(str(self.cwd))
            os.chdir(cwd)
            sys.dont_write_bytecode = bytecode

    def run(self, cell_id: str, source: str) -> CellResult:
        """Run one cell (the kernel must be active)."""
        if self.incrcell:
            outcome = self.session.run(source, cell_id)
            return _result(cell_id, outcome.shown, outcome.value, outcome.error, _how(outcome))
        self.session.count += 1
        ran = run_code(source, self.session.ns, f"<cell {self.session.count}>")
        return _result(cell_id, ran.stdout, ran.value, ran.error, "")

    def run_all(self, cells: Cells, continue_on_error: bool) -> list[CellResult]:
        results = []
        with self.active():
            for cell_id, source in cells:
                results.append(self.run(cell_id, source))
                if results[-1].error and not continue_on_error:
                    break
        return results

    def state(self) -> dict[str, Any]:
        with self.active():
            return describe_state(self.session.ns, self.cwd)


def _result(cell_id: str, stdout: str, value: Any, error: BaseException | None, how: str) -> CellResult:
    return CellResult(cell_id, stdout, None if value is None else repr(value),
                      None if error is None else type(error).__name__, how)


def _how(outcome: Outcome) -> str:
    return outcome.record.state + (f" ({outcome.record.reason})" if outcome.record.reason else "")


# --------------------------------------------------------------------------- the check

class Divergence(AssertionError):
    """incrcell and a plain run disagree; the message is the whole story."""


def check(sequence: Sequence, work: Path, mirror: Path, tested: Executor, plain: Executor) -> None:
    """Run ``sequence`` in ``tested`` and ``plain``; raise Divergence at the first difference.

    ``tested`` works in ``work``, where edits apply and files persist across
    runs; ``plain`` works in ``mirror``, made a copy of ``work`` before each
    run so that both start from the same files.  Both directories exist
    and are emptied first.
    """
    for directory in (work, mirror):
        _empty(directory)
    for name, content in sequence.files:
        (work / name).write_bytes(content)
    cells = list(sequence.cells)
    history = ["files at the start:"] + [f"    {name} = {_show(name, content)}"
                                         for name, content in sequence.files]
    for number, step in enumerate(sequence.steps, 1):
        for edit in step.edits:
            edit.apply(cells, work)
        _empty(mirror)
        shutil.copytree(work, mirror, dirs_exist_ok=True)
        if number == 1 or not step.same_kernel:
            _both(tested, plain, lambda kernel: kernel.restart())
        got, expected = _both(tested, plain, lambda kernel: kernel.run_all(cells, step.continue_on_error))
        history.append(_report_run(number, step, cells, got))
        where = _first_cell_difference(expected, got)
        if not where:
            state, expected_state = _both(tested, plain, lambda kernel: kernel.state())
            where = first_difference(expected_state, state)
        if where:
            raise Divergence(f"run {number} diverges: {where}\n\n" + "\n".join(history))


def _report_run(number: int, step: Step, cells: Cells, results: list[CellResult]) -> str:
    """One run for a report: its edits, then each cell with what incrcell did and its source."""
    how = {r.cell_id: r.how or "ran" for r in results}
    lines = [f"run {number} ({'same kernel' if step.same_kernel else 'restart'}"
             f"{', continue on error' if step.continue_on_error else ''}):"]
    lines += [f"  edit: {edit}" for edit in step.edits]
    for cell_id, source in cells:
        lines.append(f"  [{cell_id}] {how.get(cell_id, 'not run')}")
        lines += ["      " + line for line in source.splitlines()]
    return "\n".join(lines)


def _both(tested: Executor, plain: Executor, call: Callable[[Executor], Any]) -> tuple[Any, Any]:
    """``call`` on both executors, at the same time when both allow it."""
    if not (tested.parallel and plain.parallel):
        return call(tested), call(plain)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = pool.submit(call, tested), pool.submit(call, plain)
        return futures[0].result(), futures[1].result()


def check_in_process(sequence: Sequence, root: Path, incrcell: bool = True) -> None:
    """:func:`check` with simulated kernels under ``root`` (``incrcell=False``: plain against plain)."""
    work, mirror, cache = root / "work", root / "plain", root / "cache"
    with pytest.MonkeyPatch.context() as monkeypatch:
        check(sequence, work, mirror, SimulatedKernel(work, cache, monkeypatch, incrcell),
              SimulatedKernel(mirror, cache, monkeypatch, False))


def _empty(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _first_cell_difference(expected: list[CellResult], got: list[CellResult]) -> str:
    for plain, tested in zip(expected, got):
        if plain != tested:
            return f"cell {plain.cell_id}:\n      plain:    {plain}\n      incrcell: {tested}"
    if len(expected) != len(got):
        return f"plain ran {len(expected)} cells, incrcell {len(got)}"
    return ""
