"""The kernel end of the JupyterLab sidebar: a Jupyter comm with target ``incrcell``.

The message schema is labextension/PROTOCOL.md (protocol 1); this module only
moves messages between the frontend and :class:`incrcell.predict.Predictor`:

- the frontend opens a comm (or, when ``%load_ext incrcell`` runs after the
  notebook opened, the kernel opens one to it); either way it gets ``hello``
  and a ``state``;
- it sends the notebook's code cells, and actions (invalidate a cell, clear
  the notebook's entries, turn caching on or off); each is answered with a
  ``state`` to every open comm;
- a message may carry ``sender`` and ``seq``: its answer then carries ``ack``
  (on the asking comm only), and a repeat of it (the frontend retries what was
  not acknowledged, on the same comm or a new one) is acknowledged again without
  being applied twice;
- the kernel says ``running`` when a cell starts, and pushes a ``state`` after
  it ran.  During a Run All those pushes are throttled (at most one every
  ``max(0.2 s, 10 x the time the last one took)``, the last always sent once
  the kernel is free), so a 200-cell notebook is not slowed down by its sidebar.

Fails safe: nothing here may break a cell or the kernel.  A bad message, or a
bug, is answered with one ``error`` message; a comm that cannot be written to
is dropped.  Handlers run on the kernel's main shell thread between executions,
so they see the namespace and the engine at rest: a message that arrives on
another thread (a frontend sending comm messages over a kernel subshell, as
JupyterLab 4.6 may) is handed to the main thread's event loop, never handled
while a cell runs.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import comm

from incrcell import __version__
from incrcell.engine import Engine
from incrcell.predict import NotebookCell, Predictor
from incrcell.serialise import one_line
from incrcell.sidebar_views import is_key, notebook_cache, variables
from incrcell.store import StoreError

TARGET = "incrcell"
PROTOCOL = 1
#: Shortest time between two states pushed after executions.
THROTTLE = 0.2
#: How many acknowledged (sender, seq) pairs are remembered, to answer a repeat without
#: applying it twice (a frontend has at most a few messages unacknowledged at a time).
REMEMBERED = 256


class _Unchanged(Exception):
    """A ``check_files`` found nothing changed: no ``state`` is sent, only an ``ack``."""


class _BadMessage(Exception):
    """A message the protocol does not allow; its text is the one-line error sent back."""


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _BadMessage(f"`{key}` must be a string")
    return value


def _acked(data: Any) -> tuple[str, int] | None:
    """The (sender, seq) a message asks to be acknowledged under, if it carries both."""
    if not isinstance(data, dict):
        return None
    sender, seq = data.get("sender"), data.get("seq")
    if isinstance(sender, str) and isinstance(seq, int) and not isinstance(seq, bool):
        return sender, seq
    return None


def _cells(data: dict[str, Any]) -> list[NotebookCell]:
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise _BadMessage("`cells` must be a list of {id, source} objects")
    return [NotebookCell(_text(c, "id"), _text(c, "source")) for c in cells]


class Sidebar:
    """Every open ``incrcell`` comm of one kernel, and what they are told.

    ``incrcell_message`` is called while a frontend's message is handled: the
    execution IPython counts for it ran no user code (see
    :class:`incrcell.kernel.extension.UserCode`).
    """

    def __init__(
        self,
        shell: Any,
        engine: Engine,
        predictor: Predictor,
        incrcell_message: Callable[[], None],
    ) -> None:
        self.shell = shell
        self.engine = engine
        self.predictor = predictor
        self.incrcell_message = incrcell_message
        self.comms: dict[str, Any] = {}  # comm id -> comm
        # comms a frontend answers on: the ones it opened, and the kernel's once it sent a
        # message (a client without the extension never does: no state is computed for it)
        self.live: set[str] = set()
        self.running = False  # a cell is under way (between cell_starts and cell_ends)
        self._next_push = 0.0  # monotonic time before which pushes wait
        self._timer: asyncio.TimerHandle | None = None
        # the thread and event loop of the main shell (where %load_ext ran): handlers run there
        self._thread = threading.get_ident()
        self._loop: asyncio.AbstractEventLoop | None = None
        # (sender, seq) -> what its answer added to the state (see _acked)
        self._answered: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        # a handler returns None (answered with a state to every comm), fields its state
        # answer adds, or an answer of its own (it has a "type": only the asking comm gets it)
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "cells": lambda data: self.predictor.set_cells(_cells(data)),
            "request_state": lambda data: None,
            "invalidate": self._invalidate,
            "clear": self._clear,
            "enable": self._enable,
            "check_files": self._check_files,
            # the Variables and Cache views (incrcell/sidebar_views.py)
            "request_variables": self._variables,
            "request_cache": self._cache,
            "evict": self._evict,
        }

    # -- life ------------------------------------------------------------------------
    def open(self) -> None:
        """Listen for frontends, and reach out to one already open (in a kernel)."""
        self._thread = threading.get_ident()
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a terminal IPython): no other thread to come from
            self._loop = None
        try:
            comm.get_comm_manager().register_target(TARGET, self._on_open)
            if getattr(self.shell, "kernel", None) is not None:  # not a terminal IPython
                self._attach(comm.create_comm(target_name=TARGET))
        except Exception as exc:  # no usable comms here: no sidebar, caching works all the same
            print(
                f"incrcell: the sidebar cannot connect ({type(exc).__name__}: {one_line(exc)})",
                file=sys.stderr,
            )

    def close(self) -> None:
        """Undo :meth:`open`: close every comm, stop listening."""
        try:
            manager = comm.get_comm_manager()
            if manager.targets.get(TARGET) == self._on_open:
                manager.unregister_target(TARGET, self._on_open)
        except Exception:  # open() could not register it either
            pass
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for channel in list(self.comms.values()):
            try:
                channel.close()
            except Exception:  # a dead comm: nothing to tell
                pass
        self.comms.clear()
        self.live.clear()

    # -- comms -----------------------------------------------------------------------
    def _elsewhere(self, handler: Callable[..., None], *args: Any) -> bool:
        """If this is not the main shell's thread, hand ``handler(*args)`` to its event loop
        (run once the running cell, if any, is done) and say so."""
        if threading.get_ident() == self._thread or self._loop is None:
            return False
        try:
            self._loop.call_soon_threadsafe(handler, *args)
        except RuntimeError:  # the loop is closed: the kernel is going away
            pass
        return True

    def _on_open(self, channel: Any, msg: dict[str, Any]) -> None:
        if self._elsewhere(self._on_open, channel, msg):
            return
        data = msg.get("content", {}).get("data")
        if isinstance(data, dict) and data.get("type") == "cells":
            try:  # the frontend may send its cells with the open message (PROTOCOL.md)
                self.handle(data)
            except Exception:  # a bad open message: the comm still opens; state tells the rest
                pass
        self.live.add(channel.comm_id)
        self._attach(channel)

    def _attach(self, channel: Any) -> None:
        self.comms[channel.comm_id] = channel
        channel.on_msg(lambda msg: self._on_msg(channel, msg))
        channel.on_close(lambda msg: self._forget(channel))
        self._send(channel, {"type": "hello", "version": __version__})
        self._send(channel, self._state())

    def _forget(self, channel: Any) -> None:
        self.comms.pop(channel.comm_id, None)
        self.live.discard(channel.comm_id)

    def _on_msg(self, channel: Any, msg: dict[str, Any]) -> None:
        if self._elsewhere(self._on_msg, channel, msg):
            return
        self.live.add(channel.comm_id)
        self.incrcell_message()  # comm dispatch counts it as an execution: it runs no user code
        data = msg.get("content", {}).get("data")
        acked = _acked(data)
        if acked is not None and acked in self._answered:  # a retry of what was done: answer again
            self._send(channel, {**self._state(), **self._answered[acked]})
            return
        added: dict[str, Any]
        try:
            reply = self.handle(data) or {}
        except _Unchanged:  # nothing to say, but that it arrived if the sender asks
            if acked is None:
                return
            added, answer = {}, {"type": "ack", "protocol": PROTOCOL}
        except _BadMessage as exc:
            added, answer = {}, _error(str(exc))
        except StoreError as exc:
            added, answer = {}, _error(exc.reason)
        except Exception as exc:  # a bug: say it in one line, never break the kernel
            added, answer = {}, _error(f"{type(exc).__name__}: {one_line(exc)}")
        else:
            if "type" in reply:  # the handler's own answer, for the asking comm only
                added, answer = {}, reply
            else:
                added, answer = reply, self._state()
                self._broadcast(answer, but=channel)
        if acked is not None:
            added["ack"] = acked[1]
            self._answered[acked] = added
            while len(self._answered) > REMEMBERED:
                self._answered.popitem(last=False)
        self._send(channel, {**answer, **added})

    def handle(self, data: Any) -> dict[str, Any] | None:
        """Apply one frontend message; returns its handler's answer (see _handlers); raises
        _BadMessage if the protocol forbids it."""
        if not isinstance(data, dict):
            raise _BadMessage("a message must be a JSON object")
        if data.get("protocol") != PROTOCOL:
            raise _BadMessage(
                f"unsupported protocol {data.get('protocol')!r}: "
                f"this kernel speaks protocol {PROTOCOL}"
            )
        kind = data.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise _BadMessage(f"unknown message type {data.get('type')!r}")
        return handler(data)

    def _invalidate(self, data: dict[str, Any]) -> None:
        self.engine.store.delete(self.predictor.keys([_text(data, "id")]))
        self.predictor.forget_cache()

    def _clear(self, data: dict[str, Any]) -> dict[str, Any]:
        entries, freed = self.predictor.clear_cache()
        return {"cleared": {"entries": entries, "bytes": freed}}

    def _check_files(self, data: dict[str, Any]) -> None:
        if self.running or not self.predictor.files_moved():  # never during a cell
            raise _Unchanged

    def _enable(self, data: dict[str, Any]) -> None:
        enabled = data.get("enabled")
        if not isinstance(enabled, bool):
            raise _BadMessage("`enabled` must be true or false")
        self.engine.config.enabled = enabled

    # -- the Variables and Cache views: on request, never while a cell runs ---------------
    def _variables(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.running:  # the frontend asks again after the next state
            return {"type": "variables", "busy": True, "variables": []}
        hidden = getattr(self.shell, "user_ns_hidden", {})
        found = variables(self.shell.user_ns, hidden)
        return {"type": "variables", "busy": False, "variables": found}

    def _cache(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.running:
            return {"type": "cache", "busy": True, "entries": []}
        cells = self.predictor.cells or []
        keyed = [(c.id, self.predictor.keys([c.id])) for c in cells]
        return {"type": "cache", "busy": False, "entries": notebook_cache(self.engine.store, keyed)}

    def _evict(self, data: dict[str, Any]) -> None:
        key = _text(data, "key")
        if not is_key(key):
            raise _BadMessage("`key` must be a cache key (lowercase hex)")
        self.engine.store.delete([key])
        self.predictor.forget_cache()

    def _send(self, channel: Any, message: dict[str, Any]) -> None:
        try:
            channel.send({"protocol": PROTOCOL, **message})
        except Exception:  # closed under us: forget it
            self._forget(channel)

    def _broadcast(self, message: dict[str, Any], but: Any = None) -> None:
        """Send to every comm a frontend answers on (except ``but``)."""
        for comm_id in list(self.live):
            if comm_id in self.comms and self.comms[comm_id] is not but:
                self._send(self.comms[comm_id], message)

    # -- states ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            return {"type": "state", **self.predictor.report(self.shell.user_ns).to_json()}
        except Exception as exc:  # a bug: the frontend says so, the kernel goes on
            return _error(f"{type(exc).__name__}: {one_line(exc)}")

    def _push(self) -> None:
        started = time.monotonic()
        self._broadcast(self._state())
        done = time.monotonic()
        self._next_push = done + max(THROTTLE, 10 * (done - started))

    def _schedule(self) -> None:
        """Push a state now or, if one went out very recently (a Run All) or a cell is
        still running (awaiting), once the kernel is free a little later."""
        if self._timer is not None:
            return
        wait = self._next_push - time.monotonic()
        if wait > 0 or self.running:
            try:
                self._timer = asyncio.get_running_loop().call_later(
                    max(wait, THROTTLE / 4), self._flush
                )
                return
            except RuntimeError:  # no event loop to come back on: now, then
                pass
        self._push()

    def _flush(self) -> None:
        self._timer = None
        self._schedule()

    # -- cells (told by the extension) ---------------------------------------------------
    def cell_starts(self, info: Any) -> None:
        self.running = True
        cell_id = getattr(info, "cell_id", None)
        if self.live and cell_id:
            self._broadcast({"type": "running", "id": cell_id})

    def cell_ends(self) -> None:
        self.running = False
        if self.live:
            self._schedule()


def _error(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message}
