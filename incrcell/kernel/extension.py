"""incrcell in one IPython shell: the one object that builds, connects and owns every part.

``%load_ext incrcell`` makes one :class:`Extension` per shell; it builds the
:class:`~incrcell.engine.Engine`, the :class:`~incrcell.kernel.hooks.KernelHooks`,
the :class:`~incrcell.predict.Predictor`, the sidebar's
:class:`~incrcell.kernel.comm.Sidebar` and the magics, each given what it uses
in its constructor (no part reaches into another, none is patched afterwards),
and it alone registers with IPython: it owns the cell lifecycle, telling the
hooks, then the sidebar, when a cell starts and ends, and the one signal that
user code may have run between cells (:class:`UserCode`).

``%unload_ext incrcell`` undoes everything :meth:`Extension.load` did (events,
AST transformer, traceback filter, magics, comm target, the file and native I/O
wrappers; the team cache's uploads are finished, with a bounded wait, and its
exit handler removed): nothing of incrcell's is left in the shell, and nothing
keeps the engine, its digest memo or the values of the last cells alive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from incrcell import files
from incrcell.config import Config
from incrcell.engine import Engine
from incrcell.predict import Predictor

from .comm import Sidebar
from .hooks import KernelHooks, is_session_name
from .magics import IncrcellMagics

#: Seconds ``%unload_ext`` waits for the team cache's pending uploads (at kernel shutdown
#: the store's exit handler waits for them; what is left stays local: ``incrcell cache push``).
UNLOAD_WAIT = 10.0

#: The loaded extension of each shell (one per shell; removed again by unload).
_LOADED: dict[Any, Extension] = {}


class UserCode:
    """The one "user code may have run" signal: an execution that was not a cell.

    The engine keeps the digests of values a cell just wrote or restored, and the
    predictor those of the namespace, while only cells (which they see) change
    values.  IPython counts every execution with ``pre_execute`` /
    ``post_execute``: a cell, but also a silent execution or a comm message (a
    widget's callback), which may change any value unseen.  An execution that
    ends without having been a cell or one of incrcell's own messages calls
    every listener (each drops what it memoised); fails safe: an execution it
    cannot tell apart counts as user code.
    """

    def __init__(self, *listeners: Callable[[], None]) -> None:
        self._listeners = listeners
        self._open = False  # an execution started that is not known to be a cell or ours

    def started(self) -> None:
        """``pre_execute`` outside a cell."""
        self._open = True

    def not_user_code(self) -> None:
        """The execution under way is a cell (which the engine sees) or incrcell's own."""
        self._open = False

    def ended(self) -> None:
        """``post_execute`` outside a cell."""
        if self._open:
            self._open = False
            for listener in self._listeners:
                listener()


class Extension:
    """incrcell loaded in one IPython shell."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.engine = Engine(Config(), is_session_name=functools.partial(is_session_name, shell))
        self.hooks = KernelHooks(shell, self.engine)
        self.predictor = Predictor(
            self.engine, prepare=self.hooks.prepare, refusal=self.hooks.refusal
        )
        self.user_code = UserCode(self.engine.forget_digests, self.predictor.forget_namespace)
        self.sidebar = Sidebar(shell, self.engine, self.predictor, self.user_code.not_user_code)
        self.magics = IncrcellMagics(shell, self.engine, self.predictor)
        self._depth = 0  # run_cell calls under way: more than 1 inside a cell (%%capture)
        self._events = (
            ("pre_execute", self._pre_execute),
            ("pre_run_cell", self._pre_run_cell),
            ("post_execute", self._post_execute),
            ("post_run_cell", self._post_run_cell),
        )

    def load(self) -> None:
        for event, callback in self._events:
            self.shell.events.register(event, callback)
        self.hooks.install()
        self.sidebar.open()
        self.shell.register_magics(self.magics)

    def unload(self) -> None:
        """Undo :meth:`load` completely; safe to call from inside a cell."""
        for event, callback in self._events:
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass
        self.hooks.uninstall()
        files.uninstall()  # the file and native I/O wrappers stay in place while loaded
        self.sidebar.close()
        manager = self.shell.magics_manager
        if manager.registry.get(type(self.magics).__name__) is self.magics:
            del manager.registry[type(self.magics).__name__]
        for kind, names in self.magics.magics.items():
            for name in names:
                bound = manager.magics[kind].get(name)
                if getattr(bound, "__self__", None) is self.magics:
                    del manager.magics[kind][name]
        # ``Magics.__init__`` listed it among the shell's configurables (for %config)
        configurables = getattr(self.shell, "configurables", [])
        while any(c is self.magics for c in configurables):
            configurables.remove(self.magics)
        # the digests of the last cells' values, and the parts' references to them
        self.engine.forget_digests()
        self.predictor.forget_namespace()
        # the team cache's pending uploads, then its threads and exit handler
        self.engine.close(UNLOAD_WAIT)

    # -- IPython's events ----------------------------------------------------------------
    def _pre_execute(self) -> None:
        if not self._depth:  # code a magic runs inside a cell is part of that cell
            self.user_code.started()

    def _pre_run_cell(self, info: Any) -> None:
        self._depth += 1
        if self._depth > 1:
            # run_cell called from inside a cell (%%capture, %run -i of a notebook...): its
            # code is part of the running cell, never a cell of its own
            return
        self.user_code.not_user_code()
        self.predictor.forget_namespace()  # the cell changes values
        self.hooks.cell_starts(info)
        self.sidebar.cell_starts(info)

    def _post_execute(self) -> None:
        if not self._depth:
            self.user_code.ended()

    def _post_run_cell(self, result: Any) -> None:
        if self._depth > 1:  # the end of a nested run_cell (see _pre_run_cell)
            self._depth -= 1
            return
        self._depth = 0
        self.hooks.cell_ends(result)
        self.predictor.forget_namespace()
        self.sidebar.cell_ends()


def active(shell: Any) -> Extension | None:
    """The extension loaded in ``shell``, if any."""
    return _LOADED.get(shell)


def load(shell: Any) -> None:
    """``%load_ext incrcell``; loading twice keeps the first session."""
    if shell in _LOADED:
        return
    extension = Extension(shell)
    try:
        extension.load()
    except BaseException:
        extension.unload()  # no half-loaded extension stays behind
        raise
    _LOADED[shell] = extension


def unload(shell: Any) -> None:
    """``%unload_ext incrcell``: back to plain IPython, nothing left behind."""
    extension = _LOADED.pop(shell, None)
    if extension is not None:
        extension.unload()
