"""``%incrcell`` and ``%%incrcell``: look at and steer the cache from a notebook."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import warnings
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from incrcell.config import format_size
from incrcell.engine import (
    ERROR,
    RAN,
    RESTORED,
    UNCACHEABLE,
    CellRecord,
    Engine,
    store_settings,
)
from incrcell.predict import Predictor
from incrcell.store import CacheWarning, StoreError

from .hooks import DIRECTIVES, format_seconds

USAGE = """\
%incrcell status          every cell seen in this session: restored, ran or uncacheable, and why
%incrcell why [N]         why cell In[N] (default: the last cell that ran) was not restored
%incrcell clear [--all]   delete the entries of this notebook's and session's cells (--all: all)
%incrcell off | on        turn caching off / back on (the extension stays loaded)
%incrcell config [KEY=VALUE ...]
                          show or change settings: cache_dir=PATH, marker=on|off, enabled=on|off,
                          max_size=SIZE (e.g. 20GB; default), max_age=AGE (e.g. 30d; none)

%%incrcell rerun          (first line of a cell) run this cell even if cached, and re-record it
%%incrcell nocache        (first line of a cell) never cache this cell
%%incrcell cache          (first line of a cell) cache this cell although it reads the clock,
                          the network, entropy or other processes (you accept replayed results)
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as one-line UsageErrors instead of exiting."""

    def error(self, message: str) -> Any:
        raise UsageError(f"%incrcell: {message}. See %incrcell --help.")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def _parser() -> _Parser:
    parser = _Parser(
        prog="%incrcell",
        description="Incremental cell execution: "
        "unchanged cells restore their variables and outputs from a cache.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%%incrcell {status,why,clear,off,on,config} ...",
    )
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.add_parser("status", help="show every cell seen and what happened to it")
    why = commands.add_parser("why", help="why a cell ran instead of being restored")
    why.add_argument("n", nargs="?", type=int, help="execution count of the cell (In[N])")
    clear = commands.add_parser("clear", help="delete cache entries")
    clear.add_argument(
        "--all", action="store_true", help="the whole cache, not only this session's cells"
    )
    commands.add_parser("off", help="turn caching off")
    commands.add_parser("on", help="turn caching back on")
    config = commands.add_parser("config", help="show or change settings")
    config.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    return parser


def _cap(engine: Engine) -> str:
    """`` of 10.0 GB``: the cache's cap, if it can be opened."""
    try:
        return f" of {format_size(engine.store.cap)}"
    except StoreError:
        return ""


def _remote_line(engine: Engine) -> str | None:
    """The team cache: where, whether it answers, what came from it, the upload backlog."""
    try:
        status = engine.store.remote_status()
    except StoreError:
        return None
    lines = [f"  not used: {reason}" for reason in engine.unusable_settings]
    if status is not None:
        health = "available" if status.available else f"unavailable ({status.error})"
        lines.insert(
            0,
            f"remote {status.url} ({status.mode}): {health}; "
            f"{status.entries_remote} entries fetched, {status.refused} refused; "
            f"uploads: {status.uploaded} done, {status.pending} pending, {status.dropped} dropped",
        )
    return "\n".join(lines) or None


def _where(record: CellRecord) -> str:
    return f"In [{record.execution_count}]" if record.execution_count is not None else "cell"


@magics_class
class IncrcellMagics(Magics):
    """The ``%incrcell`` line magic and the ``%%incrcell`` cell magic."""

    shell: Any  # the shell it was registered with (``Magics`` allows None: never here)

    def __init__(self, shell: Any, engine: Engine, predictor: Predictor) -> None:
        super().__init__(shell)
        self.engine = engine
        self.predictor = predictor  # status shows the sidebar's states, in the same words

    @line_cell_magic
    def incrcell(self, line: str, cell: str | None = None) -> None:
        """Incremental cell execution. Run ``%incrcell --help`` for the commands."""
        if cell is not None:
            return self._cell(line, cell)
        try:
            args = _parser().parse_args(shlex.split(line))
        except _HelpShown:
            print(_parser().format_help())
            return None
        except ValueError as exc:  # unbalanced quotes
            raise UsageError(f"%incrcell: {exc}. See %incrcell --help.") from None
        command = args.command or "status"
        if command == "status":
            print(self.status_text())
        elif command == "why":
            print(self.why_text(args.n))
        elif command == "clear":
            if args.all:
                self.engine.clear_all()
                print(f"incrcell: cleared the whole cache in {self.engine.config.cache_dir}")
            else:
                removed, freed = self.predictor.clear_cache()
                print(
                    f"incrcell: cleared {removed} cache entries of this notebook's and "
                    f"session's cells ({format_size(freed)})"
                )
        elif command in ("on", "off"):
            self.engine.config.enabled = command == "on"
            print(f"incrcell: caching is {command}")
        elif command == "config":
            self._configure(args.settings)
            print(self.engine.config.describe())
        return None

    def _configure(self, settings: list[str]) -> None:
        """Apply KEY=VALUE settings all or nothing; a cache_dir must be usable."""
        config = self.engine.config
        before = dataclasses.replace(config)
        try:
            for setting in settings:
                key, sep, value = setting.partition("=")
                if not sep:
                    raise ValueError(f"expected KEY=VALUE, got {setting!r}")
                config.set(key.strip(), value)
            if store_settings(config) != store_settings(before):
                with warnings.catch_warnings():  # said here, as the command's error
                    warnings.simplefilter("ignore", CacheWarning)
                    self.engine.store  # noqa: B018 - opens it, or says why it cannot
                if self.engine.unusable_settings:
                    raise ValueError(self.engine.unusable_settings[0])
        except (ValueError, StoreError) as exc:
            for field in dataclasses.fields(config):
                setattr(config, field.name, getattr(before, field.name))
            reason = exc.reason if isinstance(exc, StoreError) else str(exc)
            raise UsageError(f"%incrcell config: {reason}") from None

    def _cell(self, line: str, cell: str) -> None:
        """Reached only when the hooks did not substitute the body (e.g. a nested call)."""
        directive = line.strip().split()[0] if line.strip() else ""
        if directive not in DIRECTIVES:
            raise UsageError(
                f"%%incrcell: unknown directive {directive!r}; use "
                f"{' or '.join(DIRECTIVES)}. See %incrcell --help."
            )
        self.shell.run_cell(cell, store_history=False)

    # -- reports ---------------------------------------------------------------------
    def status_text(self) -> str:
        engine = self.engine
        records = sorted(
            engine.records.values(),
            key=lambda r: (r.execution_count is None, r.execution_count or 0),
        )
        report = self.predictor.report(self.shell.user_ns)
        counts = report.totals
        current = {cell.identity: cell for cell in report.cells}  # stale cells say so
        stale = f", {len(report.stale)} stale" if report.stale else ""
        lines = [
            f"incrcell {'on' if engine.config.enabled else 'OFF'}: "
            f"{counts[RESTORED]} restored, {counts[RAN]} ran, "
            f"{counts[UNCACHEABLE]} uncacheable, {counts[ERROR]} failed{stale}; "
            f"{format_seconds(counts['saved'])} saved; "
            f"cache {format_size(int(counts['cache_bytes']))}{_cap(engine)} "
            f"in {engine.config.cache_dir}"
        ]
        remote = _remote_line(engine)
        if remote is not None:
            lines.append(remote)
        for r in records:
            cell = current.get(r.identity)
            state, reason = (cell.state, cell.reason) if cell else (r.state, r.reason)
            detail = f"saved {format_seconds(r.saved)}" if state == RESTORED else reason
            if state == RESTORED and r.origin == "remote":
                detail = f"{detail}, from the remote cache"
            lines.append(
                f"  {_where(r):>9}  {state:<11}  {format_seconds(r.duration):>8}  "
                f"{r.label[:50]:<50}  {detail}"
            )
        return "\n".join(lines)

    def why_text(self, n: int | None) -> str:
        engine = self.engine
        if n is None:
            current = self.shell.execution_count - 1
            candidates = [
                r
                for c, r in sorted(engine.by_count.items())
                if c != current and r.state != RESTORED
            ]
            if not candidates:
                return "incrcell: no cell has run yet in this session."
            record = candidates[-1]
        else:
            found = engine.by_count.get(n)
            if found is None:
                raise UsageError(
                    f"%incrcell why: In [{n}] was not seen by incrcell "
                    "(run %incrcell status to see the cells it knows)"
                )
            record = found
        head = f"{_where(record)} `{record.label}`"
        if record.state == RESTORED:
            text = f"{head} was restored from the cache (saved {format_seconds(record.saved)})."
        elif record.state == RAN:
            text = f"{head} ran because: {record.reason}."
        elif record.state == UNCACHEABLE:
            text = f"{head} is uncacheable: {record.reason}."
        else:
            text = f"{head} {record.reason}."
        node = engine.graph.node(record.identity)
        if node and node.producers:
            sources = []
            for name, producer in sorted(node.producers.items()):
                upstream = engine.records.get(producer)
                sources.append(f"`{name}` from {_where(upstream) if upstream else 'another cell'}")
            text += "\nIt reads " + ", ".join(sources) + "."
        return text
