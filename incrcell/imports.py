"""Run something right after a module finishes importing, before anyone can use it.

Two mechanisms need this: the native I/O wrappers (``nativeio``: a data library
imported in a cell must be wrapped before the cell calls it) and the random
generators (``randomness``: a generator's state right after its module's import,
before the cell draws).  An :class:`AfterImport` finder sits at the front of
``sys.meta_path``, finds nothing itself, asks the finders after it for the
module's spec and wraps its loader's ``exec_module``; the module keeps its own
loader (``__loader__``, ``__spec__.loader``), so nothing else can tell.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
import types
from collections.abc import Callable
from typing import Any


class AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``then(name, module)`` once a module for which ``wanted(name)`` is true has
    been executed by its import."""

    def __init__(
        self, wanted: Callable[[str], bool], then: Callable[[str, types.ModuleType], None]
    ) -> None:
        self._wanted, self._then = wanted, then
        self._busy = threading.local()  # asking the other finders: not again for them

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        __tracebackhide__ = True
        if getattr(self._busy, "on", False) or not self._wanted(fullname):
            return None
        self._busy.on = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.on = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ThenLoader(spec.loader, fullname, self._then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    """The module's own loader, then ``then``."""

    def __init__(
        self, loader: Any, name: str, then: Callable[[str, types.ModuleType], None]
    ) -> None:
        self._loader, self._name, self._then = loader, name, then

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        __tracebackhide__ = True
        module.__loader__ = self._loader  # the module keeps its real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._then(self._name, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
