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
import functools
import hashlib
import importlib
import inspect
import io
import json
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import types
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st
from IPython.core.interactiveshell import _modified_open

from incrcell import packages

from harness import Outcome, Session, run_code

# --------------------------------------------------------------------------- mechanisms

#: Every mechanism the generator can exercise; plain assignments, prints and
#: Out values ("basic") are always on.
MECHANISMS = frozenset(
    {
        "mutation",  # lst.append, d.update, arr[0] = ..., obj.attr = ...
        "aliases",  # b = a, views, containers holding another name's object, class attributes
        "functions",  # functions reading globals, mutating arguments, writing globals
        "classes",  # a class defined in a cell, instances made and changed later
        "file_reads",  # open(...).read(), np.load, pd.read_csv, and edits of those files
        "file_writes",  # open(..., 'w'/'a'), np.save, df.to_csv, os.remove
        "random",  # random / numpy legacy global state: seeds and draws; numpy Generators
        "modules",  # a local module helpers.py, imported, edited, its attributes set
        "effects",  # environment variables, numpy print options, a shell command writing a file
        "dynamic",  # globals(), eval, exec, setattr
        "unpicklable",  # generators, locks
        "errors",  # exceptions, some after partial mutation
        "delete",  # del
        "pandas",  # DataFrames, their columns set in place
        # issue 9: what a cell reaches without naming it
        "helper_reads",  # files read inside functions from earlier cells and from helpers.py
        "native",  # files read and written by native code: parquet (pyarrow), sqlite3
        "directories",  # os.listdir, glob; makedirs, rename of a directory, rmtree, copytree
        "exists",  # os.path.exists / getsize / stat: "load it if saved, else compute and save"
        "sys_path",  # sys.path.insert, then importing a vendored module, its attributes set
        "module_state",  # module attributes set (local module, json) and read through functions; pandas options
        "views",  # writes through a column view of a matrix, through a tuple's shared list
        "lossy",  # instances of a class whose __getstate__ drops a field
        "library",  # library values whose pickle drops or rebuilds state: Bunch, masked arrays
        "closures",  # two closures sharing a nonlocal, changed by calls
        "memo",  # functools.lru_cache memos filled by calls (and printing when they compute)
        "unseeded",  # draws from global generators the notebook never seeded (simulated kernels only)
        "cwd",  # the working directory read; the notebook moved between runs (simulated kernels only)
        "magics",  # %%capture of prints and Out values (real kernels only)
        "streams",  # stdout and stderr interleaved within a cell (real kernels only)
        # quick cells (incrcell/quick.py): plain-value arithmetic, f-strings, builtins; and
        # what must not pass for it: an int subclass whose + changes a list, a shadowed len
        "quick",
    }
)
#: Mechanisms only real kernels run: the simulated kernel runs plain Python and captures stdout only.
REAL_ONLY = frozenset({"magics", "streams"})
#: Mechanisms only simulated kernels run: a real kernel's fresh random state is truly
#: unpredictable, while a simulated one draws a fixed fresh state per restart (see SimulatedKernel).
SIMULATED_ONLY = frozenset({"unseeded", "cwd"})
#: The environment variable that restricts the mechanisms the tests draw from (comma-separated).
MECHANISMS_ENV = "INCRCELL_DIFF_MECHANISMS"


def selected_mechanisms(environ: dict[str, str] | None = None) -> frozenset[str]:
    """The mechanisms named in ``$INCRCELL_DIFF_MECHANISMS`` (all when unset or empty)."""
    value = (os.environ if environ is None else environ).get(MECHANISMS_ENV, "")
    chosen = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = chosen - MECHANISMS
    assert not unknown, f"{MECHANISMS_ENV}: unknown mechanisms {sorted(unknown)}"
    return chosen or MECHANISMS


# Names a cell may bind, by kind: templates use names of a kind defined earlier.
# Names with a dot are not bound in the namespace: they record that a cell set that
# module attribute (or put that directory on sys.path), for the templates that read it.
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
    "where": ("where",),
    "loader": ("load",),
    "table_loader": ("load_table",),
    "query": ("query",),
    "vendor_path": ("sys.path.vendor",),
    "vendored": ("vendored",),
    "flag": ("json.flag",),
    "flagged": ("flagged",),
    "matrix": ("m",),
    "column": ("col", "row"),
    "pair": ("pair",),
    "lossy_class": ("Memo",),
    "memo": ("memo",),
    "counter": ("counter",),
    "bump": ("bump",),
    "slow": ("slow",),
    "captured": ("cap",),
    "bunch": ("bunch",),
    "masked": ("ma",),
    "sneaky": ("sneaky",),
}

#: Modules a notebook imports from its working directory (a kernel restart forgets them).
LOCAL_MODULES = ("helpers", "vendored", "place")
#: A local module of the "cwd" mechanism: it reads where it is, when imported.
PLACE = "place.py"
PLACE_SOURCE = b"import os\n\nHOME = os.path.basename(os.path.dirname(os.path.abspath(__file__)))\n"
#: The directory a cell puts on sys.path, and the module it holds.
VENDOR = "vendor/vendored.py"
#: The names of the notebook's directory, the first its start (the "cwd" mechanism).
RELOCATIONS = ("nb", "nb2", "nb3")

#: The environment variable cells may set: a restart resets it.
ENV_VAR = "INCRCELL_DIFF_MODE"
#: The attribute cells set on a library module (json): a restart forgets it.
LIBRARY_FLAG = "flag"
#: The pandas option cells may set: a restart resets it.
PANDAS_OPTION = "display.precision"
#: Files cells read and write, and edits change (directories: created by cells and edits).
DATA_FILES = (
    "data.txt",
    "table.csv",
    "arr.npy",
    "helpers.py",
    "out.txt",
    "log.txt",
    "shell.txt",
    "t.parquet",
    "shop.db",
    VENDOR,
    "part-1.txt",
    PLACE,
)
#: Which mechanisms need which initial files (the others always exist).
_FILES_OF = {
    "helpers.py": {"modules", "helper_reads", "module_state"},
    "t.parquet": {"native"},
    "shop.db": {"native"},
    VENDOR: {"sys_path"},
    "part-1.txt": {"directories"},
    PLACE: {"cwd"},
}


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

    def marks(self, name: str) -> str:
        """Record that the cell set ``name`` (a module attribute, a sys.path entry); renders as ''."""
        self.bound.add(name)
        return ""

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
    _t(
        "basic",
        "list num",
        lambda p: f"{p.new('list')} = [x * {p.use('num')} for x in {p.use('list')}]",
    ),
    _t(
        "basic",
        "num",
        lambda p: f"{p.binds('d')} = {{'k': {p.use('num')}, 'v': [{p.int()}, {p.int()}]}}",
    ),
    _t(
        "basic",
        "num",
        lambda p: f"{p.binds('arr')} = np.arange({p.int(1, 5)}, dtype=float) * {p.use('num')}",
    ),
    _t("basic", "", lambda p: f"{p.binds('arr')} = np.linspace(0, 1, {p.int(2, 6)})"),
    _t("basic", "num list", lambda p: f"print({p.use('num')}, {p.use('list')})"),
    _t("basic", "array", lambda p: f"print({p.use('array')})"),
    _t("basic", "dict", lambda p: "d"),
    _t("basic", "num", lambda p: f"{p.use('num')} + {p.int()}"),
    _t("basic", "list", lambda p: p.use("list")),
    _t("basic", "array", lambda p: f"{p.use('array')}.sum()"),
    _t(
        "basic",
        "list array",
        lambda p: f"{p.new('num')} = len({p.use('list')}) + int({p.use('array')}.sum())",
    ),
    # quick cells, and cells shaped like them that are not
    _t("quick", "num", lambda p: f"{p.new('num')} = round({p.use('num')} / {p.int(1, 9)}, 2)"),
    _t("quick", "num", lambda p: f"{p.binds('text')} = f'{{{p.use('num')}:>4}} rows'"),
    _t("quick", "num", lambda p: f"print(f'{{{p.use('num')}}} rows', max({p.use('num')}, 3))"),
    _t("quick", "num", lambda p: f"{p.use('num')} += {p.use('num')} % {p.int(1, 9)}"),
    _t(
        "quick",
        "list",
        lambda p: (
            "class Sneaky(int):\n    def __add__(self, other):\n"
            f"        {p.use('list')}.append(other)\n        return int(self) + other\n"
            f"{p.binds('sneaky')} = Sneaky({p.int()})"
        ),
    ),
    _t("quick", "sneaky", lambda p: f"{p.new('num')} = sneaky + {p.int()}"),
    _t("quick", "", lambda p: f"len = lambda value: {p.int()}"),
    _t("quick", "text", lambda p: f"{p.new('num')} = len(text)"),
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
    _t(
        "aliases",
        "array",
        lambda p: (
            f"{p.new('array')} = {p.use('array')}{p.choice(('[::2]', '[1:]', '.reshape(-1)', ''))}"
        ),
    ),
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
    _t(
        "functions",
        "num",
        lambda p: f"def {p.binds('h')}():\n    global c\n    c = {p.use('num')} * 2",
    ),
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
    _t(
        "file_writes",
        "list",
        lambda p: f"open('data.txt', 'w').write(' '.join(map(str, {p.use('list')})))",
    ),
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
    _t(
        "unpicklable", "num", lambda p: f"{p.binds('gen')} = (i * {p.use('num')} for i in range(3))"
    ),
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
    _t(
        "pandas",
        "",
        lambda p: (
            f"{p.new('frame')} = pd.DataFrame({{'x': [1, 2, 3], 'y': [{p.int()}, 0.5, 2.0]}})"
        ),
    ),
    _t(
        "pandas",
        "frame num",
        lambda p: f"{p.use('frame')}['z'] = {p.use('frame')}['x'] * {p.use('num')}",
    ),
    _t("pandas", "frame", lambda p: f"{p.use('frame')}.loc[0, 'x'] = {p.int()}"),
    _t("pandas", "frame", lambda p: f"{p.new('num')} = int({p.use('frame')}['x'].sum())"),
    _t("pandas", "frame", lambda p: f"print({p.use('frame')})"),
    _t("pandas", "frame", lambda p: p.use("frame")),
    _t("pandas", "frame", lambda p: f"{p.new('frame')} = {p.use('frame')}.copy()"),
    # files read by functions from earlier cells and by a local module's functions
    _t(
        "helper_reads",
        "",
        lambda p: (
            f"def {p.binds('load')}():\n    with open('data.txt') as f:\n        return f.read()"
        ),
    ),
    _t(
        "helper_reads",
        "",
        lambda p: f"def {p.binds('load_table')}():\n    return pd.read_csv('table.csv')",
    ),
    _t("helper_reads", "loader", lambda p: f"{p.binds('text')} = load()"),
    _t("helper_reads", "loader", lambda p: f"{p.new('num')} = len(load().split())"),
    _t("helper_reads", "table_loader", lambda p: f"{p.new('frame')} = load_table()"),
    _t("helper_reads", "table_loader", lambda p: "print(load_table())"),
    _t(
        "helper_reads",
        "",
        lambda p: f"import {p.binds('helpers')}\n{p.binds('text')} = helpers.read_data()",
    ),
    # native readers and writers: pyarrow's parquet, sqlite3
    _t("native", "", lambda p: f"{p.new('frame')} = pd.read_parquet('t.parquet')"),
    _t("native", "frame", lambda p: f"{p.use('frame')}.to_parquet('t.parquet')"),
    _t(
        "native",
        "",
        lambda p: (
            f"def {p.binds('query')}():\n    con = sqlite3.connect('shop.db')\n"
            "    try:\n        return con.execute('select count(*), total(v) from t')"
            ".fetchone()\n    finally:\n        con.close()"
        ),
    ),
    _t("native", "query", lambda p: f"{p.new('num')} = query()[0]"),
    _t("native", "query", lambda p: "print(query())"),
    _t(
        "native",
        "",
        lambda p: (
            f"con = sqlite3.connect('shop.db')\n{p.new('list')} = "
            "[r[0] for r in con.execute('select v from t order by v')]\n"
            "con.close()\ndel con"
        ),
    ),
    _t(
        "native",
        "num",
        lambda p: (
            f"con = sqlite3.connect('shop.db')\n"
            f"con.execute('insert into t values (?)', ({p.use('num')},))\n"
            "con.commit()\ncon.close()\ndel con"
        ),
    ),
    # directories: listed, globbed, created, renamed, removed, copied
    _t("directories", "", lambda p: f"os.makedirs('runs/r{p.int(1, 3)}', exist_ok=True)"),
    _t("directories", "", lambda p: f"{p.new('list')} = sorted(os.listdir('runs'))"),
    _t("directories", "", lambda p: f"{p.new('list')} = sorted(glob.glob('part-*.txt'))"),
    _t(
        "directories",
        "",
        lambda p: f"{p.new('list')} = sorted(str(q) for q in pathlib.Path('.').glob('runs/*'))",
    ),
    _t(
        "directories",
        "num",
        lambda p: f"open('part-{p.int(1, 3)}.txt', 'w').write(str({p.use('num')}))",
    ),
    _t("directories", "", lambda p: "os.rename('runs', 'archive')"),
    _t("directories", "", lambda p: f"os.rename('runs/r{p.int(1, 3)}', 'runs/r{p.int(4, 5)}')"),
    _t("directories", "", lambda p: "shutil.rmtree('runs', ignore_errors=True)"),
    _t("directories", "", lambda p: "shutil.copytree('runs', 'backup', dirs_exist_ok=True)"),
    _t("directories", "", lambda p: "shutil.move('part-1.txt', 'runs')"),
    # existence and size checks without an open
    _t(
        "exists",
        "num",
        lambda p: (
            f"if os.path.exists('saved.npy'):\n    {p.binds('arr')} = np.load('saved.npy')\n"
            f"else:\n    arr = np.arange(3.0) * {p.use('num')}\n"
            "    np.save('saved.npy', arr)"
        ),
    ),
    _t(
        "exists",
        "",
        lambda p: f"{p.binds('text')} = 'saved' if os.path.exists('out.txt') else 'missing'",
    ),
    _t("exists", "", lambda p: f"{p.new('num')} = os.path.getsize('data.txt')"),
    _t("exists", "", lambda p: f"{p.new('num')} = pathlib.Path('data.txt').stat().st_size"),
    _t("exists", "", lambda p: f"{p.new('num')} = int(os.path.isfile('saved.npy'))"),
    # sys.path, a vendored module imported from it, its attributes
    _t("sys_path", "", lambda p: f"sys.path.insert(0, 'vendor'){p.marks('sys.path.vendor')}"),
    _t("sys_path", "vendor_path", lambda p: f"import {p.binds('vendored')}"),
    _t("sys_path", "vendored", lambda p: f"{p.new('num')} = vendored.version()"),
    _t("sys_path", "vendored", lambda p: f"vendored.V = {p.int()}"),
    _t("sys_path", "vendored", lambda p: "print(vendored.V)"),
    # module attributes set by cells, read directly and through functions; process-wide options
    _t("module_state", "", lambda p: f"import {p.binds('helpers')}\nhelpers.configure({p.int()})"),
    _t("module_state", "module", lambda p: f"{p.new('num')} = helpers.level()"),
    _t("module_state", "module", lambda p: f"helpers.LEVEL = {p.int()}"),
    _t("module_state", "", lambda p: f"json.{LIBRARY_FLAG} = {p.int()}{p.marks('json.flag')}"),
    _t("module_state", "flag", lambda p: f"print(json.{LIBRARY_FLAG})"),
    _t(
        "module_state",
        "",
        lambda p: f"def {p.binds('flagged')}():\n    return json.{LIBRARY_FLAG} * 2",
    ),
    _t("module_state", "flagged flag", lambda p: f"{p.new('num')} = flagged()"),
    _t("module_state", "", lambda p: f"pd.set_option('{PANDAS_OPTION}', {p.int(1, 4)})"),
    _t("module_state", "", lambda p: "print(pd.DataFrame({'v': [1 / 3, 2 / 3]}))"),
    # writes through views and shared sub-objects
    _t("views", "num", lambda p: f"{p.binds('m')} = np.ones((3, 3)) * {p.use('num')}"),
    _t("views", "matrix num", lambda p: f"m[0, {p.int(0, 2)}] = {p.use('num')}"),
    _t("views", "matrix", lambda p: f"{p.binds('col')} = m[:, {p.int(0, 2)}]"),
    _t("views", "matrix", lambda p: f"{p.binds('row')} = m[{p.int(0, 2)}]"),
    _t("views", "column", lambda p: f"{p.use('column')} *= {p.int(2, 4)}"),
    _t("views", "column num", lambda p: f"{p.use('column')}[{p.int(0, 2)}] = {p.use('num')}"),
    _t("views", "matrix", lambda p: "print(m)"),
    _t("views", "list", lambda p: f"{p.binds('pair')} = ({p.use('list')}, [{p.int()}])"),
    _t("views", "pair num", lambda p: f"pair[{p.int(0, 1)}].append({p.use('num')})"),
    # an instance whose pickle drops a field
    _t("lossy", "", lambda p: LOSSY_CLASS.format(name=p.binds("Memo"))),
    _t("lossy", "lossy_class num", lambda p: f"{p.binds('memo')} = Memo({p.use('num')})"),
    _t("lossy", "memo num", lambda p: f"memo.cache[{p.int(0, 2)}] = {p.use('num')}"),
    _t("lossy", "memo", lambda p: "print(memo.v, sorted(memo.cache.items()))"),
    _t("lossy", "memo", lambda p: f"{p.new('num')} = len(memo.cache) + memo.v"),
    # library values whose stored copy hashes otherwise (scikit-learn's Bunch drops its
    # __dict__ on load, a masked array fills in its fill_value): read and changed after
    _t(
        "library",
        "num",
        lambda p: (
            f"from sklearn.utils import Bunch\n{p.binds('bunch')} = "
            f"Bunch(data=np.arange({p.int(1, 4)}) * {p.use('num')}, name='b{p.int()}')"
        ),
    ),
    _t("library", "bunch num", lambda p: f"bunch['extra'] = {p.use('num')}"),
    _t("library", "bunch num", lambda p: f"bunch.data[0] = {p.use('num')}"),
    _t("library", "bunch", lambda p: "print(sorted(bunch), bunch.data.sum())"),
    _t("library", "bunch", lambda p: f"{p.new('num')} = int(bunch.data.sum()) + len(bunch)"),
    _t(
        "library",
        "num",
        lambda p: (
            f"{p.binds('ma')} = np.ma.masked_array(np.arange(3.0) * {p.use('num')}, "
            f"mask=[{p.choice(('True', 'False'))}, False, {p.choice(('True', 'False'))}])"
        ),
    ),
    _t("library", "masked num", lambda p: f"ma[{p.int(0, 2)}] = {p.use('num')}"),
    _t("library", "masked", lambda p: "print(ma, ma.filled(-1))"),
    _t("library", "masked", lambda p: f"{p.new('num')} = float(ma.sum())"),
    # closures sharing a nonlocal
    _t("closures", "", lambda p: COUNTER.format(name=p.binds("counter"))),
    _t("closures", "counter num", lambda p: f"{p.binds('bump')}, peek = counter({p.use('num')})"),
    _t("closures", "bump", lambda p: f"{p.new('num')} = bump()"),
    _t("closures", "bump", lambda p: "print(peek())"),
    # functools.lru_cache memos
    _t(
        "memo",
        "num",
        lambda p: (
            f"@functools.lru_cache(maxsize=None)\ndef {p.binds('slow')}(x):\n"
            f"    print('computing', x)\n    return x * {p.use('num')}"
        ),
    ),
    _t("memo", "slow", lambda p: f"{p.new('num')} = slow({p.int(0, 2)})"),
    _t("memo", "slow", lambda p: "print(slow.cache_info())"),
    # global generators never seeded (the first cell seeds nothing): fresh entropy
    _t("unseeded", "", lambda p: f"{p.new('num')} = float(np.random.rand())"),
    # the working directory, read directly or as the base of a relative path made absolute
    _t("cwd", "", lambda p: f"{p.binds('where')} = os.path.basename(os.getcwd())"),
    _t("cwd", "", lambda p: f"{p.binds('where')} = pathlib.Path.cwd().name"),
    _t("cwd", "", lambda p: f"{p.binds('where')} = pathlib.Path('data.txt').resolve().parent.name"),
    _t(
        "cwd",
        "",
        lambda p: f"{p.binds('where')} = os.path.basename(os.path.dirname(os.path.abspath('x')))",
    ),
    _t("cwd", "where", lambda p: f"print({p.use('where')})"),
    _t("cwd", "", lambda p: f"import place\n{p.binds('where')} = place.HOME"),
    _t("unseeded", "", lambda p: f"import numpy\n{p.binds('arr')} = numpy.random.rand(2)"),
    _t("unseeded", "", lambda p: f"{p.new('num')} = random.randint(0, 99)"),
    # code run by a cell magic: part of its cell (real kernels only)
    _t("magics", "num", lambda p: f"%%capture {p.binds('cap')}\nprint({p.use('num')})"),
    _t("magics", "num", lambda p: f"%%capture {p.binds('cap')}\n{p.use('num')} * 2"),
    _t("magics", "captured", lambda p: "print(repr(cap.stdout), len(cap.outputs))"),
    # stdout and stderr in one cell, flushed in between (real kernels only)
    _t(
        "streams",
        "num",
        lambda p: (
            f"print('out', {p.use('num')}, flush=True)\n"
            f"print('err', {p.use('num')}, file=sys.stderr, flush=True)"
        ),
    ),
    _t("streams", "", lambda p: f"sys.stderr.write('warning {p.int()}\\n')\nsys.stderr.flush()"),
)

LOSSY_CLASS = """class {name}:
    def __init__(self, v):
        self.v = v
        self.cache = {{}}

    def __getstate__(self):
        return {{'v': self.v}}

    def __setstate__(self, state):
        self.__dict__.update(state, cache={{}})"""

COUNTER = """def {name}(start):
    n = start

    def bump():
        nonlocal n
        n += 1
        return n

    def peek():
        return n

    return bump, peek"""


def first_cell(seeded: bool = True) -> str:
    """The notebook's first cell: imports, and seeds (unless ``seeded`` is false: the
    "unseeded" mechanism).

    A fresh kernel's random state is unpredictable; seeding first makes a
    plain run deterministic, and the random states comparable (a real
    kernel's fresh states differ from another's).  Edits never touch this cell.
    """
    source = (
        "import functools, glob, json, os, pathlib, random, shutil, sqlite3, sys, threading\n"
        "import numpy as np\nimport pandas as pd"
    )
    if seeded:
        source += "\nrandom.seed(0)\nnp.random.seed(0)"
    return source


def _several(
    draw: Callable[[st.SearchStrategy[Any]], Any], low: int, high: int, odds: int = 1
) -> Iterator[int]:
    """``range(high)``, cut short after ``low`` items by a drawn "one more?" (odds:1 for yes).

    Hypothesis shrinks this by deleting any one item's draws; a count drawn
    up front would only shrink from the end, keeping irrelevant cells.
    """
    for index in range(high):
        if index >= low and draw(st.integers(0, odds)) == 0:
            return
        yield index


@st.composite
def cell_sources(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    mechanisms: frozenset[str],
    defined: set[str],
    max_statements: int = 2,
) -> str:
    """One cell of 1..max_statements templates; updates ``defined`` with what it binds."""
    lines = []
    for _ in _several(draw, 1, max_statements):
        eligible = [
            t
            for t in TEMPLATES
            if t.mechanism in mechanisms | {"basic"}
            and all(any(n in defined for n in KINDS[k]) for k in t.needs)
            and not (t.mechanism == "magics" and lines and lines[0].startswith("%%"))
        ]
        template = draw(st.sampled_from(eligible))
        picker = _Picker(draw, defined)
        line = template.render(picker)
        # a cell magic must be the cell's first line: the other statements become its body
        if line.startswith("%%"):
            lines.insert(0, line)
        else:
            lines.append(line)
        defined |= picker.bound
        defined -= picker.unbound - picker.bound
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


@st.composite
def file_contents(draw: Callable[[st.SearchStrategy[Any]], Any], name: str) -> bytes:
    """Content for one of the DATA_FILES (each in the format the cells expect)."""
    if name == "table.csv":
        rows = draw(
            st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=3)
        )
        return ("x,y\n" + "".join(f"{x},{y}\n" for x, y in rows)).encode()
    if name == "arr.npy":
        buffer = io.BytesIO()
        np.save(buffer, np.arange(draw(st.integers(1, 4))) * draw(st.integers(1, 3)))
        return buffer.getvalue()
    if name == "helpers.py":
        level, op = draw(st.integers(1, 3)), draw(st.sampled_from(["x * LEVEL", "x + LEVEL"]))
        return helpers_source(level, op).encode()
    if name in ("t.parquet", "shop.db"):
        values = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
        return parquet_file(values) if name == "t.parquet" else sqlite_file(values)
    if name == VENDOR:
        return f"V = {draw(st.integers(1, 3))}\n\n\ndef version():\n    return V\n".encode()
    if name == PLACE:
        return PLACE_SOURCE
    if name == "saved.npy":
        buffer = io.BytesIO()
        np.save(buffer, np.arange(draw(st.integers(1, 4)), dtype=float))
        return buffer.getvalue()
    return draw(st.sampled_from([b"alpha beta", b"1 2 3", b"", b"x\ny\n"]))


def helpers_source(level: int = 2, op: str = "x * LEVEL") -> str:
    """helpers.py: a global, a function reading it, one setting it, one reading a file."""
    return (
        f"LEVEL = {level}\n\n\ndef scale(x):\n    return {op}\n\n\n"
        "def level():\n    return LEVEL\n\n\n"
        "def configure(n):\n    global LEVEL\n    LEVEL = n\n\n\n"
        "def read_data():\n    with open('data.txt') as f:\n        return f.read()\n"
    )


@functools.cache
def parquet_file(values: tuple[int, ...]) -> bytes:
    """A parquet file (pyarrow) of a frame with columns x (``values``) and y."""
    buffer = io.BytesIO()
    pd.DataFrame({"x": list(values), "y": [v * 0.5 for v in values]}).to_parquet(buffer)
    return buffer.getvalue()


def _sqlite_rows(content: bytes) -> list[int]:
    """The values of table t in a sqlite database file's ``content``."""
    con = sqlite3.connect(":memory:")
    try:
        con.deserialize(content)
        return [row[0] for row in con.execute("select v from t")]
    finally:
        con.close()


@functools.cache
def sqlite_file(values: tuple[int, ...]) -> bytes:
    """A sqlite database with one table ``t(v integer)`` holding ``values``."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "shop.db"
        con = sqlite3.connect(path)
        con.execute("create table t (v integer)")
        con.executemany("insert into t values (?)", [(v,) for v in values])
        con.commit()
        con.close()
        return path.read_bytes()


# --------------------------------------------------------------------------- edits and sequences


def _show(name: str, content: bytes) -> str:
    """A file's content for a report: .npy files as the array they hold."""
    if name.endswith(".npy"):
        try:
            return f"np.save of {np.load(io.BytesIO(content))!r}"
        except (ValueError, OSError, EOFError):  # not an array file (any more)
            pass
    if name.endswith(".parquet"):
        try:
            return f"parquet of {pd.read_parquet(io.BytesIO(content)).to_dict(orient='list')!r}"
        except (ValueError, OSError):
            pass
    if name.endswith(".db"):
        try:
            return f"sqlite database of {_sqlite_rows(content)!r}"
        except sqlite3.Error:
            pass
    if len(content) > 120:
        return f"{len(content)} bytes, {_digest(content)}"
    return repr(content)


Cells = list[tuple[str, str]]  # (cell id, source)


def _make_way(directory: Path, workdir: Path) -> None:
    """Make ``directory`` (inside ``workdir``) exist, as a user would: a file a cell left
    where a directory goes (``shutil.move(f, 'runs')``) is removed first."""
    for part in [*reversed(directory.relative_to(workdir).parents), directory.relative_to(workdir)]:
        place = workdir / part
        if place != workdir and (place.is_symlink() or (place.exists() and not place.is_dir())):
            place.unlink()
    directory.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Edit:
    """One change between two runs, to the notebook or to a file of the working directory.

    ``index`` counts cells after the first (which edits never touch), modulo
    their number, so that an edit drawn for one notebook applies to any.
    """

    kind: str  # replace, insert, delete, move, comment, write, touch, remove, mkdir, relocate
    index: int = 0
    target: int = 0  # move: where to
    cell_id: str = ""  # insert: the new cell's id
    source: str = ""  # replace, insert
    file: str = ""  # write, touch, remove
    content: bytes = b""  # write

    def apply(self, cells: Cells, workdir: Path) -> None:
        path = workdir / self.file
        if self.kind == "write":
            _make_way(path.parent, workdir)
            path.write_bytes(self.content)
        elif self.kind == "mkdir":
            _make_way(path, workdir)
        elif self.kind == "touch":
            if path.exists():
                stat = path.stat()
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        elif self.kind == "remove":
            if path.is_dir():
                shutil.rmtree(path)
            else:  # absent, or under a file (``runs`` written as a file): nothing there
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    path.unlink()
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

    def __repr__(self) -> str:
        shown = {
            k: getattr(self, k)
            for k in ("index", "target", "cell_id", "source", "file")
            if getattr(self, k) != getattr(Edit, k)
        }
        if self.content:
            shown["content"] = _Shown(_show(self.file, self.content))
        return f"Edit({self.kind!r}, {', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def _repr_pretty_(
        self, printer: Any, cycle: bool
    ) -> None:  # hypothesis prints failing cases so
        printer.text(repr(self))

    def __str__(self) -> str:
        if self.kind in ("replace", "insert"):
            return f"{self.kind} cell #{self.index} with {self.source!r}"
        if self.kind == "move":
            return f"move cell #{self.index} to #{self.target}"
        if self.kind in ("comment", "delete"):
            return f"{self.kind} cell #{self.index}"
        if self.kind == "write":
            return f"write {self.file} = {_show(self.file, self.content)}"
        if self.kind == "relocate":
            return f"move the notebook's directory to {self.file}/"
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

    def __repr__(self) -> str:
        """Binary files as what they hold (a failure report, not a literal: the blob reproduces)."""
        files = tuple((name, _Shown(_show(name, content))) for name, content in self.files)
        return f"Sequence(files={files!r}, cells={self.cells!r}, steps={self.steps!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class _Shown(str):
    """A description standing for file content in a repr: shown without quotes."""

    def __repr__(self) -> str:
        return f"<{self}>"


def _mechanism_edits(mechanisms: frozenset[str]) -> list[str]:
    kinds = ["replace", "insert", "delete", "move", "comment"]
    if _edited_files(mechanisms):
        kinds += ["write", "touch", "remove"]
    if "directories" in mechanisms:
        kinds.append("mkdir")
    if "cwd" in mechanisms:
        kinds.append("relocate")
    return kinds


#: The files (and directories) edits change, by mechanism.
_EDITED = {
    "file_reads": ("data.txt", "table.csv", "arr.npy", "out.txt", "log.txt"),
    "file_writes": ("data.txt", "table.csv", "arr.npy", "out.txt", "log.txt"),
    "helper_reads": ("data.txt", "table.csv", "helpers.py"),
    "modules": ("helpers.py",),
    "module_state": ("helpers.py",),
    "effects": ("shell.txt",),
    "native": ("t.parquet", "shop.db"),
    "directories": ("part-1.txt", "part-2.txt", "runs", "runs/r1", "runs/r2", "archive"),
    "exists": ("saved.npy", "out.txt", "data.txt"),
    "sys_path": (VENDOR,),
}


def _edited_files(mechanisms: frozenset[str]) -> list[str]:
    return sorted({name for mechanism in mechanisms for name in _EDITED.get(mechanism, ())})


@st.composite
def edits(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    mechanisms: frozenset[str],
    defined: set[str],
    cell_id: str,
) -> Edit:
    kind = draw(st.sampled_from(_mechanism_edits(mechanisms)))
    index = draw(st.integers(0, 20))
    if kind in ("replace", "insert"):
        source = draw(cell_sources(mechanisms, defined))
        return Edit(kind, index, cell_id=cell_id, source=source)
    if kind == "move":
        return Edit(kind, index, target=draw(st.integers(0, 20)))
    if kind == "mkdir":
        return Edit(kind, file=f"runs/r{draw(st.integers(1, 5))}")
    if kind == "relocate":  # the directory's new name (its current one: nothing moves)
        return Edit(kind, file=draw(st.sampled_from(RELOCATIONS)))
    if kind in ("write", "touch", "remove"):
        names = _edited_files(mechanisms)
        if kind == "write":  # directories are made by mkdir
            names = [n for n in names if not n.startswith(("runs", "archive"))]
        name = draw(st.sampled_from(names))
        content = draw(file_contents(name)) if kind == "write" else b""
        return Edit(kind, file=name, content=content)
    return Edit(kind, index)


@st.composite
def sequences(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    mechanisms: Collection[str] = MECHANISMS,
    max_cells: int = 6,
    max_steps: int = 3,
    max_edits: int = 2,
) -> Sequence:
    """A random notebook, its initial files, a first Run All, then 1..max_steps Run Alls,
    each after 0..max_edits edits."""
    mechanisms = frozenset(mechanisms)
    unknown = mechanisms - MECHANISMS
    assert not unknown, f"unknown mechanisms {sorted(unknown)}"
    files = [
        (name, draw(file_contents(name)))
        for name in DATA_FILES
        if name not in _FILES_OF or _FILES_OF[name] & mechanisms
    ]
    defined: set[str] = set()
    seeded = "unseeded" not in mechanisms or draw(st.booleans())
    cells = [("c0", first_cell(seeded))]
    for number in _several(draw, 1, max_cells, odds=4):
        cells.append((f"c{number + 1}", draw(cell_sources(mechanisms, defined))))
    steps = [Step(())]
    for number in _several(draw, 1, max_steps):
        step_edits = tuple(
            draw(edits(mechanisms, defined, f"e{number + 1}.{k}"))
            for k in _several(draw, 0, max_edits)
        )
        steps.append(Step(step_edits, draw(st.booleans()), draw(st.booleans())))
    return Sequence(tuple(files), tuple(cells), tuple(steps))


# --------------------------------------------------------------------------- canonical state

_HISTORY = re.compile(r"^(_+|_\d+|_i+|_i\d+|_ih|_oh|_dh|In|Out)$")
_NOTEBOOK_MODULES = ("__main__", *LOCAL_MODULES)  # whose classes are described by content
# Class attributes that are not the class's content: ``__slotnames__`` is a cache
# that pickling an instance adds (copyreg), so a plain run may lack it.
_CLASS_SKIP = frozenset(
    {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__slotnames__"}
)


def _code(code: types.CodeType) -> tuple[Any, ...]:
    """A function's code without where it was compiled (filename, line numbers)."""
    consts = tuple(_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return (
        code.co_name,
        code.co_argcount,
        code.co_varnames,
        code.co_names,
        code.co_freevars,
        code.co_code.hex(),
        consts,
    )


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
            return (
                "dict",
                [(self(k, f"{path}.<key>"), self(v, f"{path}[{k!r}]")) for k, v in value.items()],
            )
        if isinstance(value, (set, frozenset)):
            return (type(value).__name__, sorted(repr(self(v, f"{path}.<item>")) for v in value))
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, pd.DataFrame):
            return (
                "DataFrame",
                repr(value.to_dict(orient="split")),
                [str(t) for t in value.dtypes],
            )
        if isinstance(value, pd.Series):
            return ("Series", value.name, repr(value.to_dict()), str(value.dtype))
        if isinstance(value, types.CellType):  # shared by the closures that hold it
            try:
                return ("cell", self(value.cell_contents, f"{path}.cell_contents"))
            except ValueError:
                return ("cell", "empty")
        if isinstance(value, functools._lru_cache_wrapper):  # the memo's fill is state too
            return (
                "lru_cache",
                self(value.__wrapped__, f"{path}.__wrapped__"),
                repr(value.cache_info()),
            )
        if type(value).__name__ == "CapturedIO":  # %%capture: what it holds, as a user reads it
            return (
                "captured",
                value.stdout,
                value.stderr,
                [repr(sorted(o.data.items())) for o in value.outputs],
            )
        if isinstance(value, types.FunctionType):
            return (
                "function",
                value.__module__,
                value.__qualname__,
                _code(value.__code__),
                self(value.__defaults__, f"{path}.__defaults__"),
                self(value.__kwdefaults__, f"{path}.__kwdefaults__"),
                [self(c, f"{path}.<closure {i}>") for i, c in enumerate(value.__closure__ or ())],
                self._globals(value),
            )
        if isinstance(value, type):
            if value.__module__ not in _NOTEBOOK_MODULES:
                return ("type", value.__module__, value.__qualname__)
            return (
                "class",
                value.__module__,
                value.__qualname__,
                [self(b, f"{path}.<base>") for b in value.__bases__],
                self._items(
                    sorted((k, v) for k, v in vars(value).items() if k not in _CLASS_SKIP), path
                ),
            )
        if isinstance(value, types.ModuleType):
            if value.__name__ not in LOCAL_MODULES:
                return ("module", value.__name__)
            return (
                "module",
                value.__name__,
                self._items(
                    sorted((k, v) for k, v in vars(value).items() if not k.startswith("__")), path
                ),
            )
        if isinstance(value, np.random.Generator):
            return ("Generator", self(value.bit_generator.state, f"{path}.<state>"))
        if isinstance(value, types.GeneratorType):
            return (
                "generator",
                value.__qualname__,
                inspect.getgeneratorstate(value),
                self._items(sorted(inspect.getgeneratorlocals(value).items()), f"{path}.<locals>"),
            )
        if hasattr(value, "locked") and hasattr(value, "acquire"):
            return ("lock", value.locked())
        if type(value).__module__ in _NOTEBOOK_MODULES:
            return (
                "instance",
                self(type(value), f"{path}.<class>"),
                self._items(getattr(value, "__dict__", {}).items(), path),
            )
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
                memory = (
                    "shares memory with",
                    other_path,  # strides matter only then
                    address - other.__array_interface__["data"][0],
                    value.strides,
                    other.strides,
                )
                break
        self.arrays.append((value, path))
        content = (
            [self(v, f"{path}.flat[{i}]") for i, v in enumerate(value.ravel().tolist())]
            if value.dtype == object
            else repr(value.tolist())
        )  # repr: exact, and readable
        return (
            "ndarray",
            str(value.dtype),
            value.shape,
            content,
            "writeable" if value.flags.writeable else "read-only",
            memory,
        )


def user_names(namespace: dict[str, Any], hidden: Collection[str] = ()) -> list[str]:
    """The names a notebook's cells bound: not dunders, IPython's history or ``hidden`` ones."""
    return sorted(
        n for n in namespace if not n.startswith("__") and not _HISTORY.match(n) and n not in hidden
    )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe_files(directory: Path) -> dict[str, str]:
    """``{relative path: content}`` (short content verbatim, else a digest; directories, empty
    or not, as "directory"); caches excluded."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        name = path.relative_to(directory).as_posix()
        if path.is_dir():
            found[name + "/"] = "directory"
        elif path.is_file():
            data = path.read_bytes()
            found[name] = repr(data) if len(data) <= 80 else _digest(data)
    return found


def describe_sys_path(directory: Path) -> list[str]:
    """The entries cells could have added to sys.path: relative ones, and absolute ones inside
    ``directory`` (made relative); the directory itself and the interpreter's are left out."""
    root = os.path.abspath(directory)
    entries = []
    for entry in sys.path:
        if not entry:
            continue
        if not os.path.isabs(entry):
            entries.append(entry)
        elif entry.startswith(root + os.sep):
            entries.append(os.path.relpath(entry, root))
    return entries


def describe_state(
    namespace: dict[str, Any], directory: Path = Path("."), hidden: Collection[str] = ()
) -> dict[str, Any]:
    """Everything a later cell could observe: user names (values and sharing), the local
    modules loaded and their attributes, the library module attribute cells set, sys.path
    additions, files and directories, the module random states, the environment variable,
    numpy's print options and the pandas option cells set."""
    describe = _Describer(namespace)
    np_state = np.random.get_state()
    names = {name: describe(namespace[name], name) for name in user_names(namespace, hidden)}
    modules = {
        name: describe(sys.modules[name], f"sys.modules[{name!r}]")
        for name in LOCAL_MODULES
        if name in sys.modules
    }  # after the namespace: a module it holds is described there
    return {
        "namespace": names,
        "local modules": modules,
        "json.flag": describe(vars(json).get(LIBRARY_FLAG), f"json.{LIBRARY_FLAG}"),
        "pandas option": pd.get_option(PANDAS_OPTION),
        "sys.path": describe_sys_path(directory),
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
            name = next(
                n for n in sorted(set(x) | set(y)) if x.get(n, "<absent>") != y.get(n, "<absent>")
            )
            key, x, y = f"{key} `{name}`", x.get(name, "<absent>"), y.get(name, "<absent>")
        return f"{key}:\n      plain:    {x!r}\n      incrcell: {y!r}"
    return ""


# --------------------------------------------------------------------------- simulated kernels

#: A fresh kernel's random state: unpredictable in reality, here a fixed one for each
#: restart (``_FRESH_SEED`` plus the number of restarts before), the same in both kernels
#: of a check: not the notebook's seed, so that a missing seed shows, and another one
#: after every restart, so that replaying an earlier kernel's unseeded draws shows.
_FRESH_SEED = 20240601
_DEFAULT_PRINTOPTIONS = np.get_printoptions()
_DEFAULT_PANDAS_OPTION = pd.get_option(PANDAS_OPTION)
_MISSING = object()
#: What IPython puts in a user namespace besides the history (hidden from ``who``): its own
#: ``open``, which calls the ``io.open`` of when IPython was imported, not ``builtins.open``.
_IPYTHON_NAMESPACE = {"open": _modified_open}


@dataclass
class _ProcessState:
    """What a kernel process owns besides its namespace, and a restart resets."""

    random: Any
    np_random: Any
    path: list[str]  # sys.path
    environment: str | None = None
    printoptions: dict[str, Any] = field(default_factory=lambda: _DEFAULT_PRINTOPTIONS)
    pandas_option: Any = _DEFAULT_PANDAS_OPTION
    flag: Any = _MISSING  # json's attribute
    modules: dict[str, types.ModuleType] = field(default_factory=dict)
    # incrcell's own memory of the local modules this process loaded (which code is in memory):
    # per process like sys.modules, so per simulated kernel
    imported: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fresh(cls, seed: int, cwd: Path) -> _ProcessState:
        """A new kernel's: its working directory first on sys.path, random states from ``seed``."""
        return cls(
            random.Random(seed).getstate(),
            np.random.RandomState(seed).get_state(),
            [str(cwd), *sys.path],
        )

    @classmethod
    def current(cls) -> _ProcessState:
        return cls(
            random.getstate(),
            np.random.get_state(),
            list(sys.path),
            os.environ.get(ENV_VAR),
            np.get_printoptions(),
            pd.get_option(PANDAS_OPTION),
            vars(json).get(LIBRARY_FLAG, _MISSING),
            {n: sys.modules[n] for n in LOCAL_MODULES if n in sys.modules},
            dict(packages._imported),
        )

    def install(self) -> None:
        random.setstate(self.random)
        np.random.set_state(self.np_random)
        sys.path[:] = self.path
        for entry in [e for e in sys.path_importer_cache if e and not os.path.isabs(e)]:
            del sys.path_importer_cache[entry]  # relative entries: found in another directory
        pd.set_option(PANDAS_OPTION, self.pandas_option)
        if self.flag is _MISSING:
            vars(json).pop(LIBRARY_FLAG, None)
        else:
            setattr(json, LIBRARY_FLAG, self.flag)
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
    """What a user sees of one cell: its stdout, its Out value, its exception; in a real
    kernel also its stdout and stderr chunks in order (adjacent chunks of one stream merged)."""

    cell_id: str
    stdout: str
    out: str | None  # repr of the Out value, None when there is none
    error: str | None  # the exception's type name
    how: str = field(default="", compare=False)  # incrcell: restored / ran (why), for reports
    streams: tuple[tuple[str, str], ...] = ()  # (stream name, text)


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

    The process state of :class:`_ProcessState` (sys.path included), the working
    directory and ``__main__`` are the kernel's only while it is
    :meth:`active`, so that two kernels can take turns.  A restart is a new
    Session (on the same cache directory) and a fresh process state.
    """

    parallel = False  # it borrows this process's state while active

    def __init__(
        self, cwd: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, incrcell: bool
    ) -> None:
        self.cwd, self.cache_dir, self.monkeypatch = cwd, cache_dir, monkeypatch
        self.incrcell = incrcell
        self.restarts = 0
        self.restart()

    def restart(self) -> None:
        self.session = Session(self.cache_dir, self.monkeypatch)
        self.session.ns.update(_IPYTHON_NAMESPACE)
        namespace = self.session.ns  # as the hooks tell the engine in a real kernel (hooks.py)
        self.session.engine.is_session_name = (  # plain functions (open) are not session state
            lambda name: (
                name in _IPYTHON_NAMESPACE
                and namespace.get(name) is _IPYTHON_NAMESPACE[name]
                and not isinstance(namespace[name], types.FunctionType)
            )
        )
        self.process = _ProcessState.fresh(_FRESH_SEED + self.restarts, self.cwd)
        self.restarts += 1

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer, cwd, main = _ProcessState.current(), os.getcwd(), sys.modules["__main__"]
        bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # a module edited within a second must not load stale
        os.chdir(self.cwd)
        sys.modules["__main__"] = self.session.module
        importlib.invalidate_caches()
        self.process.install()
        try:
            yield
        finally:
            self.process = _ProcessState.current()
            outer.install()
            sys.modules["__main__"] = main
            os.chdir(cwd)
            sys.dont_write_bytecode = bytecode

    def relocate(self, cwd: Path) -> None:
        """Work in ``cwd`` from the next restart on (see :func:`_relocate`)."""
        self.cwd = cwd

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
            return describe_state(self.session.ns, self.cwd, hidden=_IPYTHON_NAMESPACE)


def _result(
    cell_id: str, stdout: str, value: Any, error: BaseException | None, how: str
) -> CellResult:
    return CellResult(
        cell_id,
        stdout,
        None if value is None else repr(value),
        None if error is None else type(error).__name__,
        how,
    )


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
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(content)
    cells = list(sequence.cells)
    history = ["files at the start:"] + [
        f"    {name} = {_show(name, content)}" for name, content in sequence.files
    ]
    for number, step in enumerate(sequence.steps, 1):
        moved = False
        for edit in step.edits:
            if edit.kind == "relocate" and edit.file != work.name:
                work, mirror = (
                    _relocate(work, edit.file, tested),
                    _relocate(mirror, edit.file, plain),
                )
                moved = True
            edit.apply(cells, work)
        _empty(mirror)
        shutil.copytree(work, mirror, dirs_exist_ok=True)
        if number == 1 or not step.same_kernel or moved:  # a kernel cannot move: it restarts
            _both(tested, plain, lambda kernel: kernel.restart())
        got, expected = _both(  # (B023: the lambda runs at once, in this iteration)
            tested,
            plain,
            lambda kernel: kernel.run_all(cells, step.continue_on_error),  # noqa: B023
        )
        history.append(_report_run(number, step, cells, got))
        where = _first_cell_difference(expected, got)
        if not where:
            state, expected_state = _both(tested, plain, lambda kernel: kernel.state())
            where = first_difference(expected_state, state)
        if where:
            raise Divergence(f"run {number} diverges: {where}\n\n" + "\n".join(history))


def _relocate(directory: Path, name: str, executor: Any) -> Path:
    """Move ``directory`` (files included) to a sibling named ``name``, and the executor's
    kernel with it: the notebook moved, or a colleague's checkout in another place (a
    :class:`SimulatedKernel`: "cwd" is a mechanism of simulated kernels only)."""
    moved = directory.parent / name
    if moved.exists():
        shutil.rmtree(moved)
    directory.rename(moved)
    executor.relocate(moved)
    return moved


def _report_run(number: int, step: Step, cells: Cells, results: list[CellResult]) -> str:
    """One run for a report: its edits, then each cell with what incrcell did and its source."""
    how = {r.cell_id: r.how or "ran" for r in results}
    lines = [
        f"run {number} ({'same kernel' if step.same_kernel else 'restart'}"
        f"{', continue on error' if step.continue_on_error else ''}):"
    ]
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
    # the kernels' directories have the same name (what the "cwd" mechanism's cells read)
    work, mirror, cache = (
        root / "work" / RELOCATIONS[0],
        root / "plain" / RELOCATIONS[0],
        root / "cache",
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        check(
            sequence,
            work,
            mirror,
            SimulatedKernel(work, cache, monkeypatch, incrcell),
            SimulatedKernel(mirror, cache, monkeypatch, False),
        )


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
