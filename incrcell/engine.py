"""Per cell: restore it from the cache or run it, and record what a run left.

This is the core decision, free of IPython so it can be tested on a plain
dict namespace.  The IPython glue (``hooks.py``) calls three methods:

- :meth:`Engine.plan` before the cell runs: analyse it, hash everything it
  reads, look the key up.  A hit loads every value it will restore *now*, so
  that a corrupt entry turns into a miss before anything is touched.
- :meth:`Engine.restore` while the cell "runs" on a hit, instead of its code.
- :meth:`Engine.finish` after it ran: store what it wrote, if it succeeded.

Fail safe, never fail stale: whenever the engine cannot prove that restoring
is equivalent to running (an input it cannot hash, a read it cannot see, a
value it cannot pickle), the cell runs, and the reason is kept for
``%incrcell status`` / ``why``.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from . import fingerprint, store as store_module
from .analysis import DYNAMIC_BUILTINS, CellAnalysis, analyse_cell, expand_through_callables
from .config import Config
from .explain import BOUND, UNBOUND, explain_miss
from .files import MISSING, FileWatch, changed_files, file_digest
from .fingerprint import Unhashable, ValueHasher, source_hash
from .graph import CellGraph
from .packages import package_versions
from .serialise import Unpicklable, dumps
from .store import CacheWarning, Entry, FileStore, Store, StoreError

#: Bumped whenever what goes into a key changes; old entries then simply miss.
KEY_FORMAT = f"key1-hash{fingerprint.HASH_FORMAT}-store{store_module.FORMAT_VERSION}"

# Names IPython keeps in the user namespace for its history: reading them
# makes a cell depend on execution counts, not on content.
_HISTORY_NAME = re.compile(r"^(_+|_\d+|_i+|_i\d+|_ih|_oh|_dh|In|Out)$")
_MAGIC_NAMES = frozenset({"get_ipython", "exit", "quit"})
# Calls through which a cell can read or write names the analysis cannot see
# (``getattr`` on an object is just attribute access; ``"*"`` is a star import).
_DYNAMIC = (DYNAMIC_BUILTINS - {"getattr"}) | {"*"}

_ABSENT = object()

# Cell states, as shown by ``%incrcell status`` and sent to the sidebar.
RESTORED, RAN, UNCACHEABLE, ERROR = "restored", "ran", "uncacheable", "error"
# What a plan does.
RESTORE, RECORD, RUN = "restore", "record", "run"


@dataclass
class Plan:
    """The decision for one execution of one cell, made before it runs."""

    identity: str
    source: str
    execution_count: int | None
    action: str  # RESTORE, RECORD (run and store) or RUN (run, uncacheable)
    reason: str  # why it runs; empty for a restore
    analysis: CellAnalysis | None = None
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    key: str | None = None
    components: dict[str, Any] | None = None
    digests: dict[str, bytes] = field(default_factory=dict)  # input name -> digest before running
    bindings: dict[str, int] = field(default_factory=dict)  # name -> id(value) before running
    entry: Entry | None = None
    values: dict[str, Any] = field(default_factory=dict)  # hit: name -> value to bind
    files: dict[str, str] = field(default_factory=dict)  # miss: files read -> content digest
    result: Any = None  # hit: the Out value to return
    started: float = field(default_factory=time.perf_counter)


@dataclass
class CellRecord:
    """What happened the last time a cell executed, for status and ``why``."""

    identity: str
    label: str
    execution_count: int | None
    state: str
    reason: str
    duration: float  # seconds it took this time (run, or restore)
    saved: float  # seconds a restore saved (0 when it ran)
    key: str | None = None
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()


_ATOMS = (int, float, complex, str, bytes, bool, type(None))


def _unshared(value: object, hasher: ValueHasher) -> bool:
    """True when no other object than the namespace refers to ``value`` (or it is immutable).

    The references counted here: the namespace's, the caller's variable, this
    function's argument, ``getrefcount``'s own argument, and the hasher's memo
    if it hashed the value already.  Without reference counts (not CPython),
    every value counts as shared: it is then reloaded, which is always right.
    """
    if type(value) in _ATOMS:
        return True
    if sys.implementation.name != "cpython":
        return False
    return sys.getrefcount(value) <= 4 + (id(value) in hasher.memo)


def _label(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:80]
    return "(empty)"


def _type_name(value: object) -> str:
    return type(value).__qualname__


class Engine:
    """One session's cache decisions; ``store`` is opened lazily from ``config.cache_dir``."""

    def __init__(self, config: Config | None = None, *,
                 is_session_name: Callable[[str], bool] | None = None) -> None:
        self.config = config or Config()
        self.is_session_name: Callable[[str], bool] = is_session_name or (lambda name: False)
        self._store: Store | None = None
        self._store_dir = None
        self.graph = CellGraph()
        self.records: dict[str, CellRecord] = {}  # identity -> latest
        self.by_count: dict[int, CellRecord] = {}

    # -- store ---------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The cache; raises StoreError (one line, what to do) if its directory is unusable."""
        if self._store is None or self._store_dir != self.config.cache_dir:
            try:
                self._store = FileStore(self.config.cache_dir)
            except OSError as exc:
                raise StoreError(
                    f"the cache directory {self.config.cache_dir} cannot be used "
                    f"({exc.strerror or exc}); set INCRCELL_CACHE_DIR or run "
                    "%incrcell config cache_dir=PATH") from None
            self._store_dir = self.config.cache_dir
        return self._store

    # -- before the cell -----------------------------------------------------
    def plan(self, source: str, namespace: MutableMapping[str, Any], *,
             raw_source: str | None = None, cell_id: str | None = None,
             execution_count: int | None = None, directive: str | None = None,
             refusal: str = "") -> Plan:
        """Decide what to do with a cell whose (IPython-transformed) code is ``source``.

        ``directive`` is ``"rerun"`` or ``"nocache"`` for cells under those
        cell magics; ``refusal``, when not empty, is a reason the caller
        already knows the cell cannot be cached.
        """
        raw = raw_source if raw_source is not None else source
        digest = source_hash(source)  # parses the source: once per cell
        identity = f"cell:{cell_id}" if cell_id else f"src:{digest}"
        plan = Plan(identity, raw, execution_count, RUN, "")
        plan.bindings = {name: id(value) for name, value in namespace.items()}
        try:
            plan.analysis = analysis = analyse_cell(source)
        except SyntaxError:
            plan.reason = "the cell has a syntax error"
            return plan
        reads, writes = set(analysis.reads), set(analysis.writes)
        plan.reads, plan.writes = frozenset(reads), frozenset(writes)
        if directive == "nocache":
            refusal = "excluded with %%incrcell nocache"
        plan.reason = refusal or self._refusal(analysis)
        if plan.reason:
            return plan
        expansion = expand_through_callables(reads, namespace, analysis.deferred)
        reads |= expansion.reads
        writes |= expansion.writes
        plan.reads, plan.writes = frozenset(reads), frozenset(writes)
        plan.reason = expansion.hidden
        if plan.reason:
            return plan
        with ValueHasher() as hasher:
            try:
                self._lookup(plan, digest, namespace, analysis, directive, hasher)
            except StoreError as exc:  # the cache itself is unusable (e.g. its directory)
                plan.action, plan.reason = RUN, exc.reason
        return plan

    def _lookup(self, plan: Plan, source_digest: str, namespace: MutableMapping[str, Any],
                analysis: CellAnalysis, directive: str | None, hasher: ValueHasher) -> None:
        """Key the cell by its source digest and the content of what it reads; look the key up."""
        reads = plan.reads
        inputs = {}
        for name in sorted(reads):
            if name in namespace:
                try:
                    plan.digests[name] = digest = hasher.hash(namespace[name])
                except Unhashable as exc:
                    plan.reason = (f"input `{name}` ({_type_name(namespace[name])}) "
                                   f"cannot be hashed: {exc.reason}")
                    return
                inputs[name] = digest.hex()
            elif not hasattr(builtins, name):
                inputs[name] = UNBOUND
        for name in sorted(analysis.unbinds - reads):  # ``del x`` raises unless x exists
            inputs[name] = BOUND if name in namespace else UNBOUND
        plan.components = {
            "format": KEY_FORMAT,
            "python": sys.version,
            "source": source_digest,
            "inputs": inputs,
            "packages": package_versions(analysis.imports | hasher.packages),
        }
        plan.key = xxhash.xxh3_128(
            json.dumps(plan.components, sort_keys=True).encode()).hexdigest()
        plan.action = RECORD
        if directive == "rerun":
            plan.reason = "forced with %%incrcell rerun"
            return
        entry = self.store.get(plan.key)
        if entry is None:
            plan.reason = explain_miss(self._lineage(plan.identity), plan.components)
            return
        if entry.files and entry.cwd != os.getcwd():
            # the same relative path may name another file from here
            plan.reason = f"it read files from another working directory ({entry.cwd})"
            return
        changed = changed_files(entry.files)
        if changed:
            gone = entry.files[changed[0]] != MISSING and file_digest(changed[0]) == MISSING
            plan.reason = (f"file `{os.path.relpath(changed[0])}` "
                           f"{'was deleted' if gone else 'changed'}")
            return
        try:
            self._load(plan, entry, namespace, hasher)
        except StoreError as exc:
            warnings.warn(f"incrcell: could not restore the cell ({exc.reason}); running it instead.",
                          CacheWarning, stacklevel=2)
            plan.values, plan.result = {}, None
            plan.reason = f"its cache entry could not be read ({exc.reason})"
            return
        plan.action, plan.entry, plan.reason = RESTORE, entry, ""

    def _refusal(self, analysis: CellAnalysis) -> str:
        """Why a cell is uncacheable from its code alone ('' when it is not)."""
        if analysis.reads & _MAGIC_NAMES:
            return "uses IPython magics or shell commands (% or !): their side effects cannot be captured"
        history = sorted(n for n in analysis.reads if _HISTORY_NAME.match(n))
        if history:
            return f"reads IPython's output history (`{history[0]}`), which depends on execution order"
        dynamic = sorted(analysis.calls_dynamic & _DYNAMIC)
        if dynamic:
            shown = "from ... import *" if dynamic[0] == "*" else f"{dynamic[0]}()"
            return f"uses {shown}: its reads and writes cannot be seen"
        session = sorted(n for n in analysis.reads | analysis.writes if self.is_session_name(n))
        if session:
            return f"uses the IPython session object `{session[0]}`"
        return ""

    def _load(self, plan: Plan, entry: Entry, namespace: MutableMapping[str, Any],
              hasher: ValueHasher) -> None:
        """Load every value a hit binds; values already in the namespace are reused.

        Values may refer to notebook definitions by name (see serialise): a
        name the entry binds itself resolves to the value it restores; any
        other must be in the namespace with the content it had when recorded.
        """
        for name, digest in entry.requires.items():
            current = namespace.get(name)
            try:
                same = current is not None and hasher.hash(current).hex() == digest
            except Unhashable:
                same = False
            if not same:
                raise StoreError(f"it needs `{name}` as it was when recorded")
        loaded: dict[str, Any] = {}

        def value(name: str) -> Any:
            if name not in loaded:
                digest = entry.variables[name]
                current = namespace.get(name, _ABSENT)
                # Already there, unchanged, and nothing else refers to it: keeping it is
                # indistinguishable from binding the fresh object a real run would make.
                keep = current is not _ABSENT and _unshared(current, hasher)
                try:
                    keep = keep and hasher.hash(current).hex() == digest
                except Unhashable:
                    keep = False
                loaded[name] = current if keep else self.store.get_value(digest, resolve)
                if not keep:
                    plan.values[name] = loaded[name]
            return loaded[name]

        def resolve(name: str) -> Any:
            return value(name) if name in entry.variables else namespace[name]

        try:
            for name in entry.variables:
                value(name)
            if entry.result is not None:
                plan.result = self.store.get_value(entry.result, resolve)
        finally:
            loaded.clear()  # value and resolve refer to each other: do not keep values alive

    def _lineage(self, identity: str) -> dict[str, Any] | None:
        note = self.store.get_note(f"lineage:{identity}")
        return note.get("components") if note else None

    # -- on a hit --------------------------------------------------------------
    def restore(self, plan: Plan, namespace: MutableMapping[str, Any]) -> Any:
        """Bind the values a hit loaded and unbind what the cell deleted; returns its Out value."""
        assert plan.entry is not None
        namespace.update(plan.values)
        for name in plan.entry.deleted:
            namespace.pop(name, None)
        return plan.result

    # -- after the cell --------------------------------------------------------
    def watch_files(self) -> FileWatch:
        """A watch over the files a cell opens, ignoring the cache's own (start it yourself)."""
        return FileWatch(ignore=[self.config.cache_dir])

    def finish(self, plan: Plan, namespace: MutableMapping[str, Any], *, success: bool,
               outputs: list[dict[str, Any]] | None = None, result: Any = None,
               files: FileWatch | None = None) -> CellRecord:
        """Record the outcome of ``plan``; on a successful miss, store what the cell wrote.

        ``files`` is the stopped watch that ran during the cell, if any.
        """
        duration = time.perf_counter() - plan.started
        state, reason, saved = RAN, plan.reason, 0.0
        written: set[str] = set()
        if plan.action == RESTORE:
            assert plan.entry is not None
            state, saved = RESTORED, max(plan.entry.duration - duration, 0.0)
            written = set(plan.entry.variables) | set(plan.entry.deleted)
        elif not success:
            state = ERROR
            reason = "raised an exception: nothing was cached"
        elif plan.action == RUN:
            state = UNCACHEABLE
            written = self._rebound(plan, namespace)
        else:
            written, failure = self._save(plan, namespace, outputs or [], result, duration,
                                          files or FileWatch())
            if failure:
                state, reason = UNCACHEABLE, failure
        record = CellRecord(plan.identity, _label(plan.source), plan.execution_count, state,
                            reason, duration, saved, plan.key, plan.reads,
                            plan.writes | written)
        self.records[plan.identity] = record
        if plan.execution_count is not None:
            self.by_count[plan.execution_count] = record
        self.graph.record(plan.identity, plan.reads, record.writes)
        return record

    def _rebound(self, plan: Plan, namespace: MutableMapping[str, Any]) -> set[str]:
        """Names whose binding changed while the cell ran (new, rebound or deleted).

        The runtime truth behind the static ``writes``: it catches writes the
        analysis could not see (e.g. a library writing into ``__main__``).
        """
        before = plan.bindings
        changed = {n for n, v in namespace.items() if before.get(n) != id(v)}
        changed |= {n for n in before if n not in namespace}
        return {n for n in changed
                if not _HISTORY_NAME.match(n) and not self.is_session_name(n)}

    def _save(self, plan: Plan, namespace: MutableMapping[str, Any],
              outputs: list[dict[str, Any]], result: Any, duration: float, files: FileWatch
              ) -> tuple[set[str], str]:
        """Store what a successful miss wrote; returns (names written, failure reason)."""
        names = set(plan.writes) | self._rebound(plan, namespace)
        names |= self._mutated(plan, namespace, known=names)
        if files.writes:
            shown = os.path.relpath(sorted(files.writes)[0])
            return names, f"writes files (`{shown}`): restoring it would not recreate them"
        plan.files = {path: file_digest(path) for path in sorted(files.reads)}
        # a hasher of its own: its ``definitions`` are exactly those the stored values meet
        with ValueHasher() as hasher:
            failure = self._store_entry(plan, namespace, names, outputs, result, duration, hasher)
        return names, failure

    @staticmethod
    def _mutated(plan: Plan, namespace: MutableMapping[str, Any], known: set[str]) -> set[str]:
        """Inputs not in ``known`` whose content changed while the cell ran (``f(df)``)."""
        changed = set()
        with ValueHasher() as hasher:
            for name, before in plan.digests.items():
                if name not in known and name in namespace:
                    try:
                        if hasher.hash(namespace[name]) != before:
                            changed.add(name)
                    except Unhashable:
                        changed.add(name)
        return changed

    def _store_entry(self, plan: Plan, namespace: MutableMapping[str, Any], names: set[str],
                     outputs: list[dict[str, Any]], result: Any, duration: float,
                     hasher: ValueHasher) -> str:
        """Store the values and the entry; returns why the cell is uncacheable ('' if stored)."""
        variables: dict[str, str] = {}
        deleted = sorted(n for n in names if n not in namespace)
        try:
            for name in sorted(n for n in names if n in namespace):
                variables[name] = self._put_value(namespace[name], hasher, f"`{name}`")
            result_digest = None if result is None else self._put_value(
                result, hasher, "its result")
            requires = {name: self._digest(obj, hasher, f"`{name}`").hex()
                        for name, obj in hasher.definitions.items()
                        if name not in variables or namespace.get(name) is not obj}
            assert plan.key is not None and plan.components is not None
            self.store.put(Entry(key=plan.key, source=plan.source, variables=variables,
                                 deleted=deleted, outputs=outputs, result=result_digest,
                                 duration=duration, created=time.time(),
                                 components=plan.components, requires=requires,
                                 files=plan.files, cwd=os.getcwd()))
            self.store.put_note(f"lineage:{plan.identity}",
                                {"key": plan.key, "components": plan.components})
        except _Uncacheable as exc:
            return str(exc)
        except StoreError as exc:
            warnings.warn(f"incrcell: could not save the cell to the cache ({exc.reason}); "
                          "it will run again next time.", CacheWarning, stacklevel=2)
            return f"could not be saved: {exc.reason}"
        return ""

    @staticmethod
    def _digest(value: Any, hasher: ValueHasher, what: str) -> bytes:
        try:
            return hasher.hash(value)
        except Unhashable as exc:
            raise _Uncacheable(f"writes {what} ({_type_name(value)}), which cannot be hashed: "
                               f"{exc.reason}") from None

    def _put_value(self, value: Any, hasher: ValueHasher, what: str) -> str:
        digest = self._digest(value, hasher, what).hex()
        if not self.store.has_value(digest):
            try:
                serialised = dumps(value)
            except Unpicklable as exc:
                raise _Uncacheable(f"writes {what} ({_type_name(value)}), which cannot be "
                                   f"pickled: {exc.reason}") from None
            self.store.put_value(digest, serialised)
        return digest

    # -- housekeeping ------------------------------------------------------------
    def clear_session(self) -> int:
        """Delete the entries of the cells seen in this session; returns how many."""
        keys = {r.key for r in self.records.values() if r.key}
        removed = self.store.delete(keys)
        self.graph.forget(self.records)
        self.records.clear()
        self.by_count.clear()
        return removed

    def clear_all(self) -> None:
        self.store.clear()
        self.graph.forget(self.records)
        self.records.clear()
        self.by_count.clear()


class _Uncacheable(Exception):
    """A value the cell wrote cannot be stored: the cell stays uncacheable."""
