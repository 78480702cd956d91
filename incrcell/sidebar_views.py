"""What the sidebar's Variables and Cache views show, computed in the kernel on request.

Both are answers to a frontend's request (``request_variables``,
``request_cache``: labextension/PROTOCOL.md), never pushed after a cell, so a
notebook whose sidebar shows the Cells tab pays nothing for them, and the
comm refuses them while a cell runs (the frontend asks again after the next
``state``).

* **Variables**: the user's names (not IPython's, not ``_``-prefixed, not
  modules), each with its type, a short summary (a shape, a length) and its
  size in memory.  The size is what the object itself holds: an array's or a
  frame's buffers (``nbytes``, ``memory_usage(deep=False)``), else
  ``sys.getsizeof`` (a list's own array of pointers, not what they point to).
  Only numpy, pandas, polars, pyarrow and torch objects are asked for more
  than ``sys.getsizeof``, through attributes they document; an object whose
  ``__sizeof__`` or ``__len__`` raises gets no size: a view never breaks on a
  user's object.  Which cell defines a name and which cells use it, the
  frontend derives from the ``state`` it already has (``writes``,
  ``depends_on``).
* **Cache**: this notebook's cache entries (each cell's last executed,
  recorded and predicted key, as ``clear`` deletes them) that the local cache
  holds, each with its size (its file and every value it needs, a shared
  value counted for each entry, as ``incrcell cache ls`` counts), when it was
  created and last used (a restore, a recording or a prediction counts as a
  use), whether it came from the team cache in this session and whether the
  team cache has it.  One listing of the cache's entries and values; each
  listed entry is read (verified) once.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Container, Iterable, Mapping
from typing import Any

from .store import Store
from .store.codec import ENTRY, KINDS, VALUE
from .store.entry import NAME

#: At most this many variables are described (the first, by name): a view, not a dump.
MAX_VARIABLES = 2000
#: Libraries whose objects report their buffers' size through documented attributes.
_SIZED = ("numpy", "pandas", "polars", "pyarrow", "torch")


def variables(namespace: Mapping[str, Any], hidden: Container[str]) -> list[dict[str, Any]]:
    """``[{"name", "type", "summary", "size"}]`` of the user's names, sorted by name."""
    names = sorted(
        name
        for name in list(namespace)
        if isinstance(name, str) and not name.startswith("_") and name not in hidden
    )
    described: list[dict[str, Any]] = []
    for name in names:
        if len(described) >= MAX_VARIABLES:
            break
        value = namespace.get(name)
        if isinstance(value, types.ModuleType):
            continue
        kind = type(value)
        described.append(
            {
                "name": name,
                "type": kind.__qualname__,
                "summary": _summary(value),
                "size": _size(value),
            }
        )
    return described


def _library(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def _summary(value: Any) -> str:
    """A shape (arrays, frames) or a length (builtin containers, strings); '' otherwise."""
    try:
        if _library(value) in _SIZED:
            shape = getattr(value, "shape", None)
            if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
                return " x ".join(map(str, shape)) if shape else "scalar"
        if isinstance(value, str):
            return f"{len(value)} characters"
        if isinstance(value, (bytes, bytearray)):
            return f"{len(value)} bytes"
        if isinstance(value, (list, tuple, dict, set, frozenset)):
            return f"{len(value)} {'item' if len(value) == 1 else 'items'}"
    except Exception:  # a user's subclass: no summary, never an error
        pass
    return ""


def _size(value: Any) -> int | None:
    """Bytes the object holds (see the module's docstring), or None if it cannot say."""
    try:
        library = _library(value)
        if library == "pandas":
            usage = getattr(value, "memory_usage", None)
            if callable(usage):
                total = usage(deep=False)
                return int(total.sum() if hasattr(total, "sum") else total)
        if library == "polars":
            estimate = getattr(value, "estimated_size", None)
            if callable(estimate):
                return int(estimate())
        if library in _SIZED:
            nbytes = getattr(value, "nbytes", None)
            if isinstance(nbytes, int) or (library == "numpy" and nbytes is not None):
                return int(nbytes)
        return sys.getsizeof(value)
    except Exception:  # __sizeof__ of a user's class raised: unknown
        return None


def is_key(text: str) -> bool:
    """Whether ``text`` can name a cache entry (what ``evict`` accepts)."""
    return NAME.fullmatch(text) is not None


def notebook_cache(store: Store, cells: Iterable[tuple[str, set[str]]]) -> list[dict[str, Any]]:
    """``[{"key", "cells", "bytes", "created", "used", "origin", "in_remote"}]`` of the entries
    the local cache holds for these (cell id, its keys), in notebook order."""
    owners: dict[str, list[str]] = {}
    for cell_id, keys in cells:
        for key in sorted(keys):
            owners.setdefault(key, []).append(cell_id)
    if not owners:
        return []
    backend = store.backend
    listed = {
        item.name.rsplit("/", 1)[1]: item
        for item in backend.list(KINDS[ENTRY])
        if item.name.rsplit("/", 1)[1] in owners
    }
    if not listed:
        return []
    sizes = {item.name.rsplit("/", 1)[1]: item.size for item in backend.list(KINDS[VALUE])}
    found: list[dict[str, Any]] = []
    for key, cell_ids in owners.items():
        item = listed.get(key)
        if item is None:
            continue
        entry = store.get(key, fetch=False, use=False)
        if entry is None:  # unusable: the store removed it (and said why)
            continue
        found.append(
            {
                "key": key,
                "cells": cell_ids,
                "bytes": item.size + sum(sizes.get(digest, 0) for digest in entry.digests()),
                "created": entry.created,
                "used": item.used,
                "origin": store.origin(key),
                "in_remote": store.remote is not None and store.remotely(key),
            }
        )
    return found
