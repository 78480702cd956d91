"""Per cell: restore it from the cache or run it, and record what a run left.

This is the core decision, free of IPython so it can be tested on a plain
dict namespace.  The IPython glue (``hooks.py``) and the test harness drive
one cell the same way:

- :meth:`Engine.plan` before the cell runs decides, in named stages:
  **quick** (a cell computing with plain values only runs again: a restore
  would cost more, quick.py) → **refuse** (what its code alone forbids) →
  **expand** (what the functions it calls read and write) → **effects** (what
  it reads from the world) →
  **key** (hash everything it reads, keying.py) → **look up** → **admit**
  (the entry found still holds now: files, random states, the interpreter,
  what its values refer to) → **load** (every value a hit binds, *now*, so
  that a corrupt entry turns into a miss before anything is touched).  The
  result is typed by action (plans.py): :class:`Restore`, :class:`Record`
  (run it and store what it left), :class:`Run` (run it, uncacheable, with
  the reason) or :class:`Quick`.
- :meth:`Engine.restore` while the cell "runs" on a hit, instead of its code.
- :meth:`Engine.recording` while a recorded cell runs: the watches over the
  files it opens and the seeding of random generators (:class:`Recording`).
- :meth:`Engine.finish` after it ran: **observe** what it did to the
  interpreter → **persist** what it wrote, if it succeeded (persist.py) → **record** the
  outcome for ``%incrcell status`` / ``why`` and the sidebar.

Fail safe, never fail stale: whenever the engine cannot prove that restoring
is equivalent to running (an input it cannot hash, a read it cannot see, a
value it cannot pickle), the cell runs, and the reason (reasons.py) is kept.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from . import interpreter, randomness
from .analysis import (
    DYNAMIC_BUILTINS,
    CellAnalysis,
    analyse_cell,
    expand_through_callables,
)
from .config import Config
from .effects import Effects, find_effects, late_effects, late_global_stores
from .explain import explain_miss
from .files import (
    MISSING,
    FileWatch,
    changed_files,
    file_digest,
    install,
    is_state,
    probe_changed,
    write_back,
)
from .fingerprint import StandIn, Unhashable, ValueHasher, is_leaf, source_hash
from .graph import CellGraph
from .keying import BOUND, KEY_FORMAT, STATE_INPUT, UNBOUND, KeyInputs, cell_key
from .packages import changed_since_import, note_loaded, package_versions
from .persist import Persister
from .plans import CellRecord, Plan, PlanBase, Quick, Record, Recording, Restore, Run
from .quick import kind_of, quick_cell
from .randomness import SeedWatch
from .reasons import Action, Code, Reason, State, several
from .serialise import loads, one_line
from .sharing import SELF_STANDING, unshared
from .sources import register_sources
from .store import CacheWarning, Entry, Store, StoreError, open_store

__all__ = [
    "BOUND",
    "KEY_FORMAT",
    "STATE_INPUT",
    "UNBOUND",
    "CellRecord",
    "Engine",
    "Plan",
    "Record",
    "Recording",
    "Restore",
    "Run",
]

# Names IPython keeps in the user namespace for its history: reading them
# makes a cell depend on execution counts, not on content.
_HISTORY_NAME = re.compile(r"^(_+|_\d+|_i+|_i\d+|_ih|_oh|_dh|In|Out)$")
_MAGIC_NAMES = frozenset({"get_ipython", "exit", "quit"})
# Calls through which a cell can read or write names the analysis cannot see
# (``getattr`` on an object is just attribute access; ``"*"`` is a star import).
_DYNAMIC = (DYNAMIC_BUILTINS - {"getattr"}) | {"*"}

_ABSENT = object()

# Cell states and plan actions, by their old names (see reasons.State / Action).
RESTORED, RAN, UNCACHEABLE, ERROR = State
RESTORE, RECORD, RUN = Action


@dataclass
class _Keyed:
    """The key stage's result: the key, and what hashing the inputs learned."""

    key: str
    components: dict[str, Any]
    digests: dict[str, bytes]
    inner: dict[str, set[int]]
    settings: dict[str, Any]  # interpreter.current's memo


@dataclass
class _Scope:
    """The modules a cell reaches: those whose state keys it and is watched while it runs."""

    reach: frozenset[str] = frozenset()
    watched: list[str] | None = None


_TRAILING_COMMENT = re.compile(r"\s+#[^'\"]*$")


def cell_label(source: str) -> str:
    """A cell's first line of code (else its first comment), as status and the sidebar
    show it: six cells starting with ``# slow`` are told apart by their code."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    code = [line for line in lines if not line.startswith("#")]
    if code:  # without a trailing comment (kept if a quote follows it: maybe in a string)
        return _TRAILING_COMMENT.sub("", code[0])[:80]
    return (lines or ["(empty)"])[0][:80]


def _type_name(value: object) -> str:
    return type(value).__qualname__


def unhashable_input(name: str, value: object, exc: Unhashable) -> Reason:
    """Why a cell reading ``value`` as ``name`` is uncacheable."""
    return Code.UNHASHABLE_INPUT(name=name, type=_type_name(value), detail=exc.reason)


def files_changed(entry: Entry) -> Reason | None:
    """Why the files a cache entry read forbid restoring it now (None when they do not)."""
    if (entry.files or entry.written or entry.probes) and entry.cwd != os.getcwd():
        # the same relative path may name another file from here
        return Code.OTHER_CWD(cwd=entry.cwd)
    changed = changed_files(entry.files)
    if changed:
        gone = entry.files[changed[0]] != MISSING and file_digest(changed[0]) == MISSING
        shown = os.path.relpath(changed[0])
        return Code.FILE_DELETED(path=shown) if gone else Code.FILE_CHANGED(path=shown)
    return probe_changed(entry.probes)


def store_settings(config: Config) -> tuple[object, ...]:
    """What the store is opened from: a change (``%incrcell config``) opens it anew."""
    return (config.cache_dir, config.remote, config.remote_mode, config.trusted_keys)


def _components(note: dict[str, Any] | None) -> dict[str, Any] | None:
    """The key components a lineage note holds (None if none)."""
    components = note.get("components") if isinstance(note, dict) else None
    return components if isinstance(components, dict) else None


class Engine:
    """One session's cache decisions.

    ``store``: the cache, standing for ``config.cache_dir`` until that changes;
    by default opened (lazily) from it with :func:`open_store`.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        store: Store | None = None,
        is_session_name: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config or Config()
        self.is_session_name: Callable[[str], bool] = is_session_name or (lambda name: False)
        self._store: Store | None = store
        self._store_settings = store_settings(self.config) if store is not None else None
        self._retired: list[Store] = []  # stores replaced while uploading (see close)
        # the sharing settings the store could not use (said once, shown by status)
        self.unusable_settings: list[str] = []
        self._unused: list[str] = []
        self._unsaid: list[str] = []  # ... not said yet
        self._refused: tuple[object, str] | None = None  # the unusable cache last warned about
        self.graph = CellGraph()
        self.records: dict[str, CellRecord] = {}  # identity -> latest
        self.by_count: dict[int, CellRecord] = {}
        # id -> (value, digest, packages) of arrays and frames a cell just wrote or restored:
        # while no user code runs, their digests stand (see forget_digests)
        self.known: dict[int, tuple[object, bytes, frozenset[str]]] = {}
        # id -> StandIn of the values recorded or restored under the digest of their stored
        # copy (fingerprint.restored_digest), still bound; kept while user code runs
        self.stand_ins: dict[int, StandIn] = {}
        # global random generator -> whether it holds fresh entropy (see randomness.py);
        # absent: as its module left it on import
        self.fresh: dict[str, bool] = {}
        # interpreter items (see interpreter.py) any cell of this session changed: their
        # current values key every later cell (the SETTINGS key every cell anyway)
        self.touched: set[str] = set()
        self._setting_digests: dict[str, tuple[Any, str]] = {}  # see _state_digest
        # the interpreter state the last cell that ran left, while nothing else ran since
        # (see forget_digests): the next cell's state before it (interpreter.snapshot's since)
        self._state_after: interpreter.Snapshot | None = None
        self._persister = Persister(
            lambda: self.store,
            self._user_name,
            lambda name: self.is_session_name(name),
            self._remember,
            self.stand_ins,
        )

    def forget_digests(self) -> None:
        """Drop what holds only while no user code runs: the digests of values just written
        or restored, and the interpreter state the last cell left.

        The engine calls it before every cell whose code runs; the IPython glue
        calls it when anything else may have run user code between two cells
        (a silent execution, a widget's comm message, a cell run without a plan).
        """
        self.known.clear()
        self._state_after = None

    def _remember(self, value: object, digest: bytes, packages: frozenset[str]) -> None:
        if is_leaf(value):
            self.known[id(value)] = (value, digest, packages)

    def _user_name(self, name: str) -> bool:
        """A name holding the user's data: not IPython's history, not a session object."""
        return not _HISTORY_NAME.match(name) and not self.is_session_name(name)

    # -- store ---------------------------------------------------------------
    def _setting_unusable(self, reason: str, instead: str) -> None:
        """A sharing setting the store left out (see :func:`open_store`): kept for
        ``%incrcell status``, and said once, under the next cell that finishes (the store
        may be opened outside a cell: the sidebar's report)."""
        self._unused.append(reason)
        self._unsaid.append(
            f"incrcell: {reason}; {instead} until it is fixed (%incrcell config remote=... "
            "or trusted_keys=... changes it)."
        )

    def _say_unusable_settings(self) -> None:
        for line in self._unsaid:
            warnings.warn(line, CacheWarning, stacklevel=4)
        self._unsaid.clear()

    @property
    def store(self) -> Store:
        """The cache; raises StoreError (one line, what to do) if it is unusable.

        A sharing setting that cannot be used (the remote, a trusted key) is said once
        per setting, and left out: the local cache keeps working without it.
        """
        config = self.config
        settings = store_settings(self.config)
        if self._store is None or self._store_settings != settings:
            self._unused = []
            if self._store is not None and self._store.remote is not None:
                self._retired.append(self._store)  # its uploads go on (see close)
            try:
                self._store = open_store(
                    config.cache_dir,
                    max_size=config.max_size,
                    max_age=config.max_age,
                    remote=config.remote,
                    remote_mode=config.remote_mode,
                    trusted_keys=config.trusted_keys,
                    fallback=self._setting_unusable,
                    write_behind=True,
                )
            except StoreError as exc:
                reason = exc.reason
                if reason.startswith("the cache directory"):
                    reason += "; set INCRCELL_CACHE_DIR or run %incrcell config cache_dir=PATH"
                raise StoreError(reason) from None
            self._store_settings = settings
            self.unusable_settings = self._unused
            self._unused = []
        store = self._store
        store.max_size, store.max_age = config.max_size, config.max_age
        return store

    def close(self, timeout: float) -> bool:
        """Let go of the stores this session opened: their background uploads are finished
        (at most ``timeout`` seconds in all; whether they are) and nothing of them stays
        registered (an exit handler, a worker thread).  What is not uploaded stays in the
        local cache (``incrcell cache push``)."""
        deadline = time.monotonic() + timeout
        stores = [*self._retired, *([self._store] if self._store is not None else [])]
        self._retired.clear()
        done = True
        for store in stores:
            done = store.close(max(deadline - time.monotonic(), 0.0)) and done
        return done

    # -- before the cell: the decision ---------------------------------------------
    def plan(
        self,
        source: str,
        namespace: MutableMapping[str, Any],
        *,
        raw_source: str | None = None,
        cell_id: str | None = None,
        execution_count: int | None = None,
        directive: str | None = None,
        refusal: Reason | None = None,
    ) -> Plan:
        """Decide what to do with a cell whose (IPython-transformed) code is ``source``.

        ``directive`` is ``"rerun"``, ``"nocache"`` or ``"cache"`` for cells
        under those cell magics; ``refusal``, when given, is a reason the caller
        already knows the cell cannot be cached.
        """
        started = time.perf_counter()
        install()  # the file wrappers, before any input is hashed (see files.install)
        digest = source_hash(source)  # parses the source: once per cell
        cell = PlanBase(
            f"cell:{cell_id}" if cell_id else f"src:{digest}",
            raw_source if raw_source is not None else source,
            execution_count,
            digest,
            None,
            frozenset(),
            frozenset(),
            {},
            started,
        )
        plan = self._decide(cell, source, namespace, directive, refusal)
        if isinstance(plan, (Run, Record)):
            # its code runs, whatever the reason (a refusal included): the digests of
            # values just written or restored may no longer hold (a quick cell's code
            # changes nothing but the names it binds); what it rebinds is found after
            plan.bindings = interpreter.bindings(namespace)
            self.forget_digests()
        return plan

    def _decide(
        self,
        cell: PlanBase,
        source: str,
        namespace: MutableMapping[str, Any],
        directive: str | None,
        refusal: Reason | None,
    ) -> Plan:
        """The stages of :meth:`plan`, each of which may end the decision (a Quick, a Run)."""
        # quick: cheaper to run than to restore (not under a directive, which says otherwise);
        # first, as running it is right whatever else its code would be refused for
        if directive is None and self.config.quick:
            quick = quick_cell(
                source,
                lambda name: kind_of(namespace.get(name, _ABSENT)),
                namespace.__contains__,
            )
            if quick is not None:
                cell.reads, cell.writes = quick.reads, frozenset(quick.written)
                cell.analysis = CellAnalysis(
                    cell.reads, cell.writes, frozenset(), frozenset(), frozenset()
                )
                return Quick(**vars(cell), reason=Code.QUICK(), written=quick.written)
        try:
            cell.analysis = analysis = analyse_cell(source)
        except SyntaxError:
            return self._run(cell, Code.SYNTAX_ERROR())  # as refusal(None) says
        cell.reads, cell.writes = frozenset(analysis.reads), frozenset(analysis.writes)
        # refuse
        reason = self.refusal(analysis, directive, refusal)
        if reason is not None:
            return self._run(cell, reason)
        # expand
        expansion = expand_through_callables(cell.reads, namespace, analysis.deferred)
        cell.reads |= expansion.reads
        cell.writes |= expansion.writes
        if expansion.hidden is not None:
            return self._run(cell, expansion.hidden)
        # effects
        effects = find_effects(
            source,
            namespace,
            expansion.codes,
            [namespace[name] for name in sorted(cell.reads) if name in namespace],
        )
        scope = self._scope(effects, analysis)
        if effects.reason is not None and directive != "cache":
            return self._run(cell, Code.VARIES(effects.reason), scope)
        with ValueHasher(self.stand_ins) as hasher:
            self._seed(hasher, namespace)
            try:
                # key
                keyed = self._key(cell, analysis, namespace, hasher, effects, scope)
                if isinstance(keyed, Reason):
                    return self._run(cell, keyed, scope)
                random_before = randomness.snapshot()
                # look up, admit, load
                entry = None if directive == "rerun" else self.store.get(keyed.key)
                if directive == "rerun":
                    reason = Code.FORCED()
                else:
                    admitted = self._admit(cell, keyed, entry, random_before, namespace, hasher)
                    if not isinstance(admitted, Reason):
                        return admitted
                    reason = admitted
                through = self._through(cell, keyed, entry, namespace, hasher)
                return Record(
                    **vars(cell),
                    reason=reason,
                    **self._running(scope),  # snapshot after all the hashing above
                    key=keyed.key,
                    components=keyed.components,
                    digests=keyed.digests,
                    inner=keyed.inner,
                    codes=expansion.codes,
                    random_before=random_before,
                    through=through,
                    stores=effects.stores,
                    unresolved=() if directive == "cache" else effects.unresolved,
                    cache_anyway=directive == "cache",
                )
            except StoreError as exc:  # the cache itself is unusable (e.g. its directory)
                if self._refused != (self.config.cache_dir, exc.reason):  # say so once
                    self._refused = (self.config.cache_dir, exc.reason)
                    warnings.warn(f"incrcell: {exc.reason}.", CacheWarning, stacklevel=3)
                return self._run(cell, Code.CACHE_UNUSABLE(detail=exc.reason), scope)

    def _run(self, cell: PlanBase, reason: Reason, scope: _Scope | None = None) -> Run:
        """The decision to run the cell uncached, because of ``reason``."""
        return Run(**vars(cell), reason=reason, **self._running(scope or _Scope()))

    def _running(self, scope: _Scope) -> dict[str, Any]:
        """The fields of a plan whose code runs: the interpreter state it starts from (as the
        last cell left it, if nothing ran since)."""
        watched = scope.watched or interpreter.watched_modules(())
        return {
            "watched": watched,
            "reach": scope.reach,
            "state_before": interpreter.snapshot(watched, scope.reach, self._state_after),
        }

    @staticmethod
    def _scope(effects: Effects, analysis: CellAnalysis) -> _Scope:
        """The modules the cell and the code it reaches refer to or sets attributes on."""
        modules = [*(module.__name__ for module in effects.modules), *analysis.imports]
        return _Scope(
            frozenset(name for full in modules for name in (full, full.partition(".")[0])),
            interpreter.watched_modules(
                [*effects.referenced, *(sys.modules.get(name) for name in effects.stores)]
            ),
        )

    def refusal(
        self,
        analysis: CellAnalysis | None,
        directive: str | None = None,
        refusal: Reason | None = None,
    ) -> Reason | None:
        """Why a cell is not cached, before its inputs are even looked at (None when it may be).

        ``analysis`` is None for a cell that does not parse; ``directive`` and
        ``refusal`` are as for :meth:`plan`.  The sidebar's predictions use it too.
        """
        if analysis is None:
            return Code.SYNTAX_ERROR()
        if directive == "nocache":
            return Code.NOCACHE()
        return refusal or self._refusal(analysis)

    def _refusal(self, analysis: CellAnalysis) -> Reason | None:
        """Why a cell is uncacheable from its code alone (None when it is not)."""
        if analysis.reads & _MAGIC_NAMES:
            return Code.MAGIC()
        history = sorted(n for n in analysis.reads if _HISTORY_NAME.match(n))
        if history:
            return Code.HISTORY(name=history[0])
        dynamic = sorted(analysis.calls_dynamic & _DYNAMIC)
        if dynamic:
            shown = "from ... import *" if dynamic[0] == "*" else f"{dynamic[0]}()"
            return Code.DYNAMIC(call=shown)
        session = sorted(n for n in analysis.reads | analysis.writes if self.is_session_name(n))
        if session:
            return Code.SESSION_OBJECT(name=session[0])
        return None

    def _seed(self, hasher: ValueHasher, namespace: MutableMapping[str, Any]) -> None:
        """Give the hasher the digests of the values just written or restored still bound."""
        held = self.known or self.stand_ins
        bound = {id(value) for value in namespace.values()} if held else set()
        for kept in (self.known, self.stand_ins):
            for key in [key for key in kept if key not in bound]:  # rebound since: let it go
                del kept[key]
        hasher.remember_known(self.known)

    def _key(
        self,
        cell: PlanBase,
        analysis: CellAnalysis,
        namespace: MutableMapping[str, Any],
        hasher: ValueHasher,
        effects: Effects,
        scope: _Scope,
    ) -> _Keyed | Reason:
        """Key the cell by its source digest and the content of what it reads (keying.py);
        the reason it cannot be keyed instead."""
        reads = cell.reads
        inputs = KeyInputs()
        digests: dict[str, bytes] = {}
        inner: dict[str, set[int]] = {}
        for name in sorted(reads):
            if name in namespace:
                inner[name] = hasher.collect()
                try:
                    digests[name] = digest = hasher.hash(namespace[name])
                except Unhashable as exc:
                    return unhashable_input(name, namespace[name], exc)
                inputs.read(name, digest.hex())
            else:
                inputs.read(name, None)
        hasher.stop_collecting()
        for name in sorted(analysis.unbinds - reads):  # ``del x`` raises unless x exists
            inputs.existence(name, name in namespace)
        for variable in sorted(effects.environment):
            inputs.environment(variable, os.environ.get(variable))
        settings: dict[str, Any] = {}
        for item in [*interpreter.SETTINGS, *sorted(self.touched - set(interpreter.SETTINGS))]:
            if not interpreter.reaches(item, scope.reach):
                continue
            try:
                inputs.state(
                    item, self._state_digest(item, interpreter.current(item, settings), hasher)
                )
            except Unhashable as exc:
                return Code.UNHASHABLE_STATE(item=item, detail=exc.reason)
        versions = package_versions(analysis.imports | hasher.packages)
        changed = changed_since_import({**hasher.modules, **versions})
        if changed:
            return Code.MODULE_CHANGED_ON_DISK(module=changed)
        components = inputs.components(cell.source_digest, versions)
        return _Keyed(cell_key(components), components, digests, inner, settings)

    def _admit(
        self,
        cell: PlanBase,
        keyed: _Keyed,
        entry: Entry | None,
        random_before: dict[str, Any],
        namespace: MutableMapping[str, Any],
        hasher: ValueHasher,
    ) -> Restore | Reason:
        """The restore of ``entry`` (looked up under the cell's key) with its values loaded,
        or why it cannot be restored now."""
        if entry is None:
            return self._explain_miss(cell.identity, keyed.components)
        reason = files_changed(entry)
        if reason is not None:
            return reason
        for name, before in sorted(entry.random.items()):
            if before is not None and (
                name not in random_before or randomness.state_digest(random_before[name]) != before
            ):
                return Code.RANDOM_STATE(name=name)
        for item, before in sorted(entry.interpreter.items()):
            try:
                same = hasher.hash(interpreter.current(item, keyed.settings)).hex() == before
            except Unhashable:
                same = False
            if not same:
                return Code.INTERPRETER_STATE(item=item)
        unmet = self._unmet(entry, namespace, hasher)
        if unmet:
            return Code.REFERS_CHANGED(name=unmet)
        for name, before in sorted(entry.through.items()):
            try:
                now = self._content(namespace, name, hasher)
            except Unhashable:
                now = None
            if now != before:
                return Code.THROUGH_CHANGED(name=name)
        # load
        try:
            restore = self._load(cell, keyed.key, entry, namespace, hasher)
        except StoreError as exc:
            warnings.warn(
                f"incrcell: could not restore the cell ({exc.reason}); running it instead.",
                CacheWarning,
                stacklevel=4,
            )
            return Code.ENTRY_UNREADABLE(detail=exc.reason)
        directory = restore.state_after.get(interpreter.CWD)
        if isinstance(directory, str) and not os.path.isdir(directory):
            return Code.CWD_GONE(directory=directory)
        return restore

    def _through(
        self,
        cell: PlanBase,
        keyed: _Keyed,
        entry: Entry | None,
        namespace: MutableMapping[str, Any],
        hasher: ValueHasher,
    ) -> dict[str, str | None]:
        """The content before the cell runs of the names it may change through shared objects.

        A cell that changes an object in place also changes every name sharing it
        (``m`` for ``col *= 3`` after ``col = m[:, 1]``; ``c`` holding a mutated
        list): those names are written, and a restore brings their content after
        back, so it needs their content before to be what it was when recorded.
        Which names these are is only known once the cell ran: the names found
        by earlier runs of the same source (a note) and by the entry under this
        key are hashed now, before it runs (None: not hashable).
        """
        note = self.store.get_note(f"through:{cell.source_digest}") or {}
        names = set(note.get("names", ())) | set(entry.through if entry else ())
        through: dict[str, str | None] = {}
        for name in sorted(names - keyed.digests.keys()):
            try:
                through[name] = self._content(namespace, name, hasher)
            except Unhashable:
                through[name] = None
        return through

    @staticmethod
    def _content(namespace: MutableMapping[str, Any], name: str, hasher: ValueHasher) -> str:
        """The digest of what ``name`` holds (UNBOUND if nothing); raises Unhashable."""
        value = namespace.get(name, _ABSENT)
        return UNBOUND if value is _ABSENT else hasher.hash(value).hex()

    def _load(
        self,
        cell: PlanBase,
        key: str,
        entry: Entry,
        namespace: MutableMapping[str, Any],
        hasher: ValueHasher,
    ) -> Restore:
        """The restore of ``entry``, with every value it binds loaded, unless the namespace
        already holds them all; raises StoreError when they cannot be had.

        Values may refer by name to objects the cell did not write (notebook
        definitions, and values it aliased, see :meth:`_store_entry`): the
        caller checked them with :meth:`_unmet`.
        """
        outputs: dict[str, bytes | str | None] = {}
        for path, blob in entry.written.items():
            data = (
                blob if is_state(blob) else None if blob == MISSING else _loaded(self.store, blob)
            )
            if not (data is None or isinstance(data, (bytes, str))):
                raise StoreError("its cached output files do not match its entry")
            outputs[path] = data
        restore = Restore(
            **vars(cell),
            entry=entry,
            key=key,
            values={},
            result=None,
            random_after={},
            state_after={},
            outputs=outputs,
            origin=self.store.origin(key),
        )
        if entry.bundle is None or (
            entry.result is None
            and not entry.random
            and not entry.requires
            and not entry.interpreter
            and self._identities(namespace, entry) <= 1
            and all(
                self._holds(namespace, name, digest, hasher)
                for name, digest in entry.variables.items()
            )
        ):
            # Already there, unchanged, and nothing else refers to them: keeping them is
            # indistinguishable from binding the fresh objects a real run would make.
            # Not when a value refers to another name's object (``xs = ys`` must
            # follow ``ys`` if that was bound anew), nor for several values, which
            # may have shared objects when recorded (``df = df2``): modules and atoms
            # aside, at most one.
            return restore
        loaded = _loaded(self.store, entry.bundle, namespace.__getitem__)
        if not (
            isinstance(loaded, tuple)
            and len(loaded) == 4
            and isinstance(loaded[0], dict)
            and loaded[0].keys() == entry.variables.keys()
            and isinstance(loaded[2], dict)
            and loaded[2].keys() == entry.random.keys()
            and isinstance(loaded[3], dict)
            and loaded[3].keys() == entry.interpreter.keys()
        ):
            raise StoreError("its cached values do not match its entry")
        restore.values, restore.result, restore.random_after, restore.state_after = loaded
        return restore

    @staticmethod
    def _identities(namespace: MutableMapping[str, Any], entry: Entry) -> int:
        """How many of the entry's names hold values whose identity matters (not modules,
        not atoms): two such values may have shared objects when recorded."""
        return sum(not isinstance(namespace.get(name), SELF_STANDING) for name in entry.variables)

    @staticmethod
    def _unmet(entry: Entry, namespace: MutableMapping[str, Any], hasher: ValueHasher) -> str:
        """The first name the entry's values refer to that is not bound as recorded ('' if none)."""
        for name, digest in sorted(entry.requires.items()):
            current = namespace.get(name, _ABSENT)
            try:
                if current is _ABSENT or hasher.hash(current).hex() != digest:
                    return name
            except Unhashable:
                return name
        return ""

    @staticmethod
    def _holds(
        namespace: MutableMapping[str, Any], name: str, digest: str, hasher: ValueHasher
    ) -> bool:
        """True when ``name`` is bound to an unshared value with content ``digest``."""
        current = namespace.get(name, _ABSENT)
        # a function or class defined anew is a new object (isinstance of older instances
        # fails): only modules and atoms may stand for themselves whoever refers to them
        if current is _ABSENT or not (
            isinstance(current, SELF_STANDING) or unshared(current, hasher)
        ):
            return False
        try:
            return hasher.hash(current).hex() == digest
        except Unhashable:
            return False

    def _explain_miss(self, identity: str, components: dict[str, Any]) -> Reason:
        """Why the cell missed: what changed since it was recorded here (its lineage note)
        and, with a team cache whose note for it (the recording machine's) has other
        components than this machine's note, what differs from those (explain.py)."""
        store = self.store
        name = f"lineage:{identity}"
        local = _components(store.get_note(name, fetch=False))
        reason = explain_miss(local, components)
        if store.remote is None:
            return reason
        recorded = _components(store.get_remote_note(name))
        if recorded is None or recorded in (local, components):
            return reason
        elsewhere = explain_miss(recorded, components, elsewhere=True)
        return elsewhere if local is None else several([reason, elsewhere])

    # -- on a hit --------------------------------------------------------------
    def restore(self, plan: Restore, namespace: MutableMapping[str, Any]) -> Any:
        """Write back the files a hit wrote, bind the values it loaded and unbind what the
        cell deleted; returns its Out value."""
        self._state_after = None  # the state changes
        for path, data in plan.outputs.items():
            try:
                write_back(path, data)
            except OSError as exc:
                raise OSError(
                    f"incrcell could not write back `{os.path.relpath(path)}` "
                    f"({exc.strerror or exc}); run the cell with %%incrcell rerun"
                ) from None
        register_sources(plan.entry.sources)
        try:
            interpreter.apply(plan.state_after)
        except Exception as exc:
            raise RuntimeError(
                f"incrcell could not restore the interpreter state the cell "
                f"left ({type(exc).__name__}: {exc}); run the cell with "
                "%%incrcell rerun"
            ) from None
        namespace.update(plan.values)
        for name, value in plan.values.items():
            digest = bytes.fromhex(plan.entry.variables[name])
            self._remember(value, digest, frozenset(plan.entry.packages.get(name, ())))
            if not isinstance(value, SELF_STANDING):  # recorded maybe as a stored copy's digest
                self.stand_ins[id(value)] = StandIn(value, None, digest)
        for name in plan.entry.deleted:
            namespace.pop(name, None)
        randomness.restore(plan.random_after)
        self.fresh.update(dict.fromkeys(plan.random_after, False))  # recorded states are seeded
        return plan.result

    # -- while a recorded cell runs ----------------------------------------------
    def recording(self, plan: Plan) -> Recording | None:
        """The watches to run while ``plan``'s cell runs (not started): for a Record, the
        files it opens (not the cache's own) and the seeding of global generators; None
        for the other plans, which store nothing."""
        if not isinstance(plan, Record):
            return None
        fresh = frozenset(
            name
            for name in plan.random_before
            if self.fresh.get(name, randomness.entropy_on_import(name))
        )
        return Recording(
            FileWatch(ignore=[self.config.cache_dir]), SeedWatch(plan.random_before, fresh)
        )

    # -- after the cell ----------------------------------------------------------
    def finish(
        self,
        plan: Plan,
        namespace: MutableMapping[str, Any],
        *,
        success: bool,
        outputs: list[dict[str, Any]] | None = None,
        result: Any = None,
        recording: Recording | None = None,
    ) -> CellRecord:
        """Record the outcome of ``plan``; on a successful miss, store what the cell wrote.

        ``recording`` is the stopped :meth:`recording` of the cell, if it had one.
        """
        duration = time.perf_counter() - plan.started
        if plan.analysis is not None:
            note_loaded(plan.analysis.imports)
        seeds = recording.seeds if recording is not None else SeedWatch({})
        # how the cell left the generators, whether it succeeded or not
        self.fresh.update({name: name in seeds.fresh for name in seeds.before})
        saved = 0.0
        written: set[str] = set()
        if isinstance(plan, Quick):  # nothing but the names it binds changed
            written = {name for name in plan.written if self._user_name(name)}
            if success:
                state, reason = State.RAN, plan.reason
            else:  # it may have bound some of them before it raised
                state, reason = State.ERROR, Code.RAISED()
        elif isinstance(plan, Restore):
            if success:
                self.touched.update(plan.entry.interpreter)
                state, reason = State.RESTORED, None
                saved = max(plan.entry.duration - duration, 0.0)
                written = set(plan.entry.variables) | set(plan.entry.deleted)
            else:  # interrupted, or a file could not be written back
                state, reason = State.ERROR, Code.RESTORE_FAILED()
        else:
            # observe
            after, changes = self._observe(plan)
            if not success:
                state, reason = State.ERROR, Code.RAISED()
            elif isinstance(plan, Run):
                state, reason = State.UNCACHEABLE, plan.reason
                written = self._rebound(plan, namespace)
            else:
                state, reason, written = self._persist(
                    plan, namespace, outputs or [], result, duration, recording, after, changes
                )
        self._say_unusable_settings()
        return self._record(plan, state, reason, duration, saved, written)

    def _observe(self, plan: Run | Record) -> tuple[interpreter.Snapshot, dict[str, Any]]:
        """What the cell did to the interpreter: the state after, and the items it changed
        (noted as touched: they key every later cell)."""
        after = self._state_after = interpreter.snapshot(plan.watched, plan.reach)
        changes = {
            item: change
            for item, change in interpreter.changed(plan.state_before, after).items()
            if not self._session_builtin(item)
        }
        self.touched.update(changes)
        return after, changes

    def _persist(
        self,
        plan: Record,
        namespace: MutableMapping[str, Any],
        outputs: list[dict[str, Any]],
        result: Any,
        duration: float,
        recording: Recording | None,
        after: interpreter.Snapshot,
        changes: dict[str, tuple[Any, Any]],
    ) -> tuple[State, Reason | None, set[str]]:
        """Store what a successful miss left: (its state, why it ran, the names written)."""
        failure = self._interpreter_refusal(plan, after)
        if failure is not None:
            self.touched.update(interpreter.imported_items(plan.state_before, after))
            return State.UNCACHEABLE, failure, self._rebound(plan, namespace)
        if recording is None:
            recording = Recording(FileWatch(), SeedWatch({}))
        try:
            written, failure = self._persister.save(
                plan,
                namespace,
                self._rebound(plan, namespace),
                outputs,
                result,
                duration,
                recording,
                changes,
            )
        except KeyboardInterrupt:  # the cell ran; only its recording stops (nothing
            # half written: the store writes every file atomically)
            warnings.warn(
                "incrcell: interrupted while recording this cell: it ran, but "
                "is not in the cache (it will run again next time).",
                CacheWarning,
                stacklevel=3,
            )
            return State.RAN, Code.RECORDING_INTERRUPTED(), self._rebound(plan, namespace)
        if failure is not None:
            return State.UNCACHEABLE, failure, written
        return State.RAN, plan.reason, written

    def _record(
        self,
        plan: Plan,
        state: State,
        reason: Reason | None,
        duration: float,
        saved: float,
        written: set[str],
    ) -> CellRecord:
        """Keep the outcome for status, ``why``, the sidebar and the cell graph."""
        record = CellRecord(
            plan.identity,
            cell_label(plan.source),
            plan.execution_count,
            state,
            reason,
            duration,
            saved,
            plan.key if isinstance(plan, (Restore, Record)) else None,
            plan.reads,
            plan.writes | written,
            plan.source_digest,
            plan.origin if isinstance(plan, Restore) and state == State.RESTORED else None,
        )
        self.records[plan.identity] = record
        if plan.execution_count is not None:
            self.by_count[plan.execution_count] = record
        self.graph.record(plan.identity, plan.reads, record.writes)
        return record

    def ran_uncached(
        self, source: str, raw_source: str, cell_id: str | None, execution_count: int | None
    ) -> None:
        """Note a cell that runs while caching is off, without planning it (off costs next to
        nothing): status and the sidebar say it ran, and why it was not cached; like any
        cell that runs, it may change any value, so no digest memoised before it holds."""
        self.forget_digests()
        digest = source_hash(source)
        identity = f"cell:{cell_id}" if cell_id else f"src:{digest}"
        record = CellRecord(
            identity,
            cell_label(raw_source),
            execution_count,
            State.RAN,
            Code.CACHING_OFF(),
            0.0,
            0.0,
            source_digest=digest,
        )
        self.records[identity] = record
        if execution_count is not None:
            self.by_count[execution_count] = record
        self.graph.record(identity, frozenset(), frozenset())

    def _rebound(self, plan: Run | Record, namespace: MutableMapping[str, Any]) -> set[str]:
        """Names whose binding changed while the cell ran (new, rebound or deleted).

        The runtime truth behind the static ``writes``: it catches writes the
        analysis could not see (e.g. a library writing into ``__main__``).
        """
        before, after = plan.bindings, interpreter.bindings(namespace)
        changed = {name for name, _ in after.items() ^ before.items()}
        return {n for n in changed if self._user_name(n)}

    def _state_digest(self, item: str, value: Any, hasher: ValueHasher) -> str:
        """The content digest of an interpreter item's value; for the settings, reused while
        the value stays equal (settings of plain numbers, strings and flags, which the code
        reading them compares with ``==`` too), and hashed apart: the packages of the
        classes they name (warning categories) are not the cell's."""
        if item not in interpreter.SETTINGS:
            return hasher.hash(value).hex()
        cached = self._setting_digests.get(item)
        if cached is None or not interpreter.same(cached[0], value):
            with ValueHasher() as apart:
                cached = self._setting_digests[item] = (value, apart.hash(value).hex())
        return cached[1]

    def _session_builtin(self, item: str) -> bool:
        """A builtin the session itself puts in and takes out around cells (``get_ipython``)."""
        builtin, _, name = item.rpartition(".")
        return builtin == interpreter.BUILTINS and self.is_session_name(name)

    @staticmethod
    def _interpreter_refusal(plan: Record, after: interpreter.Snapshot) -> Reason | None:
        """Why what the cell did to the interpreter cannot be stored (None when it can)."""
        late = late_effects(plan.unresolved)
        if late is not None:
            return Code.VARIES(late)
        stores = late_global_stores(plan.unresolved)
        if stores:
            return Code.LATE_GLOBALS(call=stores)
        new = sorted(plan.stores - plan.state_before.modules.keys())
        if new:
            return Code.NEW_MODULE_ATTRIBUTES(module=new[0])
        return interpreter.refusal(plan.state_before, after)

    # -- housekeeping ------------------------------------------------------------
    def clear_session(self, also: Iterable[str] = ()) -> int:
        """Delete the entries of the cells seen in this session, and the entries
        ``also``; returns how many.  The session still knows what its cells did (status,
        the sidebar's rows): only the cache forgets."""
        keys = {r.key for r in self.records.values() if r.key} | set(also)
        return self.store.delete(keys)

    def clear_all(self) -> None:
        """Delete the whole cache; the session still knows what its cells did."""
        self.store.clear()


def _loaded(store: Store, digest: str, resolve: Callable[[str], object] | None = None) -> object:
    """The value stored under ``digest``, deserialised (``resolve``: see serialise.loads).

    Raises StoreError if it can't be had: absent (evicted since the lookup),
    corrupt, foreign, or not loadable here (a module is missing...).
    """
    stored = store.get_value(digest)
    try:
        return loads(stored.method, stored.stream, stored.buffers, resolve)
    except Exception as exc:  # whatever a reducer raises: this value can't be had here
        raise StoreError(
            f"cached value {digest[:8]}… cannot be loaded ({type(exc).__name__}: {one_line(exc)})"
        ) from exc
