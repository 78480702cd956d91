"""The IPython glue: runs the engine around every cell.

The extension (:mod:`incrcell.kernel.extension`) owns IPython's events and
tells the hooks when a cell (not a ``run_cell`` nested in one) starts and ends:

- :meth:`KernelHooks.cell_starts`: ask the engine for a plan (restore, record,
  or just run).
- an AST transformer: on a restore, the cell's code is replaced by one call,
  ``__import__('incrcell.kernel.hooks').kernel.hooks._replay()``, whose return
  value is the recorded Out value, so IPython's displayhook sets ``Out[n]``,
  ``_`` and the execute result exactly as a real run would.  For
  ``%%incrcell rerun`` / ``nocache`` cells it substitutes the cell's body for
  the magic call.
- :meth:`KernelHooks.cell_ends`: hand the outcome (success, outputs, Out value)
  back.

Nothing here may break a user's cell: an unexpected error inside incrcell is
reported in one line and the cell runs as in plain IPython.
"""

from __future__ import annotations

import ast
import re
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from incrcell.engine import RESTORE, RUN, Engine, Plan, Recording, Restore
from incrcell.reasons import Code, Reason
from incrcell.serialise import one_line
from incrcell.store import CacheWarning

from .outputs import OutputRecorder, at_result, publish, replay

#: ``%%incrcell rerun`` / ``nocache`` / ``cache`` as the first line of a cell.
DIRECTIVE = re.compile(r"\A[ \t]*%%incrcell[ \t]+(\S+)[^\n]*(?:\n|\Z)")
DIRECTIVES = ("rerun", "nocache", "cache")
_REPLAY = "__import__('incrcell.kernel.hooks').kernel.hooks._replay()"

#: The hooks whose restored cell was just compiled to ``_REPLAY``, until that code runs:
#: the only way from the cell's code back to them (set and cleared by KernelHooks alone).
_restoring: KernelHooks | None = None


def split_directive(raw_cell: str) -> tuple[str | None, str]:
    """``("rerun", body)`` for a cell starting with ``%%incrcell rerun``, else
    ``(None, raw_cell)``."""
    match = DIRECTIVE.match(raw_cell)
    if match and match.group(1) in DIRECTIVES:
        return match.group(1), raw_cell[match.end() :]
    return None, raw_cell


def is_session_name(shell: Any, name: str) -> bool:
    """Objects IPython put in ``shell``'s namespace (``get_ipython``, ``In``...), not user data.

    A plain function IPython put there (its ``open``, which only refuses the
    standard streams' descriptors) is not session state: cells calling it are
    keyed on it like on any library function, and the file watch sees its opens.
    """
    hidden = shell.user_ns_hidden
    if name not in hidden:
        return False
    value = shell.user_ns.get(name, hidden)
    return (
        value is hidden[name]
        and not isinstance(value, str)
        and not isinstance(value, types.FunctionType)
    )


@dataclass
class _Pending:
    """The cell between :meth:`KernelHooks.cell_starts` and :meth:`KernelHooks.cell_ends`."""

    plan: Plan | None
    body: str | None = None  # transformed body of a directive cell, run instead of the magic
    recorder: OutputRecorder | None = None
    recording: Recording | None = None
    substituted: bool = False
    interrupted: bool = False  # Ctrl-C while it was being planned: it must not run
    # a restore's recorded outputs that came after its result, replayed when the cell ends
    # (with the restored note), as they came after it in the run it was recorded from
    after_result: list[dict[str, Any]] | None = None


class _CellSubstitution(ast.NodeTransformer):
    """Replaces the code of the pending cell, once, when IPython compiles it."""

    def __init__(self, hooks: KernelHooks) -> None:
        self.hooks = hooks

    def visit_Module(self, node: ast.Module) -> ast.Module:
        pending = self.hooks.pending
        if pending is None or pending.substituted:
            return node  # other code compiled meanwhile (e.g. by %time)
        pending.substituted = True
        if pending.interrupted:
            return _interrupted_code()
        if pending.plan is not None and pending.plan.action == RESTORE:
            global _restoring
            _restoring = self.hooks
            return ast.parse(_REPLAY)
        if pending.body is not None:
            return compile(
                pending.body,
                "<cell>",
                "exec",
                flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
        return node


def _interrupted_code() -> ast.Module:
    """The code of a cell interrupted while incrcell prepared it: it stops as a cell
    interrupted on its first line would, without running anything."""
    module = ast.parse("raise KeyboardInterrupt()")
    raised = module.body[0]
    assert isinstance(raised, ast.Raise) and isinstance(raised.exc, ast.Call)
    raised.exc.args = [ast.Constant("while incrcell was loading this cell: it did not run")]
    return ast.fix_missing_locations(module)


def _warn(what: str, exc: BaseException) -> None:
    print(
        f"incrcell: {what} ({type(exc).__name__}: {one_line(exc)}); the cell runs as usual.",
        file=sys.stderr,
    )


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show the engine's cache warnings as one plain line each under the cell.

    The core reports through ``warnings`` (so it is testable on its own);
    Python's default format would add a file path and a source line.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CacheWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, CacheWarning):
            print(str(warning.message), file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message,
                warning.category,
                warning.filename,
                warning.lineno,
                source=warning.source,
            )


class KernelHooks:
    """Connects one :class:`Engine` to one IPython shell, cell by cell."""

    def __init__(self, shell: Any, engine: Engine) -> None:
        self.shell = shell
        self.engine = engine
        self.pending: _Pending | None = None
        self._transformer = _CellSubstitution(self)

    def install(self) -> None:
        """Put the traceback filter in place (the cell substitution comes and goes with
        the cells that need it: see :meth:`_substitute`)."""
        # an instance attribute shadowing the method: deleted again by uninstall
        self.shell.InteractiveTB.structured_traceback = self._structured_traceback

    def uninstall(self) -> None:
        """Undo :meth:`install` completely and forget the cell under way; safe to call
        from inside a cell."""
        if vars(self.shell.InteractiveTB).get("structured_traceback") == self._structured_traceback:
            del self.shell.InteractiveTB.structured_traceback
        self._drop_pending()

    def _substitute(self, pending: _Pending) -> None:
        """Make ``pending`` the cell under way, with the cell substitution in place (first
        of IPython's AST transformers) if its code is to be replaced: a restore, a
        directive cell's body, an interrupted plan.  Only then: while any transformer is
        registered, IPython walks every cell's tree once more to fill in locations."""
        self.pending = pending
        plan = pending.plan
        needed = (
            pending.interrupted
            or pending.body is not None
            or (plan is not None and plan.action == RESTORE)
        )
        if needed and self._transformer not in self.shell.ast_transformers:
            self.shell.ast_transformers.insert(0, self._transformer)

    def _stop_substituting(self) -> None:
        """Take the cell substitution out again (at the end of the cell that needed it)."""
        if self._transformer in self.shell.ast_transformers:
            self.shell.ast_transformers.remove(self._transformer)

    def _structured_traceback(
        self, etype: Any, evalue: Any, etb: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        """IPython's traceback formatting, without incrcell's own frames (see
        :func:`without_own_frames`)."""
        etb = without_own_frames(evalue, etb)
        return type(self.shell.InteractiveTB).structured_traceback(
            self.shell.InteractiveTB, etype, evalue, etb, *args, **kwargs
        )

    # -- events ------------------------------------------------------------------
    def prepare(self, raw_cell: str, transformed: str | None = None) -> tuple[str | None, str, str]:
        """(``%%incrcell`` directive or None, body, the Python code IPython runs) of a cell.

        ``transformed`` is IPython's transformation of ``raw_cell`` if known.
        """
        directive, body = split_directive(raw_cell)
        return (
            directive,
            body,
            (None if directive else transformed) or self.shell.transform_cell(body),
        )

    def refusal(self) -> Reason | None:
        """Why no cell can be cached under the shell's current settings (None if they can)."""
        if self.shell.ast_node_interactivity != "last_expr":
            return Code.INTERACTIVITY(value=self.shell.ast_node_interactivity)
        return None

    def cell_starts(self, info: Any) -> None:
        """A cell is about to run (IPython's ``pre_run_cell``; never a nested ``run_cell``,
        whose code is part of the running cell: that magic's cell is uncacheable, so
        nothing of incrcell's may appear in what it captures)."""
        try:
            self._drop_pending()
            self._plan_cell(info)
        except KeyboardInterrupt:
            # Ctrl-C while incrcell hashed the inputs or loaded a hit: the cell must not
            # run (the user asked to stop), and nothing was bound yet
            self._drop_pending()
            self._substitute(_Pending(None, interrupted=True))

    def _plan_cell(self, info: Any) -> None:
        """Plan the cell about to run and start recording it if it is a miss."""
        directive, body, transformed = self.prepare(
            info.raw_cell, getattr(info, "transformed_cell", None)
        )
        plan = None
        if self.engine.config.enabled:
            try:
                # Loading a hit's values may import libraries (pandas...) that look for
                # get_ipython in builtins, as they would find it while the cell runs.
                with _one_line_warnings(), self.shell.builtin_trap:
                    plan = self.engine.plan(
                        transformed,
                        self.shell.user_ns,
                        raw_source=body,
                        cell_id=getattr(info, "cell_id", None),
                        execution_count=(
                            self.shell.execution_count - 1 if info.store_history else None
                        ),
                        directive=directive,
                        refusal=self.refusal(),
                    )
            except Exception as exc:  # a bug here must not cost the user their cell
                _warn("could not analyse this cell", exc)
        else:  # caching off: the cell just runs; status and the sidebar say so
            try:
                self.engine.ran_uncached(
                    transformed,
                    body,
                    getattr(info, "cell_id", None),
                    self.shell.execution_count - 1 if info.store_history else None,
                )
            except Exception as exc:
                _warn("could not note this cell", exc)
        if plan is None:  # its code runs unseen: what the engine knows may not hold after it
            self.engine.forget_digests()
        # pending first, so that an interrupt while the watches start stops those started
        pending = _Pending(plan, transformed if directive else None)
        self._substitute(pending)
        recording = self.engine.recording(plan) if plan is not None else None
        if recording is not None:
            pending.recorder = OutputRecorder(self.shell.display_pub, self.shell.displayhook)
            pending.recording = recording
            recording.start()

    def cell_ends(self, result: Any) -> None:
        """The cell ended (IPython's ``post_run_cell`` for the cell of :meth:`cell_starts`)."""
        pending, self.pending = self.pending, None
        self._forget_replay()
        self._stop_substituting()
        if pending is None:  # e.g. the cell that ran %load_ext: it had no pre_run_cell
            pending = self._loading_cell(result)
            if pending is None:
                return
        try:
            events = pending.recorder.close() if pending.recorder else []
        finally:
            if pending.recording is not None:
                pending.recording.stop()
        plan = pending.plan
        if plan is None:
            return
        if plan.action == RESTORE and not pending.substituted:
            return  # the cell never reached execution (it failed to compile)
        if pending.after_result is not None:  # restored
            self._replay_rest(pending)
        try:
            with _one_line_warnings():
                self.engine.finish(
                    plan,
                    self.shell.user_ns,
                    success=result.success,
                    outputs=events,
                    result=result.result,
                    recording=pending.recording,
                )
        except KeyboardInterrupt:
            print(
                "incrcell: interrupted while recording this cell: it ran, but is not in the "
                "cache (it will run again next time).",
                file=sys.stderr,
            )
        except Exception as exc:
            print(
                f"incrcell: could not record this cell ({type(exc).__name__}: "
                f"{one_line(exc)}); it ran, but is not in the cache.",
                file=sys.stderr,
            )

    def _loading_cell(self, result: Any) -> _Pending | None:
        """The cell that loaded incrcell started before the hooks: plan it now, so that
        status and the sidebar list it (uncacheable: ``%load_ext`` is a magic).

        Only a plan that just runs is kept: what the cell did cannot be recorded now.
        """
        info = getattr(result, "info", None)
        if info is None:
            return None
        self.cell_starts(info)
        if self.pending is None or self.pending.plan is None or self.pending.plan.action != RUN:
            self._drop_pending()
            return None
        pending, self.pending = self.pending, None
        return pending

    def _drop_pending(self) -> None:
        self._forget_replay()
        self._stop_substituting()
        if self.pending is not None:
            if self.pending.recorder is not None:
                self.pending.recorder.close()
            if self.pending.recording is not None:
                self.pending.recording.stop()
        self.pending = None

    def _forget_replay(self) -> None:
        """Nothing of ours outlives the cell: a restored cell's code that never ran (it
        failed to compile) leaves no reference to these hooks behind."""
        global _restoring
        if _restoring is self:
            _restoring = None

    # -- the replacement code of a restored cell ----------------------------------
    def replay(self) -> Any:
        __tracebackhide__ = True
        pending = self.pending
        assert pending is not None and isinstance(pending.plan, Restore)
        plan, entry = pending.plan, pending.plan.entry
        value = self.engine.restore(plan, self.shell.user_ns)
        before, pending.after_result = at_result(entry.outputs)
        replay(before, self.shell.display_pub)
        return value

    def _replay_rest(self, pending: _Pending) -> None:
        """The end of a restored cell's outputs: what came after its result, and the note."""
        assert isinstance(pending.plan, Restore)
        replay(pending.after_result or [], self.shell.display_pub)
        if self.engine.config.marker:
            publish(self.shell.display_pub, *restored_marker(pending.plan.entry.duration))


def _own_frame(tb: types.TracebackType) -> bool:
    """A traceback entry of one of incrcell's invisible frames (wrappers of ``open``...)."""
    frame = tb.tb_frame
    return frame.f_globals.get("__name__", "").partition(".")[0] == "incrcell" and bool(
        frame.f_locals.get("__tracebackhide__")
    )


def _cut(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback ``tb`` without incrcell's invisible frames; cut in place but for its head."""
    while tb is not None and _own_frame(tb):
        tb = tb.tb_next
    entry = tb
    while entry is not None:
        while entry.tb_next is not None and _own_frame(entry.tb_next):
            entry.tb_next = entry.tb_next.tb_next
        entry = entry.tb_next
    return tb


def without_own_frames(
    exc: BaseException | None, tb: types.TracebackType | None
) -> types.TracebackType | None:
    """``tb`` with incrcell's invisible frames cut out, in place (so ``%debug`` and
    ``sys.last_traceback`` do not show them either), and the same for ``exc`` and the
    exceptions it was raised from or during.

    IPython hides frames with ``__tracebackhide__`` except the last one, and a
    wrapper of ``open`` is the last Python frame when the C ``open`` it calls raises.
    """
    head = _cut(tb)
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = _cut(current.__traceback__)
        todo += [current.__cause__, current.__context__]
    return head


def restored_marker(saved: float) -> tuple[dict[str, str], dict[str, Any]]:
    """The unobtrusive note shown under a restored cell (data, metadata)."""
    text = f"restored by incrcell, saved {format_seconds(saved)}"
    html = (
        f'<div class="incrcell-restored" style="font-size:0.8em;opacity:0.6">&#8634; {text}</div>'
    )
    return (
        {"text/plain": f"[{text}]", "text/html": html},
        {"incrcell": {"restored": True, "saved": saved}},
    )


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _replay() -> Any:
    """Called by the code that replaces a restored cell (see ``_REPLAY``)."""
    __tracebackhide__ = True
    global _restoring
    hooks, _restoring = _restoring, None
    if hooks is None:
        raise RuntimeError("incrcell was unloaded while restoring a cell; run the cell again")
    return hooks.replay()
