"""What the sidebar shows for each cell, and what Run All would do, without running anything.

Two answers per code cell of the notebook (the frontend sends their ids and sources):

* **state**: what happened the last time the cell executed in this session
  (the engine's records: restored, ran, uncacheable, error), unless it is
  *stale*: its source changed since (by normalised AST, so comment-only edits
  do not count), or a cell it reads from is stale or executed again after it.
  A cell never executed in this session is ``not_run``.
* **prediction**: would Run All of the current sources, in a fresh kernel,
  restore it?  It is simulated in notebook order from the cache alone.  A
  cell's lineage note (the key components it was last recorded with) names
  what it reads; the digests those names would have come from the entries of
  the upstream cells predicted to restore, or, for names no cell of the
  notebook writes, from the live namespace.  With those the cell's key is
  recomputed exactly as the engine computes it and looked up.  A name an
  upstream cell will *run* to produce has a value nobody knows yet, so its
  readers are predicted to run too.  Reasons are the engine's and
  ``explain.py``'s words, so the sidebar, ``%incrcell status`` and ``why`` agree.

A prediction is advice, never a decision: the engine decides again when the
cell really runs, so a wrong prediction costs nothing but a wrong hint.  When
it cannot be made (the cache directory is unusable) it is ``unknown``.
Nothing here raises for a bad cell, and no cell code runs: namespace values
are only hashed, as the engine hashes them before every cell.

Speed (a 200-cell notebook is answered on every edit and after every cell):
each distinct source is transformed and parsed once; lineage notes and
entries are read once and forgotten when the engine records that cell again;
digests of namespace values are kept until the glue says user code may have
run (:meth:`Predictor.forget_namespace`).

No IPython here: the glue passes IPython's transformation of a raw cell
(``prepare``) and the namespace.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .analysis import CellAnalysis, analyse_cell
from .engine import CellRecord, Engine, cell_label, files_changed, unhashable_input
from .explain import explain_miss, explain_upstream
from .fingerprint import Unhashable, ValueHasher, source_hash
from .keying import BOUND, UNBOUND, KeyInputs, cell_key, is_variable_input, recorded_variables
from .packages import MISSING, module_fingerprint, package_versions
from .quick import QuickCell, evaluate, kind_of, original_builtin, quick_cell
from .reasons import Action, Code, Reason, State, code, text
from .store import CacheWarning, Entry, RemoteStatus, Store, StoreError

# Session states besides the engine's (State: restored, ran, uncacheable, error).
STALE, NOT_RUN = "stale", "not_run"
# Predictions besides the engine's plan actions restore and run.
UNKNOWN = "unknown"
RESTORE, RUN = Action.RESTORE, Action.RUN

#: A raw cell -> (its ``%%incrcell`` directive or None, its body, the Python IPython runs).
Prepare = Callable[[str], tuple[str | None, str, str]]


def _plain(raw: str) -> tuple[str | None, str, str]:
    return None, raw, raw


@dataclass(frozen=True)
class NotebookCell:
    """A code cell as the frontend sees it."""

    id: str
    source: str


@dataclass
class CellState:
    """One row of the sidebar (see labextension/PROTOCOL.md for each field)."""

    id: str
    identity: str  # the engine's identity of the cell ("cell:<id>")
    execution_count: int | None
    label: str
    state: str  # a State, STALE or NOT_RUN
    reason: Reason | None
    prediction: str  # RESTORE, RUN or UNKNOWN
    prediction_reason: Reason | None
    duration: float = 0.0
    saved: float = 0.0
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    depends_on: list[tuple[str, list[str]]] = field(default_factory=list)  # (upstream id, names)
    origin: str | None = None  # restored: from the "local" or the "remote" cache
    own: str | None = None  # OWN_ONLY / OWN_MAGIC: its only magics are incrcell's own
    run_seconds: float = 0.0  # what running its code takes (its last run, or its entry's)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "execution_count": self.execution_count,
            "label": self.label,
            "state": self.state,
            "reason": text(self.reason),
            "code": code(self.reason),
            "prediction": self.prediction,
            "prediction_reason": text(self.prediction_reason),
            "prediction_code": code(self.prediction_reason),
            "duration": self.duration,
            "saved": self.saved,
            "reads": self.reads,
            "writes": self.writes,
            "depends_on": [{"id": cell, "names": names} for cell, names in self.depends_on],
            "origin": self.origin,
            "own": self.own,
            "run_seconds": self.run_seconds,
        }


@dataclass
class Report:
    """Everything the sidebar shows at one moment."""

    enabled: bool
    cells: list[CellState]
    totals: dict[str, int | float]
    remote: RemoteStatus | None = None  # the team cache, if one is configured

    @property
    def stale(self) -> list[str]:
        """Ids of the stale cells, in notebook order: what 'Run stale cells' runs."""
        return [c.id for c in self.cells if c.state == STALE]

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "cells": [c.to_json() for c in self.cells],
            "totals": self.totals,
            "stale": self.stale,
            "remote": _remote_json(self.remote),
        }


def _remote_json(status: RemoteStatus | None) -> dict[str, Any] | None:
    """The sidebar's view of the team cache (see labextension/PROTOCOL.md)."""
    if status is None:
        return None
    return {
        "url": status.url,
        "mode": status.mode,
        "available": status.available,
        "error": status.error,
        "fetched": status.entries_remote,
        "refused": status.refused,
        "uploaded": status.uploaded,
        "pending": status.pending,
        "dropped": status.dropped,
    }


def totals(records: Iterable[CellRecord]) -> dict[str, int | float]:
    """Cells restored, ran, uncacheable and failed in this session, and the seconds saved."""
    records = list(records)
    counts: dict[str, int | float] = {
        state: sum(r.state == state for r in records) for state in State
    }
    counts["saved"] = sum(r.saved for r in records)
    return counts


@dataclass(frozen=True)
class _Parsed:
    """A cell's source as the engine would see it."""

    directive: str | None
    body: str
    digest: str
    analysis: CellAnalysis | None  # None: it does not parse
    # names bound by a top-level import and in no other way -> (module, attribute or None)
    imported: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    own: str | None = None  # OWN_ONLY, OWN_MAGIC or None (see _own_magics)
    python: str = ""  # the code IPython runs for it


#: A cell made only of incrcell's own magics (``%load_ext incrcell``, ``%incrcell status``).
OWN_ONLY = "only"
#: A cell whose only magics are incrcell's own, with code of its own besides.
OWN_MAGIC = "magic"
_OWN_EXTENSION_MAGICS = frozenset({"load_ext", "reload_ext", "unload_ext"})


def _own_magic(node: ast.stmt) -> bool:
    """Whether ``node`` is IPython's transformation of one of incrcell's own line magics:
    ``get_ipython().run_line_magic('incrcell', ...)`` or ``...('load_ext', 'incrcell')``."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    call = node.value
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr == "run_line_magic"
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
        and len(call.args) == 2
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
    ):
        return False
    name, line = (str(a.value) for a in call.args if isinstance(a, ast.Constant))
    return name == "incrcell" or (name in _OWN_EXTENSION_MAGICS and line.strip() == "incrcell")


def _own_magics(tree: ast.Module) -> str | None:
    """OWN_ONLY, OWN_MAGIC or None: whether incrcell's own magics are the cell's only ones
    (then it is not "uncacheable" in the user's sense: it loads or asks incrcell)."""
    own = [_own_magic(node) for node in tree.body]
    if not any(own):
        return None
    if all(own):
        return OWN_ONLY
    rest = [node for node, mine in zip(tree.body, own) if not mine]
    ipython = any(
        isinstance(sub, ast.Name) and sub.id == "get_ipython"
        for node in rest
        for sub in ast.walk(node)
    )
    return None if ipython else OWN_MAGIC


def _import_bindings(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """Names the cell binds by a top-level absolute import and by nothing else:
    name -> (module, attribute): ``import a.b`` binds ``a`` to ("a", None), ``import a.b
    as c`` ``c`` to ("a.b", None), ``from a import b`` ``b`` to ("a", "b").  What such a
    name will hold after the cell runs is known before it runs (see _Simulation.imported)."""
    found: dict[str, tuple[str, str | None]] = {}
    others: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.partition(".")[0]
                found[alias.asname or top] = (alias.name if alias.asname else top, None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
        else:
            others |= _bound_anywhere(node)
    return {name: target for name, target in found.items() if name not in others}


def _bound_anywhere(node: ast.AST) -> set[str]:
    """Every name ``node`` could bind or unbind, at any depth (over-approximate)."""
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
            names.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.alias):
            names.add((sub.asname or sub.name).partition(".")[0])
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            names |= set(sub.names)
        elif isinstance(sub, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest:
            names.add(sub.rest)
    return names


def _upstream(position: int, label: str) -> str:
    """How reasons name another cell: its position among the notebook's code cells."""
    return f"cell {position + 1} `{label[:40]}`"


class Predictor:
    """States and predictions for one notebook, over one engine's session and cache."""

    def __init__(
        self,
        engine: Engine,
        prepare: Prepare = _plain,
        refusal: Callable[[], Reason | None] = lambda: None,
    ) -> None:
        """``prepare`` transforms a raw cell like the glue does before planning it;
        ``refusal()`` is the reason the glue currently refuses every cell (None if none)."""
        self.engine = engine
        self.prepare = prepare
        self.refusal = refusal
        self.cells: list[NotebookCell] | None = None  # None until the frontend sends them
        self._parsed: dict[str, _Parsed] = {}  # raw source -> parsed
        self._digests: dict[str, tuple[object, str | Unhashable]] = {}  # name -> (value, digest)
        self._store: Store | None = None  # the store the caches below were read from
        self._notes: dict[str, dict[str, Any] | None] = {}  # identity -> lineage note
        self._entries: dict[str, Entry | None] = {}  # key -> entry (without outputs)
        self._seen: dict[str, CellRecord] = {}  # identity -> the record the caches reflect
        self._keys: dict[str, str] = {}  # identity -> key the last report predicted
        self._modules: dict[tuple[str, str | None], str | None] = {}  # see _imported
        self._files: dict[str, tuple[int, int, int] | None] = {}  # see files_moved

    # -- inputs from the glue ---------------------------------------------------------
    def set_cells(self, cells: Iterable[NotebookCell]) -> None:
        """The notebook's code cells in order; parses of sources gone are dropped."""
        self.cells = list(cells)
        sources = {cell.source for cell in self.cells}
        self._parsed = {s: p for s, p in self._parsed.items() if s in sources}

    def forget_namespace(self) -> None:
        """User code may have run: namespace values may have changed."""
        self._digests.clear()
        self._modules.clear()  # and modules may have been imported

    def forget_cache(self) -> None:
        """Entries or notes were deleted: read them again."""
        self._notes.clear()
        self._entries.clear()

    def clear_cache(self) -> tuple[int, int]:
        """Delete the entries of the notebook's cells (every key known for them, the one a
        cell had before caching was turned off included) and of the session's; returns
        (entries deleted, bytes freed).  The session keeps what its cells did: they ran or
        were restored, only the cache forgot (the panel's Clear and ``%incrcell clear``)."""
        store = self.engine.store
        before = store.usage().size
        entries = self.engine.clear_session(also=self.keys(cell.id for cell in self.cells or []))
        self.forget_cache()
        return entries, max(before - store.usage().size, 0)

    def keys(self, ids: Iterable[str]) -> set[str]:
        """Every key known for these cells: last executed, last recorded, last predicted."""
        keys: set[str] = set()
        for cell_id in ids:
            identity = f"cell:{cell_id}"
            record = self.engine.records.get(identity)
            note = self._lineage(identity)
            candidates = (
                record.key if record else None,
                note.get("key") if note else None,
                self._keys.get(identity),
            )
            keys |= {key for key in candidates if isinstance(key, str)}
        return keys

    def files_moved(self) -> bool:
        """Whether a file the session's recorded cells read changed on disk since the last
        report (a stat each: cheap enough for the sidebar to ask every few seconds)."""
        return any(_stamp(path) != stamp for path, stamp in self._files.items())

    def _watch(self, entry: Entry) -> None:
        self._files.update((path, _stamp(path)) for path in entry.files)

    # -- the report -------------------------------------------------------------------
    def report(self, namespace: Mapping[str, Any]) -> Report:
        """States and predictions of every cell (never raises for a bad cell or cache)."""
        engine = self.engine
        try:
            store: Store | None = engine.store
            failure = None
        except StoreError as exc:
            store, failure = None, Code.CACHE_UNUSABLE(detail=exc.reason)
        self._sync(store)
        self._files.clear()  # what this report's cells read: filled by the simulation
        # an unusable entry is the engine's to report, when the cell runs, under the cell
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            if self.cells is None:
                cells = self._session_states()
            else:
                cells = _Simulation(self, namespace, store, failure).run(self.cells)
            summary = totals(engine.records.values())
            summary["cache_bytes"] = _size(store)
            summary["cache_cap"] = store.cap if store is not None else 0
            summary["cache_entries"] = sum(self._recorded(c.identity, store) for c in cells)
            # incrcell's own magic cells are not the user's uncacheable cells
            summary["own"] = sum(c.own is not None and c.state == State.UNCACHEABLE for c in cells)
        remote = store.remote_status() if store is not None else None
        return Report(engine.config.enabled, cells, summary, remote)

    def _sync(self, store: Store | None) -> None:
        """Forget what the engine changed since the last report: a cell recorded again
        rewrites its lineage note, and may rewrite its key's entry (``rerun``)."""
        if store is not self._store:
            self.forget_cache()
            self._store = store
        records = self.engine.records
        for identity, record in records.items():
            if self._seen.get(identity) is not record:
                self._notes.pop(identity, None)
                self._entries.pop(record.key or "", None)
                self._seen[identity] = record
        for identity in self._seen.keys() - records.keys():
            del self._seen[identity]

    def _session_states(self) -> list[CellState]:
        """Before the frontend sent the notebook: the cells executed, in execution order."""
        records = self.engine.records
        rows: list[CellState] = []
        nodes = self.engine.graph.nodes()
        order = {node.cell: index for index, node in enumerate(nodes)}
        for index, node in enumerate(nodes):
            record = records[node.cell]
            producers: dict[str, list[str]] = {}
            for name, producer in sorted(node.producers.items()):
                producers.setdefault(producer, []).append(name)
            state: str = record.state
            reason = record.reason
            for producer in producers:
                if producer not in order:
                    continue
                label = f"`{records[producer].label[:40]}`"
                if order[producer] > index:
                    state, reason = STALE, Code.UPSTREAM_RAN_AGAIN(upstream=label)
                    break
                if rows[order[producer]].state == STALE:
                    state, reason = STALE, Code.UPSTREAM_STALE(upstream=label)
                    break
            rows.append(
                CellState(
                    _cell_id(node.cell),
                    node.cell,
                    record.execution_count,
                    record.label,
                    state,
                    reason,
                    UNKNOWN,
                    Code.CELLS_NOT_RECEIVED(),
                    record.duration,
                    record.saved,
                    sorted(record.reads),
                    sorted(record.writes),
                    [(_cell_id(p), names) for p, names in producers.items()],
                    record.origin if state == State.RESTORED else None,
                )
            )
        return rows

    # -- cached reads -----------------------------------------------------------------
    def _parse(self, source: str) -> _Parsed:
        parsed = self._parsed.get(source)
        if parsed is None:
            try:
                directive, body, python = self.prepare(source)
            except Exception:  # IPython refuses to transform it: it will run as typed
                directive, body, python = None, source, source
            try:
                analysis: CellAnalysis | None = analyse_cell(python)
                tree = ast.parse(python)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                analysis = None
            imported: dict[str, tuple[str, str | None]] = {}
            own = None
            if analysis is not None:
                own = _own_magics(tree)
                # a magic other than incrcell's, or a dynamic write, could rebind anything
                if (own or "get_ipython" not in analysis.reads) and not analysis.calls_dynamic:
                    imported = _import_bindings(tree)
            parsed = self._parsed[source] = _Parsed(
                directive, body, source_hash(python), analysis, imported, own, python
            )
        return parsed

    def _lineage(self, identity: str) -> dict[str, Any] | None:
        """The cell's lineage note: ``{"key", "components"}`` when it was last recorded.
        Never waits for the network: with a team cache, a note only it has is fetched in
        the background, so an absent note is asked for again by the next report."""
        if identity not in self._notes:
            store: Store | None = None
            note = None
            try:
                store = self.engine.store
                note = store.get_note(f"lineage:{identity}", fetch=False)
            except StoreError:
                pass
            valid = isinstance(note, dict) and isinstance(note.get("components"), dict)
            if not valid and store is not None and store.remote is not None:
                return None
            self._notes[identity] = note if valid else None
        return self._notes[identity]

    def _entry(self, key: str, store: Store) -> Entry | Reason | None:
        """The entry under ``key`` if it is there (its outputs dropped: not needed here);
        REMOTE_PENDING if only the team cache has it, not fetched yet (the network is never
        waited for here: it is fetched in the background, for a later report)."""
        if not store.hit(key, wait=False):
            return None
        if key not in self._entries:
            entry = store.get(key, fetch=False)
            if entry is None and store.remotely(key):  # being fetched, or just arrived
                return Code.REMOTE_PENDING()
            self._entries[key] = (
                dataclasses.replace(entry, outputs=[], source="") if entry is not None else None
            )
        return self._entries[key]

    def _recorded(self, identity: str, store: Store | None) -> bool:
        """Whether the cell's last recorded entry is still in the cache."""
        if store is None:
            return False
        note = self._lineage(identity)
        return bool(
            note and isinstance(note.get("key"), str) and store.hit(note["key"], wait=False)
        )

    def _imported(self, module: str, attribute: str | None) -> str | None:
        """The digest of what ``import module`` / ``from module import attribute`` binds in
        a fresh kernel, without importing anything: a module is hashed by its name (and a
        local module by its source), so one not imported yet is hashed through a stand-in of
        that name; an attribute only when its module is imported and it is a module, class
        or function (hashed by name or code, not by state a session may have changed)."""
        if (module, attribute) not in self._modules:
            target: object = None
            if attribute is None:
                target = sys.modules.get(module)
                if target is None and module_fingerprint(module) != MISSING:
                    target = types.ModuleType(module)
                    target.__file__ = "<not imported yet>"  # any file: not hashed
            else:
                loaded = sys.modules.get(module)
                value = vars(loaded).get(attribute) if loaded is not None else None
                if value is None:
                    value = sys.modules.get(f"{module}.{attribute}")
                kinds = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
                target = value if isinstance(value, kinds) else None
            digest = None
            if target is not None:
                with ValueHasher() as hasher:
                    try:
                        digest = hasher.hash(target).hex()
                    except Unhashable:
                        pass
            self._modules[module, attribute] = digest
        return self._modules[module, attribute]

    def _digest(self, name: str, value: object) -> str | Unhashable:
        cached = self._digests.get(name)
        if cached is None or cached[0] is not value:
            with ValueHasher(self.engine.stand_ins) as hasher:  # as the engine hashes it
                try:
                    digest: str | Unhashable = hasher.hash(value).hex()
                except Unhashable as exc:
                    digest = exc
            cached = self._digests[name] = (value, digest)
        return cached[1]


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _run_seconds(current: CellRecord | None, entry: Entry | None) -> float:
    """How long running the cell's code takes: its last run in this session, else the run
    its cache entry recorded; 0 when unknown."""
    if current is not None and current.state != State.RESTORED and current.duration > 0:
        return current.duration
    return entry.duration if entry is not None else 0.0


def _cell_id(identity: str) -> str:
    return identity.removeprefix("cell:")


def _size(store: Store | None) -> int:
    try:
        return store.size() if store is not None else 0
    except OSError:  # an unreadable cache directory: its size is not worth an error
        return 0


@dataclass(frozen=True)
class _Assumed:
    """A value of a cell that runs every time (``nocache``, ``rerun``, incrcell's own magics)
    although nothing it reads changes: assumed to be what it was, so its readers are keyed
    on the digest they recorded for it; their hits are only likely (``unknown``)."""

    position: int  # the cell that runs every time
    digest: str | None  # what a likely restore downstream binds (None: the reader's record)


#: Why a cell runs every time though nothing it reads changed (its values are _Assumed).
_STEADY = frozenset({Code.NOCACHE, Code.FORCED, Code.MAGIC, Code.QUICK})


class _Simulation:
    """One Run All of the notebook, in a fresh kernel, from the cache alone."""

    def __init__(
        self,
        predictor: Predictor,
        namespace: Mapping[str, Any],
        store: Store | None,
        failure: Reason | None,
    ) -> None:
        self.predictor = predictor
        self.engine = predictor.engine
        self.namespace = namespace
        self.store = store
        self.failure = failure
        self.refusal = predictor.refusal()
        # name -> digest hex or UNBOUND; the position of the cell that will run and set it;
        # or what a cell running every time is assumed to set again
        self.values: dict[str, str | int | _Assumed] = {}
        self.written: set[str] = set()  # names some cell of the notebook writes
        # name -> kind (quick.py) of the plain values quick cells will have bound, and the
        # values themselves where they could be worked out here (see evaluate)
        self.kinds: dict[str, str] = {}
        self.plain: dict[str, object] = {}
        self.packages: dict[frozenset[str], dict[str, str]] = {}
        self.labels: list[str] = []  # by position
        self.order = {node.cell: i for i, node in enumerate(self.engine.graph.nodes())}

    def run(self, cells: list[NotebookCell]) -> list[CellState]:
        predictor = self.predictor
        parsed = [predictor._parse(cell.source) for cell in cells]
        self.labels = [cell_label(p.body) for p in parsed]
        for p in parsed:
            if p.analysis is not None:
                self.written |= p.analysis.writes
        states: list[CellState] = []
        writers: dict[str, int] = {}  # name -> position of the nearest earlier cell writing it
        for position, (cell, p) in enumerate(zip(cells, parsed)):
            identity = f"cell:{cell.id}"
            record = self.engine.records.get(identity)
            current = record if record is not None and record.source_digest == p.digest else None
            note = predictor._lineage(identity) if self.store is not None else None
            components = note["components"] if note else None
            same = components is not None and components.get("source") == p.digest
            reads = set(p.analysis.reads) if p.analysis else set()
            writes = set(p.analysis.writes) if p.analysis else set()
            if current is not None:
                reads |= current.reads
                writes |= current.writes
            if same and components is not None:
                reads |= recorded_variables(components)
            quick = self.quick(p)
            prediction, why, entry, assumed = (
                (RUN, Code.QUICK(), None, None)  # no entry: it runs (Engine._decide)
                if quick is not None
                else self.predict(identity, p, current, components)
            )
            last = entry  # the entry it was last recorded with, looked up only when needed
            if entry is None and same and note and isinstance(note.get("key"), str):
                found = predictor._entry(note["key"], self.store) if self.store else None
                last = found if isinstance(found, Entry) else None
            if entry is not None:  # a restore binds exactly what the entry holds
                self.values.update(dict.fromkeys(entry.deleted, UNBOUND))
                self.values.update(
                    entry.variables
                    if assumed is None
                    else {n: _Assumed(assumed, d) for n, d in entry.variables.items()}
                )
                writes |= set(entry.variables) | set(entry.deleted)
            else:
                if last is not None:
                    writes |= set(last.variables) | set(last.deleted)
                steady = self.steady(p, why)
                for name in writes:
                    target = p.imported.get(name)
                    digest = self.imported(*target) if target else None
                    self.values[name] = (
                        digest
                        if digest is not None
                        else _Assumed(position, None)
                        if steady
                        else position
                    )
            depends: dict[int, list[str]] = {}
            for name in sorted(reads):
                if name in writers:
                    depends.setdefault(writers[name], []).append(name)
            state, reason = self.state(identity, record, current, depends, states, last)
            if state == NOT_RUN and prediction != RESTORE:
                reason = why
            states.append(
                CellState(
                    cell.id,
                    identity,
                    record.execution_count if record else None,
                    self.labels[position],
                    state,
                    reason,
                    prediction,
                    why,
                    record.duration if record else 0.0,
                    record.saved if record else 0.0,
                    sorted(reads),
                    sorted(writes),
                    [(cells[j].id, names) for j, names in sorted(depends.items())],
                    record.origin if record is not None and state == State.RESTORED else None,
                    p.own,
                    _run_seconds(current, last),
                )
            )
            writers.update(dict.fromkeys(writes, position))
            for name in writes:
                self.kinds.pop(name, None)
                self.plain.pop(name, None)
            if quick is not None:
                self.kinds.update(quick.written)
                self.bind_evaluated(p, quick)
        return states

    def bind_evaluated(self, p: _Parsed, quick: QuickCell) -> None:
        """The values a quick cell binds, worked out here when everything it reads is known
        (its code can only compute with them: quick.py), and their digests as the engine
        will hash them: the cells reading them are then predicted exactly."""
        inputs: dict[str, object] = {}
        for name in quick.reads:
            if name in self.plain:
                inputs[name] = self.plain[name]
            elif self.kind(name) is not None and name not in self.kinds:
                inputs[name] = self.namespace[name]  # as it is now (see kind)
            elif not original_builtin(name, self.bound):
                return  # a plain value whose value is not known here, only its kind
        values = evaluate(p.python, inputs, quick.written)
        if values is None:  # it will raise: what it binds is not known
            return
        self.plain.update(values)
        with ValueHasher() as hasher:
            self.values.update({name: hasher.hash(v).hex() for name, v in values.items()})

    def quick(self, p: _Parsed) -> QuickCell | None:
        """The cell as the quick cell (quick.py) it will be at this point of the Run All;
        None if it will not be one, or that cannot be known here."""
        if p.analysis is None or p.directive is not None or not self.engine.config.quick:
            return None
        return quick_cell(p.python, self.kind, self.bound)

    def kind(self, name: str) -> str | None:
        """The kind of plain value ``name`` holds at this point of the Run All (quick.py);
        None when it holds something else, or what it holds is not known here (a value a
        restore binds is known by its digest: its kind only if the namespace holds it now)."""
        if name in self.kinds:
            return self.kinds[name]
        if not self.bound(name):
            return None
        current = self.namespace.get(name)
        value = self.values.get(name)
        if value is not None and not (
            isinstance(value, str) and self.predictor._digest(name, current) == value
        ):
            return None
        return kind_of(current)

    def state(
        self,
        identity: str,
        record: CellRecord | None,
        current: CellRecord | None,
        depends: dict[int, list[str]],
        states: list[CellState],
        last: Entry | None = None,
    ) -> tuple[str, Reason | None]:
        """The cell's session state and why: what its last execution did, unless stale.
        ``last``: an entry already looked up for the cell (spares a lookup if it is the
        one its last execution used)."""
        if record is None:
            return NOT_RUN, None
        if current is None:
            return STALE, Code.SOURCE_CHANGED_SINCE()
        changed = self.files_changed(record, last)
        if changed is not None:
            if changed.code is Code.FILE_CHANGED:
                return STALE, Code.FILE_CHANGED_ON_DISK(**changed.details)
            return STALE, changed
        for j in sorted(depends):
            upstream = states[j]
            if upstream.state == STALE:
                return STALE, Code.UPSTREAM_STALE(upstream=_upstream(j, upstream.label))
            if self.order.get(upstream.identity, -1) > self.order.get(identity, -1):
                return STALE, Code.UPSTREAM_RAN_AGAIN(upstream=_upstream(j, upstream.label))
        return record.state, record.reason

    def predict(
        self,
        identity: str,
        p: _Parsed,
        current: CellRecord | None,
        components: dict[str, Any] | None,
    ) -> tuple[str, Reason | None, Entry | None, int | None]:
        """(prediction, why, the entry whose values the cell leaves, the position of the cell
        running every time those values are assumed from) for one cell; records its key.

        A ``rerun`` cell whose entry is there runs, and is taken to leave that entry's
        values: the premise of every restore (same source, same inputs, same values)."""
        if self.store is None:
            return UNKNOWN, self.failure, None, None
        refusal = self.engine.refusal(p.analysis, p.directive, self.refusal)
        if refusal is not None or p.analysis is None:
            return RUN, refusal, None, None
        # why it was not stored last time, if it was not: better than "nothing recorded"
        unstored = (
            current.reason
            if current and current.state in (State.UNCACHEABLE, State.ERROR)
            else None
        )
        forced = Code.FORCED() if p.directive == "rerun" else None
        if components is None:
            return RUN, forced or unstored or explain_miss(None, {}), None, None
        recorded = components.get("inputs", {})
        assumed: tuple[str, int] | None = None  # (name, position) of a first _Assumed input
        inputs = KeyInputs()  # by the engine's rule (keying.py), from the simulation
        for name in sorted(set(recorded) | p.analysis.reads | p.analysis.unbinds):
            if not is_variable_input(name):
                # not a variable (e.g. an environment variable the cell reads): the
                # engine alone knows how to read it; assume it is as recorded
                inputs.recorded(name, recorded[name])
            elif (
                name in p.analysis.unbinds
                and name not in p.analysis.reads
                and recorded.get(name, UNBOUND) in (BOUND, UNBOUND)
            ):
                inputs.existence(name, self.bound(name))
            else:
                value = self.input(name)
                if isinstance(value, _Assumed) and value.digest is None and name in recorded:
                    assumed = assumed or (name, value.position)
                    inputs.recorded(name, recorded[name])
                    continue
                if isinstance(value, _Assumed) and value.digest is not None:
                    assumed = assumed or (name, value.position)
                    value = value.digest
                if isinstance(value, (int, _Assumed)):
                    position = value if isinstance(value, int) else value.position
                    upstream = _upstream(position, self.labels[position])
                    return RUN, forced or explain_upstream(name, upstream), None, None
                if isinstance(value, Unhashable):
                    reason = unhashable_input(name, self.namespace[name], value)
                    return RUN, forced or reason, None, None
                inputs.read(name, value)
        names = frozenset(components.get("packages", {})) | p.analysis.imports
        if names not in self.packages:
            self.packages[names] = package_versions(names)
        now = inputs.components(p.digest, self.packages[names])
        key = self.predictor._keys[identity] = cell_key(now)
        entry = self.predictor._entry(key, self.store)
        if isinstance(entry, Reason):
            return (RUN, forced, None, None) if forced else (UNKNOWN, entry, None, None)
        if entry is None:
            return RUN, forced or unstored or explain_miss(components, now), None, None
        changed = files_changed(entry)
        if changed is not None:
            return RUN, forced or changed, None, None
        since = assumed[1] if assumed else None
        if forced:
            return RUN, forced, entry, since
        if assumed is not None:
            upstream = _upstream(assumed[1], self.labels[assumed[1]])
            why = Code.UPSTREAM_STEADY(name=assumed[0], upstream=upstream)
            return UNKNOWN, why, entry, since
        return RESTORE, Code.UNCHANGED(), entry, None

    def files_changed(self, record: CellRecord, known: Entry | None) -> Reason | None:
        """Why the files the cell's last execution read (as its entry recorded them) changed
        on disk since; None when they did not, or nothing was recorded."""
        if self.store is None or record.key is None or record.state == State.UNCACHEABLE:
            return None
        entry: Entry | Reason | None = known
        if known is None or known.key != record.key:
            entry = self.predictor._entry(record.key, self.store)
        if not isinstance(entry, Entry) or not (entry.files or entry.probes or entry.written):
            return None  # read nothing from disk: nothing to check (most cells)
        self.predictor._watch(entry)
        return files_changed(entry)

    def steady(self, p: _Parsed, why: Reason | None) -> bool:
        """Whether a cell that will run runs every time (``nocache``, ``rerun``, incrcell's
        own magics; not another magic, which may set anything) while nothing it reads
        changes in this Run All: it may be assumed to set the same values again."""
        if why is None or why.code not in _STEADY or p.analysis is None:
            return False
        if why.code is Code.MAGIC and p.own is None:
            return False
        return not any(isinstance(self.values.get(name), int) for name in p.analysis.reads)

    def imported(self, module: str, attribute: str | None) -> str | None:
        """The digest of what ``import module`` (``attribute`` None) or ``from module import
        attribute`` binds, as a fresh kernel would hash it; None when that cannot be known
        without importing (nothing is imported here)."""
        return self.predictor._imported(module, attribute)

    def bound(self, name: str) -> bool:
        """Whether ``name`` is bound at this point of the Run All."""
        if name in self.values:
            return self.values[name] != UNBOUND
        # In a fresh kernel a name some cell writes is unbound until that cell runs;
        # a name no cell writes can only come from outside the notebook, as it is now.
        return name not in self.written and name in self.namespace

    def input(self, name: str) -> str | int | _Assumed | Unhashable | None:
        """What ``name`` holds at this point of the Run All: a digest hex; the position
        of the cell that will run and set it (unknown until then); an Unhashable
        namespace value; None when unbound.
        """
        value = self.values.get(name)
        if value is not None:
            return None if value == UNBOUND else value
        if self.bound(name):
            return self.predictor._digest(name, self.namespace[name])
        return None
