"""What ``incrcell run`` shows while and after it runs notebooks.

On a terminal: the notebook's name, then one line per cell as it finishes
(restored, ran, uncacheable or error, its time, its first line, why it ran or
the time a restore saved), a live line for the cell running now, and a
one-line summary (``12 restored, 2 ran, 41.3 s saved``).  When stdout is not a
terminal (CI logs, pipes) only the summary line of each notebook is printed.
``--json`` prints nothing but its one JSON object (built by the command).

A finished cell's state comes from the kernel (the sidebar's ``state``
messages, pushed a moment after each cell): its line is printed once the
state is known, in notebook order; cells the kernel cannot report (run before
incrcell was loaded, ``--no-cache``) are printed with what the runner saw.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from .runner import (
    ERROR,
    EXECUTED,
    NOT_RUN,
    RAN,
    RESTORED,
    UNCACHEABLE,
    Cell,
    CellResult,
    Observer,
    Outcome,
    Prediction,
)

_STYLES = {RESTORED: "green", RAN: "yellow", UNCACHEABLE: "magenta", ERROR: "bold red"}


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 0.1 or value == 0 else f"{value * 1000:.0f} ms"


def summary(cells: Iterable[CellResult]) -> str:
    """``12 restored, 2 ran, 41.3 s saved`` (uncacheable, failed, not run when there are any)."""
    cells = list(cells)
    count = {state: sum(c.state == state for c in cells) for state in (*EXECUTED, NOT_RUN)}
    parts = [f"{count[RESTORED]} restored", f"{count[RAN]} ran"]
    for state, word in ((UNCACHEABLE, "uncacheable"), (ERROR, "failed"), (NOT_RUN, "not run")):
        if count[state]:
            parts.append(f"{count[state]} {word}")
    saved = sum(c.saved_seconds for c in cells)
    return ", ".join(parts) + f", {saved:.1f} s saved"


def plan_summary(predictions: Iterable[Prediction]) -> str:
    predictions = list(predictions)
    restore = sum(p.prediction == "restore" for p in predictions)
    unknown = sum(p.prediction == "unknown" for p in predictions)
    text = f"{restore} would restore, {len(predictions) - restore - unknown} would run"
    return text + (f", {unknown} unknown" if unknown else "")


def _row(index: int, state: str, time_text: str, label: str, detail: str) -> Text:
    text = Text(f"{index:>4}  ")
    text.append(f"{state:<11}", style=_STYLES.get(state, ""))
    text.append(f" {time_text:>8}  ")
    text.append(label[:60])
    if detail:
        text.append(f"  {detail}", style="dim")
    return text


def result_row(cell: CellResult) -> Text:
    detail = f"saved {seconds(cell.saved_seconds)}" if cell.state == RESTORED else cell.reason
    time_text = seconds(cell.seconds) if cell.state != NOT_RUN else ""
    return _row(cell.index, cell.state, time_text, cell.label, detail)


def prediction_row(p: Prediction) -> Text:
    text = Text(f"{p.index:>4}  ")
    text.append(f"{p.prediction:<8}", style=_STYLES[RESTORED if p.prediction == "restore" else RAN])
    text.append(f" {p.label[:60]}")
    if p.prediction != "restore":
        text.append(f"  {p.reason}", style="dim")
    return text


class Display:
    """Prints progress and summaries for the notebooks of one ``incrcell run``."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.quiet = quiet  # --json: nothing at all
        self.live = not quiet and self.console.is_terminal

    def _print(self, text: Text | str) -> None:
        if not self.quiet:
            self.console.print(text)

    def begin(self, name: str) -> Observer:
        """A notebook starts running; the observer to tell about its cells."""
        if not self.live:
            return Observer()
        self.console.print(Text(name, style="bold"))
        return _LiveObserver(self.console)

    def end(self, name: str, outcome: Outcome, observer: Observer) -> None:
        if isinstance(observer, _LiveObserver):
            observer.close(outcome.cells)
        self._print(f"{name}: {summary(outcome.cells)}")

    def abort(self, observer: Observer) -> None:
        """The run stopped without an outcome: leave the terminal as it was."""
        if isinstance(observer, _LiveObserver):
            observer.close([])

    def plan(self, name: str, outcome: Outcome) -> None:
        self._print(Text(f"{name} (plan: nothing was run)", style="bold"))
        for prediction in outcome.predictions:
            self._print(prediction_row(prediction))
        self._print(f"{name}: {plan_summary(outcome.predictions)}")

    def total(self, outcomes: list[Outcome], plan: bool) -> None:
        if plan:
            text = plan_summary(p for o in outcomes for p in o.predictions)
        else:
            text = summary(c for o in outcomes for c in o.cells)
        self._print(f"{len(outcomes)} notebooks: {text}")


class _LiveObserver(Observer):
    """Finished cells printed in order as their states arrive; the running cell below."""

    live = True

    def __init__(self, console: Console) -> None:
        self.console = console
        # states arrive on the event loop, rich refreshes from a thread of its own
        self.lock = threading.Lock()
        self.running: tuple[Cell, float] | None = None
        self.pending: list[tuple[Cell, float, bool, bool]] = []  # finished, line not printed yet
        self.known: dict[str, dict[str, Any]] = {}  # cell id -> its last executed CellState
        self.spinner = Spinner("dots", style="cyan")
        self.display = Live(
            get_renderable=self._render,
            console=console,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def started(self, cell: Cell) -> None:
        with self.lock:
            self.running = (cell, time.monotonic())
        if not self.display.is_started:  # after the kernel's start-up lines, if it prints any
            self.display.start()

    def _render(self) -> Group:
        with self.lock:
            rows: list[Any] = [
                _row(cell.index, "…", seconds(spent), cell.label, "")
                for cell, spent, _, _ in self.pending[:5]
            ]
            if self.running is not None:
                cell, started = self.running
                spent = seconds(time.monotonic() - started)
                self.spinner.update(text=_row(cell.index, "running", spent, cell.label, ""))
                rows.append(self.spinner)
        return Group(*rows)

    def finished(self, cell: Cell, spent: float, failed: bool, reported: bool) -> None:
        with self.lock:
            self.running = None
            self.pending.append((cell, spent, failed, reported))
        self._flush()

    def states(self, cells: list[dict[str, Any]]) -> None:
        with self.lock:
            for state in cells:
                if state.get("state") in EXECUTED:
                    self.known[state["id"]] = state
        self._flush()

    def _flush(self) -> None:
        """Print the finished cells whose state is known, in order."""
        lines = []
        with self.lock:
            while self.pending:
                cell, spent, failed, reported = self.pending[0]
                state = self.known.get(cell.id)
                if reported and state is None:
                    break
                self.pending.pop(0)
                if state is None:
                    result = CellResult(
                        cell.index, cell.id, cell.label, ERROR if failed else RAN, "", spent
                    )
                else:
                    result = CellResult(
                        cell.index,
                        cell.id,
                        cell.label,
                        state["state"],
                        state.get("reason", ""),
                        float(state.get("duration") or spent),
                        float(state.get("saved") or 0.0),
                    )
                lines.append(result_row(result))
        for line in lines:
            self.console.print(line, no_wrap=True, overflow="ellipsis", soft_wrap=False)

    def close(self, results: list[CellResult]) -> None:
        """The run is over: the lines not printed yet, from the final results."""
        final = {r.id: r for r in results}
        with self.lock:
            rest, self.pending, self.running = self.pending, [], None
        self.display.stop()
        for cell, _, _, _ in rest:
            if cell.id in final:
                self.console.print(
                    result_row(final[cell.id]), no_wrap=True, overflow="ellipsis", soft_wrap=False
                )
