"""The source of the notebook functions a cell's values hold, kept with its entry.

A function defined in a cell names its cell's file (``/tmp/ipykernel_<pid>/…py``),
which exists only in this kernel's ``linecache``; after a restart, a restored
function would have no source for tracebacks, the debugger or ``inspect``.
The engine stores those sources with the entry (:func:`code_sources`) and
registers them again on a restore (:func:`register_sources`).  A source not
found costs a poorer traceback, never a different result.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import types
from collections.abc import Iterable

from .fingerprint import ATOMS as _ATOMS
from .sharing import is_notebook_object as _is_notebook_object

#: How many objects :func:`code_sources` looks at in a cell's values, at most.
_SOURCES_LIMIT = 2_000


def code_sources(values: Iterable[object]) -> dict[str, str]:
    """The source of the in-memory files the functions among ``values`` were compiled from.

    A function defined in a cell names its cell's file (``/tmp/ipykernel_<pid>/…py``),
    which exists only in this kernel's ``linecache``; after a restart, a restored
    function would have no source for tracebacks, the debugger or ``inspect``.
    Functions, methods, partials and classes defined in the notebook are looked
    for in the values, in plain containers and notebook objects, up to
    ``_SOURCES_LIMIT`` objects (a function deeper than that keeps no source:
    a poorer traceback, never a different result).
    """
    filenames: set[str] = set()
    seen: set[int] = set()
    stack = list(values)

    def push(objects: Iterable[object]) -> None:  # never more than the limit waiting
        stack.extend(itertools.islice(objects, max(_SOURCES_LIMIT - len(stack), 0)))

    looked = 0
    while stack and looked < _SOURCES_LIMIT:
        obj = stack.pop()
        looked += 1
        if id(obj) in seen or type(obj) in _ATOMS:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            filenames.add(obj.__code__.co_filename)
            push(
                cell.cell_contents
                for cell in obj.__closure__ or ()
                if cell.cell_contents is not None
            )
        elif isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            push([obj.__func__])
        elif isinstance(obj, property):
            push(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, functools.partial):
            push([obj.func])
        elif isinstance(obj, type):
            if obj.__module__ == "__main__":
                push(vars(obj).values())
        elif type(obj) in (list, tuple, set, frozenset):
            push(obj)  # type: ignore[arg-type]
        elif type(obj) is dict:
            push(obj.values())
        elif _is_notebook_object(obj):
            push([type(obj), *getattr(obj, "__dict__", {}).values()])
    sources = {}
    for filename in sorted(filenames):
        cached = linecache.cache.get(filename)
        # registered in memory (no modification time), not a file on disk
        if cached is not None and len(cached) == 4 and cached[1] is None:
            sources[filename] = "".join(cached[2])
    return sources


def register_sources(sources: dict[str, str]) -> None:
    """Make the recorded sources of :func:`code_sources` visible to tracebacks,
    ``inspect`` and the debugger, under their original names (kept if already there)."""
    for filename, text in sources.items():
        if filename not in linecache.cache:
            lines = text.splitlines(keepends=True)
            linecache.cache[filename] = (len(text), None, lines, filename)
