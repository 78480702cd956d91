"""The kernel end of the JupyterLab sidebar: a Jupyter comm with target ``incrcell``.

The message schema is labextension/PROTOCOL.md (protocol 1); this module only
moves messages between the frontend and :class:`incrcell.predict.Predictor`:

- the frontend opens a comm (or, when ``%load_ext incrcell`` runs after the
  notebook opened, the kernel opens one to it); either way it gets ``hello``
  and a ``state``;
- it sends the notebook's code cells, and actions (invalidate a cell, clear
  the notebook's entries, turn caching on or off); each is answered with a
  ``state`` to every open comm;
- the kernel says ``running`` when a cell starts, and pushes a ``state`` after
  it ran.  During a Run All those pushes are throttled (at most one every
  ``max(0.2 s, 10 x the time the last one took)``, the last always sent once
  the kernel is free), so a 200-cell notebook is not slowed down by its sidebar.

Fails safe: nothing here may break a cell or the kernel.  A bad message, or a
bug, is answered with one ``error`` message; a comm that cannot be written to
is dropped.  Handlers run on the kernel's shell thread between executions, so
they see the namespace and the engine at rest.
"""

from __future__ import annotations

import asyncio
import sys
import time
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


class _BadMessage(Exception):
    """A message the protocol does not allow; its text is the one-line error sent back."""


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _BadMessage(f"`{key}` must be a string")
    return value


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
        # a handler returns None (answered with a state to every comm) or its own answer
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "cells": lambda data: self.predictor.set_cells(_cells(data)),
            "request_state": lambda data: None,
            "invalidate": self._invalidate,
            "clear": self._clear,
            "enable": self._enable,
            # the Variables and Cache views (incrcell/sidebar_views.py)
            "request_variables": self._variables,
            "request_cache": self._cache,
            "evict": self._evict,
        }

    # -- life ------------------------------------------------------------------------
    def open(self) -> None:
        """Listen for frontends, and reach out to one already open (in a kernel)."""
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
    def _on_open(self, channel: Any, msg: dict[str, Any]) -> None:
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
        self.live.add(channel.comm_id)
        self.incrcell_message()  # comm dispatch counts it as an execution: it runs no user code
        try:
            reply = self.handle(msg.get("content", {}).get("data"))
        except _BadMessage as exc:
            self._send(channel, _error(str(exc)))
        except StoreError as exc:
            self._send(channel, _error(exc.reason))
        except Exception as exc:  # a bug: say it in one line, never break the kernel
            self._send(channel, _error(f"{type(exc).__name__}: {one_line(exc)}"))
        else:
            if reply is None:
                self._broadcast(self._state())
            else:
                self._send(channel, reply)

    def handle(self, data: Any) -> dict[str, Any] | None:
        """Apply one frontend message, returning a handler's own answer if it has one; raises
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

    def _clear(self, data: dict[str, Any]) -> None:
        cells = self.predictor.cells or []
        self.engine.clear_session(also=self.predictor.keys(c.id for c in cells))
        self.predictor.forget_cache()

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

    def _broadcast(self, message: dict[str, Any]) -> None:
        for comm_id in list(self.live):
            if comm_id in self.comms:
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
