"""Recording a cell's outputs while it runs, and replaying them on a hit.

A cell's visible effects in a notebook are its stream output (stdout,
stderr), its display messages (``display()``, inline figures, ``clear_output``)
and its execute result.  The execute result is the cell's Out value and is
stored as a value (so ``Out[n]`` and ``_`` work after a restore); everything
else is recorded here, in order, as JSON events:

- ``{"type": "stream", "name": "stdout" | "stderr", "text": ...}``
- ``{"type": "display", "data": {...}, "metadata": {...}, "transient": {...}, "update": bool}``
- ``{"type": "clear", "wait": bool}``
- ``{"type": "result"}``: where the execute result was shown.  A restore shows the
  result when its code returns the value, so what came after it in the recorded run
  (an inline figure, drawn when the cell ends) is replayed after it, in the order of a
  plain run (:func:`at_result`).  Stream text written while the result is shown (a
  terminal prints ``Out[n]: ...``, a repr may print) is not kept: showing the restored
  result writes it again.

Recording wraps the live objects without replacing what the user sees: the
original ``write`` / ``publish`` still runs, the recorder only keeps a copy.

Order.  ipykernel buffers each stream and sends it from its I/O thread 0.2 s
after the first write, or when flushed (before a display, at the end of the
cell: stdout first).  So in a plain run, text written to stderr and then to
stdout reaches the notebook in either order, depending on how busy the
machine is.  While a cell records, a write to one stream first flushes the
other if it holds text: the notebook then receives the chunks in the order
they were written, which is the order recorded, and replay (which flushes at
the same points) sends them in that same order.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO


def _jsonable(value: Any) -> Any:
    """Mime bundles may carry raw bytes (PNG): store them base64, as Jupyter does."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


_ABSENT = object()
_PUBLISHING = ("publish", "clear_output")
_SHOWING = ("start_displayhook", "finish_displayhook")


def _restore_attribute(obj: Any, name: str, saved: Any) -> None:
    """Undo an instance-attribute patch, putting back whatever was there before."""
    if saved is _ABSENT:
        obj.__dict__.pop(name, None)
    else:
        setattr(obj, name, saved)


class _StreamTap:
    """Copies what is written to one stream, by patching ``write`` on the instance.

    Patching the instance (rather than swapping ``sys.stdout``) keeps the
    kernel's own stream object in place, so code that checks its type, and
    ipykernel's capture of C-level output, keep working.  Streams whose
    ``write`` is read-only (a terminal's TextIOWrapper) are swapped for a thin
    proxy instead.
    """

    def __init__(
        self, name: str, events: list[dict[str, Any]], other: Callable[[], TextIO]
    ) -> None:
        self.name = name
        self.events = events
        self.stream: TextIO = getattr(sys, name)
        self.swapped = False
        self.saved = getattr(self.stream, "__dict__", {}).get("write", _ABSENT)
        original = self.stream.write

        def write(text: str) -> Any:
            __tracebackhide__ = True
            last = self.events[-1] if self.events else None
            switching = bool(last and last["type"] == "stream" and last["name"] != self.name)
            if switching and isinstance(text, str) and text:
                _flush(other())  # the other stream's text goes out first, as it was written
            written = original(text)
            if isinstance(text, str) and text:
                if last and last["type"] == "stream" and not switching:
                    last["text"] += text
                else:
                    self.events.append({"type": "stream", "name": self.name, "text": text})
            return written

        try:
            self.stream.write = write
        except (AttributeError, TypeError):
            setattr(sys, name, _Proxy(self.stream, write))
            self.swapped = True

    def close(self) -> None:
        if self.swapped:
            if isinstance(getattr(sys, self.name), _Proxy):
                setattr(sys, self.name, self.stream)
        else:
            _restore_attribute(self.stream, "write", self.saved)


class _Proxy:
    """Forwards everything to ``target`` except ``write``."""

    def __init__(self, target: TextIO, write: Any) -> None:
        self._target = target
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class OutputRecorder:
    """Records stream and display output of one cell execution."""

    def __init__(self, display_pub: Any, displayhook: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self._taps = [
            _StreamTap("stdout", self.events, lambda: sys.stderr),
            _StreamTap("stderr", self.events, lambda: sys.stdout),
        ]
        self._patched = [
            (display_pub, {n: display_pub.__dict__.get(n, _ABSENT) for n in _PUBLISHING}),
            (displayhook, {n: displayhook.__dict__.get(n, _ABSENT) for n in _SHOWING}),
        ]
        publish, clear_output = display_pub.publish, display_pub.clear_output
        start, finish = displayhook.start_displayhook, displayhook.finish_displayhook

        def recording_publish(
            data: dict,
            metadata: dict | None = None,
            *args: Any,
            transient: dict | None = None,
            update: bool = False,
            **kwargs: Any,
        ) -> Any:
            __tracebackhide__ = True
            self.events.append(
                {
                    "type": "display",
                    "data": _jsonable(data),
                    "metadata": _jsonable(metadata or {}),
                    "transient": _jsonable(transient or {}),
                    "update": bool(update),
                }
            )
            return publish(data, metadata, *args, transient=transient, update=update, **kwargs)

        def recording_clear(wait: bool = False) -> Any:
            __tracebackhide__ = True
            self.events.append({"type": "clear", "wait": bool(wait)})
            return clear_output(wait)

        def recording_start() -> Any:
            __tracebackhide__ = True
            self.events.append({"type": "result"})
            return start()

        def recording_finish() -> Any:
            __tracebackhide__ = True
            # what the display hook itself wrote since it started (a terminal's prompt, a
            # repr's prints), which showing the restored result writes again
            while self.events and self.events[-1]["type"] == "stream":
                self.events.pop()
            return finish()

        display_pub.publish = recording_publish
        display_pub.clear_output = recording_clear
        displayhook.start_displayhook = recording_start
        displayhook.finish_displayhook = recording_finish

    def close(self) -> list[dict[str, Any]]:
        """Stop recording (idempotent) and return the events."""
        for tap in self._taps:
            tap.close()
        self._taps = []
        for obj, saved in self._patched:
            for name, value in saved.items():
                _restore_attribute(obj, name, value)
        self._patched = []
        return self.events


def _flush(stream: TextIO) -> None:
    """Send what ``stream`` buffered; a stream that cannot flush is left as it is."""
    try:
        stream.flush()
    except Exception:  # a closed or unusual stream: its order is not ours to fix
        pass


def _nothing_buffered() -> bool:
    """Whether neither output stream holds text it has yet to send (ipykernel's streams
    say so: a write schedules a send); False for any other kind of stream."""
    return not getattr(sys.stdout, "_flush_pending", True) and not getattr(
        sys.stderr, "_flush_pending", True
    )


def publish(
    display_pub: Any, data: dict[str, Any], metadata: dict[str, Any], **kwargs: Any
) -> None:
    """``display_pub.publish``, without ipykernel's flush of both streams when neither
    holds text: a flush is a round trip to the kernel's I/O thread (two of them cost
    more than the display message itself, which matters on every restored cell),
    and with nothing buffered it sends nothing, so the order is the same."""
    if hasattr(type(display_pub), "_flush_streams") and _nothing_buffered():
        display_pub._flush_streams = _no_flush  # shadows the method for this one message
        try:
            display_pub.publish(data, metadata, **kwargs)
        finally:
            del display_pub._flush_streams
    else:
        display_pub.publish(data, metadata, **kwargs)


def _no_flush() -> None:
    """In place of ipykernel's stream flush before a display (see :func:`publish`)."""


def at_result(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events before the execute result was shown, and those after (none after when
    the cell showed no result)."""
    for index, event in enumerate(events):
        if event.get("type") == "result":
            return events[:index], events[index + 1 :]
    return events, []


def replay(events: list[dict[str, Any]], display_pub: Any) -> None:
    """Re-emit recorded events in their original order.

    Each stream chunk is flushed before the next event, so that the notebook
    receives them in the recorded order whatever the timing (see the module's
    docstring); the recorded chunks already merge consecutive writes.
    """
    for event in events:
        kind = event.get("type")
        if kind == "stream":
            stream = sys.stdout if event.get("name") == "stdout" else sys.stderr
            stream.write(event.get("text", ""))
            _flush(stream)
        elif kind == "display":
            publish(
                display_pub,
                event.get("data", {}),
                event.get("metadata", {}),
                transient=event.get("transient") or None,
                update=bool(event.get("update")),
            )
        elif kind == "clear":
            display_pub.clear_output(bool(event.get("wait")))
