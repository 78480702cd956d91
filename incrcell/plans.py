"""The decision the engine makes for one cell, typed by what it does with it.

:class:`Restore` (a hit, with everything it binds already loaded),
:class:`Record` (a miss: run it and store what it leaves, under ``key``),
:class:`Run` (run it, uncacheable, because of ``reason``) and :class:`Quick` (run
it: cheaper than a restore) share what every plan knows of the cell; a field
exists only where it means something.  A
:class:`CellRecord` is what a cell's last execution did; a :class:`Recording`
holds the watches a recorded cell runs under.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from . import interpreter
from .analysis import CellAnalysis
from .files import FileWatch
from .randomness import SeedWatch
from .reasons import Action, Reason, State
from .store import Entry


@dataclass
class PlanBase:
    """What every plan knows of the cell, whatever it does with it."""

    identity: str
    source: str  # as typed, without a %%incrcell line
    execution_count: int | None
    source_digest: str  # source_hash of the code that runs
    analysis: CellAnalysis | None  # None: it does not parse
    reads: frozenset[str]
    writes: frozenset[str]
    bindings: dict[str, int]  # name -> id(value) before running (Run and Record only)
    started: float  # time.perf_counter() when planning started


@dataclass
class Restore(PlanBase):
    """A hit: the entry to restore, and everything it binds, already loaded."""

    action: ClassVar[Action] = Action.RESTORE
    reason: ClassVar[None] = None
    entry: Entry
    key: str
    values: dict[str, Any]  # name -> value to bind
    result: Any  # the Out value to return
    random_after: dict[str, Any]  # generator states to set
    state_after: dict[str, Any]  # interpreter items to set
    outputs: dict[str, bytes | str | None]  # paths to put back
    origin: str = "local"  # where the entry came from: "local" or "remote" (the team cache)


@dataclass
class _Runs(PlanBase):
    """A plan whose code runs: why, and the interpreter state it starts from."""

    reason: Reason
    # the interpreter state before (interpreter.snapshot) of the modules ``watched``
    watched: list[str]
    reach: frozenset[str]  # modules the cell and the code it reaches refer to
    state_before: interpreter.Snapshot


@dataclass
class Run(_Runs):
    """A cell that runs and is not stored: ``reason`` says why it cannot be."""

    action: ClassVar[Action] = Action.RUN


@dataclass
class Quick(PlanBase):
    """A cell cheaper to run than to restore (quick.py): it runs, unwatched and unstored.

    It can change nothing but the names it binds (``written``: name -> kind), so what
    the engine knows of every other value and of the interpreter still holds after it.
    """

    action: ClassVar[Action] = Action.RUN
    reason: Reason
    written: dict[str, str]


@dataclass
class Record(_Runs):
    """A miss: the cell runs, and what it leaves is stored under ``key``."""

    action: ClassVar[Action] = Action.RECORD
    key: str
    components: dict[str, Any]
    digests: dict[str, bytes]  # input name -> digest before running
    # input name -> ids of the mutable objects inside it before running (ValueHasher.collect)
    inner: dict[str, set[int]]
    codes: tuple[types.CodeType, ...]  # code of the functions it calls
    random_before: dict[str, Any]  # randomness.snapshot()
    through: dict[str, str | None]  # see Engine._through
    stores: frozenset[str]  # modules it sets attributes on itself (effects.Effects.stores)
    unresolved: tuple[str, ...]  # calls into modules the cell imports (effects.late_effects)
    cache_anyway: bool  # %%incrcell cache: fresh entropy is accepted


#: The decision for one execution of one cell, made before it runs.
Plan = Restore | Record | Run | Quick


@dataclass
class CellRecord:
    """What happened the last time a cell executed, for status and ``why``."""

    identity: str
    label: str
    execution_count: int | None
    state: State
    reason: Reason | None  # None for a restore
    duration: float  # seconds it took this time (run, or restore)
    saved: float  # seconds a restore saved (0 when it ran)
    key: str | None = None
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    source_digest: str = ""  # source_hash of the code it executed (the sidebar's "stale")
    origin: str | None = None  # a restore's entry: from the "local" or the "remote" cache


class Recording:
    """The watches over a cell being recorded: the files it opens, the seeding of the
    global random generators.  :meth:`start` before its code runs, :meth:`stop` after
    (also when it failed); :meth:`Engine.finish` reads them."""

    def __init__(self, files: FileWatch, seeds: SeedWatch) -> None:
        self.files = files
        self.seeds = seeds

    def start(self) -> Recording:
        self.files.start()
        self.seeds.start()
        return self

    def stop(self) -> Recording:
        try:
            self.files.stop()
        finally:
            self.seeds.stop()
        return self

    @contextmanager
    def running(self) -> Iterator[Recording]:
        """Watch while the ``with`` block runs the cell."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
