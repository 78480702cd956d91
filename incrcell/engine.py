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
import functools
import gc
import itertools
import json
import linecache
import os
import re
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from . import fingerprint, interpreter, nativeio, randomness
from . import store as store_module
from .analysis import (
    DYNAMIC_BUILTINS,
    CellAnalysis,
    analyse_cell,
    expand_through_callables,
    notebook_definition,
)
from .config import Config
from .effects import find_effects, late_effects, late_global_stores
from .explain import BOUND, UNBOUND, explain_miss
from .files import (
    EXISTS,
    MISSING,
    SPECIAL,
    FileWatch,
    changed_files,
    file_digest,
    install,
    is_state,
    probe_changed,
    write_back,
)
from .fingerprint import Unhashable, ValueHasher, array_owner, is_leaf, source_hash
from .graph import CellGraph
from .packages import changed_since_import, note_loaded, package_versions
from .randomness import SeedWatch
from .serialise import Shared, Unpicklable, dumps, loads, one_line
from .store import CacheWarning, Entry, Store, StoreError, open_store

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

# Immutable values without parts: keeping one is the same as binding an equal one anew.
_ATOMS = (int, float, complex, str, bytes, bool, type(None))
_IMMUTABLE = frozenset((*_ATOMS, tuple, frozenset))
# Values that may stand for themselves whoever else refers to them: a module is the
# same object however often it is imported, an atom has no identity worth keeping.
_SELF_STANDING = (*_ATOMS, types.ModuleType)
# Values whose identity never matters when stored as another name's reference: code,
# modules and immutable values.
_NO_IDENTITY = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    *_IMMUTABLE,
)
# Objects through which the holders of a mutated object are searched (see _sharers).
_CONTAINERS = frozenset({list, dict, set, tuple, frozenset, types.SimpleNamespace})
_HOLDERS_LIMIT = 10_000
# Objects inside mutated values walked to find those held elsewhere, and how many of those
# may be searched for holders (each costs a pass over the heap; see Engine._held_elsewhere).
_INNER_LIMIT = 1_000_000
_SHARED_LIMIT = 1_000
# What that walk does not enter: values without parts, code (whose globals are the whole
# namespace: only a function's closure cells are walked), modules.
_NOT_WALKED = (*_NO_IDENTITY, types.CodeType)
# Marks, in ValueHasher.watch, objects found inside a value rather than bound to a name.
_INSIDE = "\0"

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
    source_digest: str = ""  # source_hash of the code that runs
    analysis: CellAnalysis | None = None
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    key: str | None = None
    components: dict[str, Any] | None = None
    digests: dict[str, bytes] = field(default_factory=dict)  # input name -> digest before running
    # input name -> ids of the mutable objects inside it before running (ValueHasher.collect)
    inner: dict[str, set[int]] = field(default_factory=dict)
    bindings: dict[str, int] = field(default_factory=dict)  # name -> id(value) before running
    entry: Entry | None = None
    values: dict[str, Any] = field(default_factory=dict)  # hit: name -> value to bind
    files: dict[str, str] = field(default_factory=dict)  # miss: files read -> content digest
    codes: tuple[types.CodeType, ...] = ()  # miss: code of the functions it calls
    random_before: dict[str, Any] = field(default_factory=dict)  # miss: randomness.snapshot()
    random_after: dict[str, Any] = field(default_factory=dict)  # hit: generator states to set
    outputs: dict[str, bytes | str | None] = field(default_factory=dict)  # hit: paths to put back
    # run: the interpreter state before (interpreter.snapshot), of the modules ``watched``;
    # ``stores``: modules the cell sets attributes on itself (effects.Effects.stores)
    state_before: interpreter.Snapshot | None = None
    watched: list[str] = field(default_factory=list)
    stores: frozenset[str] = frozenset()
    reach: frozenset[str] = frozenset()  # modules the cell and the code it reaches refer to
    unresolved: tuple[str, ...] = ()  # calls into modules the cell imports (effects.late_effects)
    state_after: dict[str, Any] = field(default_factory=dict)  # hit: interpreter items to set
    result: Any = None  # hit: the Out value to return
    through: dict[str, str | None] = field(default_factory=dict)  # miss: see Engine._through
    cache_anyway: bool = False  # %%incrcell cache: fresh entropy is accepted
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
    source_digest: str = ""  # source_hash of the code it executed (the sidebar's "stale")


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


def _is_notebook_object(obj: object) -> bool:
    """An instance of a class defined in the notebook: a plain data holder we may look through."""
    return getattr(type(obj), "__module__", None) == "__main__" and not isinstance(obj, type)


def cell_label(source: str) -> str:
    """A cell's first non-empty line, as status and the sidebar show it."""
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:80]
    return "(empty)"


def _type_name(value: object) -> str:
    return type(value).__qualname__


#: What precedes an interpreter item (interpreter.py) among a key's inputs.
STATE_INPUT = "state: "

#: Why a ``%%incrcell rerun`` cell runs.
FORCED = "forced with %%incrcell rerun"


def key_components(
    source_digest: str, inputs: dict[str, str], packages: dict[str, str]
) -> dict[str, Any]:
    """What a cell's key is made of; kept as the cell's lineage to explain misses."""
    return {
        "format": KEY_FORMAT,
        "python": sys.version,
        "source": source_digest,
        "inputs": inputs,
        "packages": packages,
    }


def cell_key(components: dict[str, Any]) -> str:
    """The cache key of the cell with these :func:`key_components`."""
    return xxhash.xxh3_128(json.dumps(components, sort_keys=True).encode()).hexdigest()


def unhashable_input(name: str, value: object, exc: Unhashable) -> str:
    """Why a cell reading ``value`` as ``name`` is uncacheable."""
    return f"input `{name}` ({_type_name(value)}) cannot be hashed: {exc.reason}"


#: How many objects :func:`code_sources` looks at in a cell's values, at most.
_SOURCES_LIMIT = 2_000


def code_sources(values: Iterable[object]) -> dict[str, str]:
    """The source of the in-memory files the functions among ``values`` were compiled from.

    A function defined in a cell names its cell's file (``/tmp/ipykernel_<pid>/…py``),
    which exists only in this kernel's ``linecache``; after a restart, a restored
    function would have no source for tracebacks, the debugger or ``inspect``.
    Functions, methods, partials and classes defined in the notebook are looked
    for in the values, in plain containers and notebook objects, up to
    ``_SOURCES_LIMIT`` objects (a function deeper than that keeps no source:
    a poorer traceback, never a different result).
    """
    filenames: set[str] = set()
    seen: set[int] = set()
    stack = list(values)

    def push(objects: Iterable[object]) -> None:  # never more than the limit waiting
        stack.extend(itertools.islice(objects, max(_SOURCES_LIMIT - len(stack), 0)))

    looked = 0
    while stack and looked < _SOURCES_LIMIT:
        obj = stack.pop()
        looked += 1
        if id(obj) in seen or type(obj) in _ATOMS:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            filenames.add(obj.__code__.co_filename)
            push(
                cell.cell_contents
                for cell in obj.__closure__ or ()
                if cell.cell_contents is not None
            )
        elif isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            push([obj.__func__])
        elif isinstance(obj, property):
            push(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, functools.partial):
            push([obj.func])
        elif isinstance(obj, type):
            if obj.__module__ == "__main__":
                push(vars(obj).values())
        elif type(obj) in (list, tuple, set, frozenset):
            push(obj)  # type: ignore[arg-type]
        elif type(obj) is dict:
            push(obj.values())  # type: ignore[union-attr]
        elif _is_notebook_object(obj):
            push([type(obj), *getattr(obj, "__dict__", {}).values()])
    sources = {}
    for filename in sorted(filenames):
        cached = linecache.cache.get(filename)
        # registered in memory (no modification time), not a file on disk
        if cached is not None and len(cached) == 4 and cached[1] is None:
            sources[filename] = "".join(cached[2])
    return sources


def register_sources(sources: dict[str, str]) -> None:
    """Make the recorded sources of :func:`code_sources` visible to tracebacks,
    ``inspect`` and the debugger, under their original names (kept if already there)."""
    for filename, text in sources.items():
        if filename not in linecache.cache:
            lines = text.splitlines(keepends=True)
            linecache.cache[filename] = (len(text), None, lines, filename)


def varies(effect: str) -> str:
    """Why a cell with this effect on the world (effects.py) is uncacheable."""
    return (
        f"{effect}: its results can change from run to run "
        "(start it with %%incrcell cache to cache it anyway)"
    )


def files_changed(entry: Entry) -> str:
    """Why the files a cache entry read forbid restoring it now ('' when they do not)."""
    if (entry.files or entry.written or entry.probes) and entry.cwd != os.getcwd():
        # the same relative path may name another file from here
        return f"it read or wrote files from another working directory ({entry.cwd})"
    changed = changed_files(entry.files)
    if changed:
        gone = entry.files[changed[0]] != MISSING and file_digest(changed[0]) == MISSING
        return f"file `{os.path.relpath(changed[0])}` {'was deleted' if gone else 'changed'}"
    return probe_changed(entry.probes)


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
        self._store_dir = self.config.cache_dir if store is not None else None
        self._refused: tuple[object, str] | None = None  # the unusable cache last warned about
        self.graph = CellGraph()
        self.records: dict[str, CellRecord] = {}  # identity -> latest
        self.by_count: dict[int, CellRecord] = {}
        # id -> (value, digest, packages) of arrays and frames a cell just wrote or restored:
        # while no user code runs, their digests stand (see forget_digests)
        self.known: dict[int, tuple[object, bytes, frozenset[str]]] = {}
        # global random generator -> whether it holds fresh entropy (see randomness.py);
        # absent: as its module left it on import
        self.fresh: dict[str, bool] = {}
        # interpreter items (see interpreter.py) any cell of this session changed: their
        # current values key every later cell (the SETTINGS key every cell anyway)
        self.touched: set[str] = set()
        self._setting_digests: dict[str, tuple[Any, str]] = {}  # see _state_digest

    def forget_digests(self) -> None:
        """Drop the digests of values just written or restored: user code may have run.

        The engine calls it before every cell whose code runs; the IPython glue
        calls it when anything else may have run user code between two cells
        (a silent execution, a widget's comm message).
        """
        self.known.clear()

    def _remember(self, value: object, digest: bytes, packages: frozenset[str]) -> None:
        if is_leaf(value):
            self.known[id(value)] = (value, digest, packages)

    # -- store ---------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The cache; raises StoreError (one line, what to do) if it is unusable."""
        config = self.config
        if self._store is None or self._store_dir != config.cache_dir:
            try:
                self._store = open_store(
                    config.cache_dir, max_size=config.max_size, max_age=config.max_age
                )
            except StoreError as exc:
                reason = exc.reason
                if reason.startswith("the cache directory"):
                    reason += "; set INCRCELL_CACHE_DIR or run %incrcell config cache_dir=PATH"
                raise StoreError(reason) from None
            self._store_dir = config.cache_dir
        store = self._store
        store.max_size, store.max_age = config.max_size, config.max_age
        return store

    # -- before the cell -----------------------------------------------------
    def plan(
        self,
        source: str,
        namespace: MutableMapping[str, Any],
        *,
        raw_source: str | None = None,
        cell_id: str | None = None,
        execution_count: int | None = None,
        directive: str | None = None,
        refusal: str = "",
    ) -> Plan:
        """Decide what to do with a cell whose (IPython-transformed) code is ``source``.

        ``directive`` is ``"rerun"``, ``"nocache"`` or ``"cache"`` for cells
        under those cell magics; ``refusal``, when not empty, is a reason the caller
        already knows the cell cannot be cached.
        """
        plan = self._plan(
            source, namespace, raw_source, cell_id, execution_count, directive, refusal
        )
        if plan.action != RESTORE:
            # its code runs, whatever the reason (a refusal included): the digests of
            # values just written or restored may no longer hold, nor the interpreter's state
            self.forget_digests()
            plan.watched = plan.watched or interpreter.watched_modules(())
            plan.state_before = interpreter.snapshot(plan.watched, plan.reach)
        return plan

    def _plan(
        self,
        source: str,
        namespace: MutableMapping[str, Any],
        raw_source: str | None,
        cell_id: str | None,
        execution_count: int | None,
        directive: str | None,
        refusal: str,
    ) -> Plan:
        raw = raw_source if raw_source is not None else source
        install()  # the file wrappers, before any input is hashed (see files.install)
        digest = source_hash(source)  # parses the source: once per cell
        identity = f"cell:{cell_id}" if cell_id else f"src:{digest}"
        plan = Plan(
            identity,
            raw,
            execution_count,
            RUN,
            "",
            source_digest=digest,
            cache_anyway=directive == "cache",
        )
        plan.bindings = {name: id(value) for name, value in namespace.items()}
        try:
            plan.analysis = analysis = analyse_cell(source)
        except SyntaxError:
            plan.reason = self.refusal(None)
            return plan
        reads, writes = set(analysis.reads), set(analysis.writes)
        plan.reads, plan.writes = frozenset(reads), frozenset(writes)
        plan.reason = self.refusal(analysis, directive, refusal)
        if plan.reason:
            return plan
        expansion = expand_through_callables(reads, namespace, analysis.deferred)
        reads |= expansion.reads
        writes |= expansion.writes
        plan.reads, plan.writes = frozenset(reads), frozenset(writes)
        plan.codes = expansion.codes
        plan.reason = expansion.hidden
        if plan.reason:
            return plan
        effects = find_effects(
            source,
            namespace,
            expansion.codes,
            [namespace[name] for name in sorted(reads) if name in namespace],
        )
        plan.stores = effects.stores
        plan.unresolved = () if directive == "cache" else effects.unresolved
        plan.reach = frozenset(
            name
            for module in [*effects.modules, *analysis.imports]
            for full in [getattr(module, "__name__", module)]
            for name in (full, full.partition(".")[0])
        )
        plan.watched = interpreter.watched_modules(
            [*effects.referenced, *(sys.modules.get(name) for name in effects.stores)]
        )
        if effects.reason and directive != "cache":
            plan.reason = varies(effects.reason)
            return plan
        with ValueHasher() as hasher:
            bound = {id(value) for value in namespace.values()} if self.known else set()
            for key, known in list(self.known.items()):
                if key in bound:
                    hasher.memo[key] = known
                else:  # rebound since: do not keep it alive
                    del self.known[key]
            try:
                self._lookup(
                    plan, digest, namespace, analysis, directive, hasher, effects.environment
                )
            except StoreError as exc:  # the cache itself is unusable (e.g. its directory)
                plan.action, plan.reason = RUN, exc.reason
                if self._refused != (self.config.cache_dir, exc.reason):  # say so once
                    self._refused = (self.config.cache_dir, exc.reason)
                    warnings.warn(f"incrcell: {exc.reason}.", CacheWarning, stacklevel=2)
        return plan

    def _lookup(
        self,
        plan: Plan,
        source_digest: str,
        namespace: MutableMapping[str, Any],
        analysis: CellAnalysis,
        directive: str | None,
        hasher: ValueHasher,
        environment: frozenset[str] = frozenset(),
    ) -> None:
        """Key the cell by its source digest and the content of what it reads; look the key up.

        ``environment``: the environment variables it reads, inputs like variables.
        """
        reads = plan.reads
        inputs = {}
        for name in sorted(reads):
            if name in namespace:
                plan.inner[name] = hasher.collect()
                try:
                    plan.digests[name] = digest = hasher.hash(namespace[name])
                except Unhashable as exc:
                    plan.reason = unhashable_input(name, namespace[name], exc)
                    return
                inputs[name] = digest.hex()
            elif not hasattr(builtins, name):
                inputs[name] = UNBOUND
        hasher.collected = None
        for name in sorted(analysis.unbinds - reads):  # ``del x`` raises unless x exists
            inputs[name] = BOUND if name in namespace else UNBOUND
        for variable in sorted(environment):
            value = os.environ.get(variable)
            inputs[f"os.environ[{variable!r}]"] = (
                UNBOUND if value is None else fingerprint.hash_bytes(value.encode()).hex()
            )
        settings: dict[str, Any] = {}
        for item in [*interpreter.SETTINGS, *sorted(self.touched - set(interpreter.SETTINGS))]:
            if not interpreter.reaches(item, plan.reach):
                continue
            try:
                inputs[STATE_INPUT + item] = self._state_digest(
                    item, interpreter.current(item, settings), hasher
                )
            except Unhashable as exc:
                plan.reason = (
                    f"{item}, which an earlier cell changed, cannot be hashed: {exc.reason}"
                )
                return
        versions = package_versions(analysis.imports | hasher.packages)
        changed = changed_since_import({**hasher.modules, **versions})
        if changed:
            plan.reason = (
                f"local module `{changed}` changed on disk after it was imported: the "
                "code in memory is not the code on disk (restart the kernel to cache "
                "this cell again)"
            )
            return
        plan.components = key_components(source_digest, inputs, versions)
        plan.key = cell_key(plan.components)
        plan.action = RECORD
        plan.random_before = randomness.snapshot()
        entry = None if directive == "rerun" else self.store.get(plan.key)
        plan.reason = (
            FORCED
            if directive == "rerun"
            else self._unusable(plan, entry, namespace, hasher, settings)
        )
        if plan.reason:
            plan.through = self._through(plan, entry, namespace, hasher)
            return
        plan.action, plan.entry = RESTORE, entry

    def _unusable(
        self,
        plan: Plan,
        entry: Entry | None,
        namespace: MutableMapping[str, Any],
        hasher: ValueHasher,
        settings: dict[str, Any],
    ) -> str:
        """Why ``entry`` (looked up under the plan's key) cannot be restored now ('' if it can,
        with its values loaded into the plan); ``settings``: interpreter.current's memo."""
        if entry is None:
            return explain_miss(self._lineage(plan.identity), plan.components)
        reason = files_changed(entry)
        if reason:
            return reason
        states = plan.random_before
        for name, before in sorted(entry.random.items()):
            if before is not None and (
                name not in states or randomness.state_digest(states[name]) != before
            ):
                return (
                    f"the global random state of `{name}` is not the one it drew "
                    "from when recorded (seed it before drawing to make this cell "
                    "cacheable)"
                )
        for item, before in sorted(entry.interpreter.items()):
            try:
                same = hasher.hash(interpreter.current(item, settings)).hex() == before
            except Unhashable:
                same = False
            if not same:
                return (
                    f"{item} is not what it was when the cell was recorded, and the cell changes it"
                )
        unmet = self._unmet(entry, namespace, hasher)
        if unmet:
            return (
                f"its values refer to `{unmet}`, which is not what it was when "
                "the cell was recorded"
            )
        for name, before in sorted(entry.through.items()):
            try:
                now = self._content(namespace, name, hasher)
            except Unhashable:
                now = None
            if now != before:
                return (
                    f"it changes `{name}` through an object they share, and `{name}` is "
                    "not what it was when the cell was recorded"
                )
        try:
            self._load(plan, entry, namespace, hasher)
        except StoreError as exc:
            warnings.warn(
                f"incrcell: could not restore the cell ({exc.reason}); running it instead.",
                CacheWarning,
                stacklevel=3,
            )
            plan.values, plan.result = {}, None
            return f"its cache entry could not be read ({exc.reason})"
        directory = plan.state_after.get(interpreter.CWD)
        if isinstance(directory, str) and not os.path.isdir(directory):
            plan.values, plan.result = {}, None
            return f"the directory it changes to ({directory}) no longer exists"
        return ""

    def _through(
        self,
        plan: Plan,
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
        note = self.store.get_note(f"through:{plan.source_digest}") or {}
        names = set(note.get("names", ())) | set(entry.through if entry else ())
        through: dict[str, str | None] = {}
        for name in sorted(names - plan.digests.keys()):
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

    def refusal(
        self, analysis: CellAnalysis | None, directive: str | None = None, refusal: str = ""
    ) -> str:
        """Why a cell is not cached, before its inputs are even looked at ('' when it may be).

        ``analysis`` is None for a cell that does not parse; ``directive`` and
        ``refusal`` are as for :meth:`plan`.  The sidebar's predictions use it too.
        """
        if analysis is None:
            return "the cell has a syntax error"
        if directive == "nocache":
            return "excluded with %%incrcell nocache"
        return refusal or self._refusal(analysis)

    def _refusal(self, analysis: CellAnalysis) -> str:
        """Why a cell is uncacheable from its code alone ('' when it is not)."""
        if analysis.reads & _MAGIC_NAMES:
            return "uses IPython magics or shell commands (% or !): their side effects cannot be captured"
        history = sorted(n for n in analysis.reads if _HISTORY_NAME.match(n))
        if history:
            return (
                f"reads IPython's output history (`{history[0]}`), which depends on execution order"
            )
        dynamic = sorted(analysis.calls_dynamic & _DYNAMIC)
        if dynamic:
            shown = "from ... import *" if dynamic[0] == "*" else f"{dynamic[0]}()"
            return f"uses {shown}: its reads and writes cannot be seen"
        session = sorted(n for n in analysis.reads | analysis.writes if self.is_session_name(n))
        if session:
            return f"uses the IPython session object `{session[0]}`"
        return ""

    def _load(
        self, plan: Plan, entry: Entry, namespace: MutableMapping[str, Any], hasher: ValueHasher
    ) -> None:
        """Load every value a hit binds, unless the namespace already holds them all.

        Values may refer by name to objects the cell did not write (notebook
        definitions, and values it aliased, see :meth:`_store_entry`): the
        caller checked them with :meth:`_unmet`.
        """
        for path, blob in entry.written.items():
            data = (
                blob if is_state(blob) else None if blob == MISSING else _loaded(self.store, blob)
            )
            if not (data is None or isinstance(data, (bytes, str))):
                raise StoreError("its cached output files do not match its entry")
            plan.outputs[path] = data
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
            return
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
        plan.values, plan.result, plan.random_after, plan.state_after = loaded

    @staticmethod
    def _identities(namespace: MutableMapping[str, Any], entry: Entry) -> int:
        """How many of the entry's names hold values whose identity matters (not modules,
        not atoms): two such values may have shared objects when recorded."""
        return sum(not isinstance(namespace.get(name), _SELF_STANDING) for name in entry.variables)

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
            isinstance(current, _SELF_STANDING) or _unshared(current, hasher)
        ):
            return False
        try:
            return hasher.hash(current).hex() == digest
        except Unhashable:
            return False

    def _lineage(self, identity: str) -> dict[str, Any] | None:
        note = self.store.get_note(f"lineage:{identity}")
        return note.get("components") if note else None

    # -- on a hit --------------------------------------------------------------
    def restore(self, plan: Plan, namespace: MutableMapping[str, Any]) -> Any:
        """Write back the files a hit wrote, bind the values it loaded and unbind what the
        cell deleted; returns its Out value."""
        assert plan.entry is not None
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
            self._remember(
                value,
                bytes.fromhex(plan.entry.variables[name]),
                frozenset(plan.entry.packages.get(name, ())),
            )
        for name in plan.entry.deleted:
            namespace.pop(name, None)
        randomness.restore(plan.random_after)
        self.fresh.update(dict.fromkeys(plan.random_after, False))  # recorded states are seeded
        return plan.result

    # -- after the cell --------------------------------------------------------
    def watch_files(self) -> FileWatch:
        """A watch over the files a cell opens, ignoring the cache's own (start it yourself)."""
        return FileWatch(ignore=[self.config.cache_dir])

    def watch_seeds(self, plan: Plan) -> SeedWatch:
        """A watch over the seeding of global random generators while ``plan``'s cell records."""
        return SeedWatch(
            plan.random_before,
            frozenset(
                name
                for name in plan.random_before
                if self.fresh.get(name, randomness.entropy_on_import(name))
            ),
        )

    def finish(
        self,
        plan: Plan,
        namespace: MutableMapping[str, Any],
        *,
        success: bool,
        outputs: list[dict[str, Any]] | None = None,
        result: Any = None,
        files: FileWatch | None = None,
        seeds: SeedWatch | None = None,
    ) -> CellRecord:
        """Record the outcome of ``plan``; on a successful miss, store what the cell wrote.

        ``files`` and ``seeds`` are the stopped watches that ran during the cell, if any.
        """
        duration = time.perf_counter() - plan.started
        if plan.analysis is not None:
            note_loaded(plan.analysis.imports)
        if seeds is not None:  # how the cell left the generators, whether it succeeded or not
            self.fresh.update({name: name in seeds.fresh for name in seeds.before})
        state, reason, saved = RAN, plan.reason, 0.0
        written: set[str] = set()
        changes: dict[str, tuple[Any, Any]] = {}
        if plan.state_before is not None:
            after = interpreter.snapshot(plan.watched, plan.reach)
            changes = {
                item: change
                for item, change in interpreter.changed(plan.state_before, after).items()
                if not self._session_builtin(item)
            }
            self.touched.update(changes)
        if plan.action == RESTORE and success:
            assert plan.entry is not None
            self.touched.update(plan.entry.interpreter)
            state, saved = RESTORED, max(plan.entry.duration - duration, 0.0)
            written = set(plan.entry.variables) | set(plan.entry.deleted)
        elif plan.action == RESTORE:  # interrupted, or a file could not be written back
            state, reason = ERROR, "failed or was interrupted while incrcell restored it"
        elif not success:
            state = ERROR
            reason = "raised an exception: nothing was cached"
        elif plan.action == RUN:
            state = UNCACHEABLE
            written = self._rebound(plan, namespace)
        else:
            failure = self._interpreter_refusal(plan, after)
            if failure:
                written = self._rebound(plan, namespace)
                self.touched.update(interpreter.imported_items(plan.state_before, after))
            else:
                try:
                    written, failure = self._save(
                        plan,
                        namespace,
                        outputs or [],
                        result,
                        duration,
                        files or FileWatch(),
                        seeds or SeedWatch({}),
                        changes,
                    )
                except KeyboardInterrupt:  # the cell ran; only its recording stops (nothing
                    # half written: the store writes every file atomically)
                    written, failure = self._rebound(plan, namespace), ""
                    reason = (
                        "incrcell was interrupted while recording it: it ran, but is not cached"
                    )
                    warnings.warn(
                        "incrcell: interrupted while recording this cell: it ran, but "
                        "is not in the cache (it will run again next time).",
                        CacheWarning,
                        stacklevel=2,
                    )
            if failure:
                state, reason = UNCACHEABLE, failure
        record = CellRecord(
            plan.identity,
            cell_label(plan.source),
            plan.execution_count,
            state,
            reason,
            duration,
            saved,
            plan.key,
            plan.reads,
            plan.writes | written,
            plan.source_digest,
        )
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
        return {n for n in changed if not _HISTORY_NAME.match(n) and not self.is_session_name(n)}

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
    def _interpreter_refusal(plan: Plan, after: interpreter.Snapshot) -> str:
        """Why what the cell did to the interpreter cannot be stored ('' when it can)."""
        assert plan.state_before is not None
        late = late_effects(plan.unresolved)
        if late:
            return varies(late)
        stores = late_global_stores(plan.unresolved)
        if stores:
            return (
                f"calls `{stores}()`, which sets globals of a module the cell imports for "
                "the first time: what the import alone leaves cannot be told apart (import "
                "it in an earlier cell to cache this one)"
            )
        new = sorted(plan.stores - plan.state_before.modules.keys())
        if new:
            return (
                f"sets attributes of module `{new[0]}`, which was not imported before the "
                "cell: what the import alone leaves cannot be told apart (set them in a "
                "later cell to cache this one)"
            )
        return interpreter.refusal(plan.state_before, after)

    def _save(
        self,
        plan: Plan,
        namespace: MutableMapping[str, Any],
        outputs: list[dict[str, Any]],
        result: Any,
        duration: float,
        files: FileWatch,
        seeds: SeedWatch,
        changes: dict[str, tuple[Any, Any]],
    ) -> tuple[set[str], str]:
        """Store what a successful miss wrote; returns (names written, failure reason)."""
        names = set(plan.writes) | self._rebound(plan, namespace)
        mutated = self._mutated(plan, namespace, known=names)
        # inputs the cell writes in place (``del xs[0]``, ``df["c"] = ...``): the same object
        # as before, so whatever holds it changed too (``pair = (xs, ...)``)
        mutated |= {
            name
            for name in plan.writes & plan.digests.keys()
            if name in namespace and plan.bindings.get(name) == id(namespace[name])
        }
        names |= mutated
        sharers = self._sharers(plan, namespace, mutated, known=names)
        if sharers is None:
            return names, (
                f"changes `{sorted(mutated)[0]}` in place, and too many other "
                "objects refer to it to find every value that changed with it"
            )
        names |= sharers
        nativeio.literal_reads(files, plan.source, plan.codes)
        if files.bypassed:
            return names, (
                f"file `{os.path.relpath(files.bypassed[0])}` changed while it ran "
                "without being opened by it (a stream or memory map opened before "
                "the cell): incrcell cannot store or replay that write"
            )
        if files.unseen:
            return names, f"{files.unseen}: its reads and writes cannot be seen"
        both = sorted(files.updates | (files.reads & files.writes))
        if both:
            return names, (
                f"reads and writes file `{os.path.relpath(both[0])}`: its content "
                "before the cell is an input incrcell cannot restore"
            )
        if refused := nativeio.refusal(files):
            return names, refused
        plan.files = {path: file_digest(path) for path in sorted(files.reads)}
        special = sorted(path for path, digest in plan.files.items() if digest == SPECIAL)
        if special:
            return names, (
                f"reads `{os.path.relpath(special[0])}`, which is not a regular file "
                "(a pipe, device or socket): its content cannot be keyed"
            )
        plan.files.update(
            {path: EXISTS if existed else MISSING for path, existed in files.existed.items()}
        )
        try:
            produced = files.outputs()
        except (OSError, ValueError) as exc:
            return names, (
                f"wrote a file it cannot read back ({getattr(exc, 'strerror', None) or exc})"
            )
        # a hasher of its own: its ``definitions`` are exactly those the stored values meet
        after = randomness.snapshot()
        changed = randomness.changed(seeds.before, after)
        fresh = sorted(seeds.fresh_draws(after, changed))
        if fresh and not plan.cache_anyway:
            return names, (
                f"draws from the global random generator of `{fresh[0]}`, which "
                "holds fresh entropy (the notebook did not seed it): its results "
                "change from run to run (seed it first, or start the cell with "
                "%%incrcell cache to cache it anyway)"
            )
        # A seeded generator is an output even if seeding left it as it was; one holding
        # fresh entropy is not (setting its state again would replay what should be fresh).
        drawn = sorted((set(changed) | seeds.seeded & set(after)) - seeds.fresh)
        # The state before is an input, unless the cell seeded the generator before drawing,
        # or imported its module (torch's, which starts from a fixed seed).
        random = {
            name: None
            if name in seeds.seeded_first or name not in plan.random_before
            else randomness.state_digest(plan.random_before[name])
            for name in drawn
        }
        with ValueHasher() as hasher:
            failure = self._store_entry(
                plan,
                namespace,
                names,
                outputs,
                result,
                duration,
                {name: after[name] for name in drawn},
                random,
                produced,
                files.probes,
                hasher,
                changes,
            )
        return names, failure

    @staticmethod
    def _mutated(plan: Plan, namespace: MutableMapping[str, Any], known: set[str]) -> set[str]:
        """Inputs whose content changed while the cell ran (``f(df)``), in ``known`` too when
        still bound to the same object (``col *= 3`` changes ``col`` in place): what shares
        their objects changed with them."""
        changed = set()
        with ValueHasher() as hasher:
            for name, before in plan.digests.items():
                if name in namespace and (
                    name not in known or plan.bindings.get(name) == id(namespace[name])
                ):
                    try:
                        if hasher.hash(namespace[name]) != before:
                            changed.add(name)
                    except Unhashable:
                        changed.add(name)
        return changed

    def _sharers(
        self, plan: Plan, namespace: MutableMapping[str, Any], mutated: set[str], known: set[str]
    ) -> set[str] | None:
        """Names outside ``known`` whose values changed with the ``mutated`` inputs.

        ``b`` after ``b = a; a.append(1)``, ``z`` bound to an object inside
        ``a``, ``c`` after ``c = [a]``: a plain run leaves them changed, so
        they are written too (and stored together with ``a``, which keeps them
        shared).  Holders are found by walking the garbage collector's
        referrers up through plain containers and notebook objects; None when
        there are too many to be sure (the cell is then not cached).
        """
        if not mutated:
            return set()
        bound = self._bound(namespace, exclude=known)
        # a tuple has no identity of its own to keep, but one holding a mutated object changed
        bound.update(
            {
                id(value): name
                for name, value in namespace.items()
                if type(value) in (tuple, frozenset)
                and name not in known
                and not _HISTORY_NAME.match(name)
                and not self.is_session_name(name)
            }
        )
        # functions see the closure cells they share with a changed one (``inc, get = make()``)
        bound.update(
            {
                id(value): name
                for name, value in namespace.items()
                if type(value) is types.FunctionType
                and name not in known
                and not self.is_session_name(name)
            }
        )
        changed = [namespace[name] for name in mutated if name in namespace]
        inside = set().union(*(plan.inner.get(name, set()) for name in mutated))
        found = {bound[i] for i in inside | set(map(id, changed)) if i in bound}
        found |= self._same_memory(namespace, changed, bound)
        seen = set(map(id, changed)) | {id(namespace), id(changed)}
        shared = self._held_elsewhere(changed, seen)
        if shared is None:
            return None
        level = [*changed, *shared]
        while level:
            upper: list[object] = []
            for holder in gc.get_referrers(*level):
                if id(holder) in seen:
                    continue
                seen.add(id(holder))
                if id(holder) in bound:
                    found.add(bound[id(holder)])
                if type(holder) in _CONTAINERS or _is_notebook_object(holder):
                    upper.append(holder)
            if len(seen) > _HOLDERS_LIMIT:
                return None
            seen.add(id(upper))
            level = upper
        return found

    @staticmethod
    def _held_elsewhere(changed: list[object], seen: set[int]) -> list[object] | None:
        """The objects inside the ``changed`` values that something outside them refers to too.

        A change to ``a`` may be a change to an object inside it (``a[0].append(1)``)
        that another value holds as well (``c = {'k': a[0]}``): the holders must be
        walked up from those objects too.  The values are walked down (through
        containers, instances and closure cells, not through code or modules), counting
        the references they hold to each object inside; an object with more references
        than that is held elsewhere.  Their ids are added to ``seen``, so that the walk
        up does not come back through the values themselves.  None when there are too
        many to search.
        """
        counts: dict[int, int] = {}
        inner: dict[int, object] = {}
        walked: dict[type, bool] = {}  # per type: is it walked (counted, entered)?
        stack = list(changed)
        while stack:
            parts = stack.pop()
            parts = (
                parts.__closure__ or ()
                if type(parts) is types.FunctionType
                else gc.get_referents(parts)
            )
            for part in parts:
                kind = type(part)
                walk = walked.get(kind)
                if walk is None:
                    walk = walked[kind] = kind is types.FunctionType or not issubclass(
                        kind, _NOT_WALKED
                    )
                if not walk:
                    continue
                key = id(part)
                counts[key] = counts.get(key, 0) + 1
                if key not in inner and key not in seen:
                    inner[key] = part
                    if gc.is_tracked(part):  # untracked containers hold atoms only
                        stack.append(part)
            if len(inner) > _INNER_LIMIT:
                return None
        parts = part = None  # no reference of ours may count as a holder
        # the references besides the counted ones: ``inner``'s and getrefcount's argument
        shared = [inner[key] for key in inner if sys.getrefcount(inner[key]) - 2 > counts[key]]
        seen.update(inner)
        return None if len(shared) > _SHARED_LIMIT else shared

    @staticmethod
    def _same_memory(
        namespace: MutableMapping[str, Any], changed: list[object], bound: dict[int, str]
    ) -> set[str]:
        """Names of numpy arrays sharing memory with the ``changed`` arrays (views, bases)."""
        np = sys.modules.get("numpy")
        if np is None:
            return set()
        owners = {id(array_owner(v)) for v in changed if isinstance(v, np.ndarray)}
        return {
            bound[id(v)]
            for v in namespace.values()
            if id(v) in bound and isinstance(v, np.ndarray) and id(array_owner(v)) in owners
        }

    def _bound(self, namespace: MutableMapping[str, Any], exclude: set[str]) -> dict[int, str]:
        """``id() -> name`` of the user's values with identity (not code, modules, atoms)."""
        return {
            id(value): name
            for name, value in namespace.items()
            if type(value) not in _IMMUTABLE
            and name not in exclude
            and not isinstance(value, _NO_IDENTITY)
            and not _HISTORY_NAME.match(name)
            and not self.is_session_name(name)
        }

    def _store_entry(
        self,
        plan: Plan,
        namespace: MutableMapping[str, Any],
        names: set[str],
        outputs: list[dict[str, Any]],
        result: Any,
        duration: float,
        states: dict[str, Any],
        random: dict[str, str | None],
        produced: dict[str, bytes | str | None],
        probes: dict[str, str],
        hasher: ValueHasher,
        changes: dict[str, tuple[Any, Any]],
    ) -> str:
        """Store the values and the entry; returns why the cell is uncacheable ('' if stored).

        All written values (and the Out value) are pickled together, so objects
        shared between them stay shared.  An object the cell did not write but
        that a written value is or contains (``b = a``, ``pair = [a, a2]``, a
        view of ``arr``) is stored as a reference to its name, keyed like a
        notebook definition in ``requires``.  An object found *inside* another
        value the cell did not write (``x = lst[0]``) has no name to refer to:
        the cell is then not cached.
        """
        values = {name: namespace[name] for name in sorted(names) if name in namespace}
        deleted = sorted(n for n in names if n not in namespace)
        try:
            through = self._written_through(plan, values)
        except _Uncacheable as exc:
            return str(exc)
        except StoreError as exc:
            return f"could not be saved: {exc.reason}"
        hasher.watch = {
            i: _INSIDE + name for name, ids in plan.inner.items() if name not in names for i in ids
        }
        bound = self._bound(namespace, exclude=names)
        np = sys.modules.get("numpy")
        if np is not None:  # a view of a bound array has that array's owner as its base
            for name in list(bound.values()):
                value = namespace[name]
                if isinstance(value, np.ndarray) and value.base is not None:
                    bound.setdefault(id(array_owner(value)), name)
        hasher.watch.update(bound)
        try:
            variables = {
                name: self._digest(value, hasher, f"`{name}`").hex()
                for name, value in values.items()
            }
            packages = {name: sorted(hasher.packages_of(value)) for name, value in values.items()}
            result_digest = (
                None if result is None else self._digest(result, hasher, "its result").hex()
            )
            doubtful = hasher.doubtful
            left = {item: new for item, (_, new) in sorted(changes.items())}
            left_digests = [self._digest(new, hasher, item).hex() for item, new in left.items()]
            named = {name for name in hasher.met if not name.startswith(_INSIDE)}
            refs = {name: namespace[name] for name in named}
            inside = (
                {i: name[1:] for i, name in hasher.watch.items() if name.startswith(_INSIDE)}
                if len(named) < len(hasher.met)
                else None
            )
            hasher.watch = {}
            needed = {**hasher.definitions, **{name: namespace[name] for name in named}}
            requires = {
                name: self._digest(obj, hasher, f"`{name}`").hex()
                for name, obj in needed.items()
                if name not in values or values[name] is not obj
            }
            before = {
                item: self._digest(old, hasher, f"{item} (before it)").hex()
                for item, (old, _) in sorted(changes.items())
            }
            assert plan.key is not None and plan.components is not None
            bundle = None
            if values or result is not None or states or left:
                after = {name: randomness.state_digest(state) for name, state in states.items()}
                bundle = xxhash.xxh3_128(
                    json.dumps(
                        [plan.key, variables, result_digest, requires, after, left_digests]
                    ).encode()
                ).hexdigest()
                if not self.store.has_value(bundle):
                    try:
                        serialised = dumps(
                            (values, result, states, left),
                            own=[*values.values(), result, *left.values()],
                            refs=refs,
                            inside=inside,
                        )
                    except Shared as exc:
                        raise _Uncacheable(
                            f"writes a value that shares objects with `{exc.name}`, which it "
                            "does not write: a restore would copy them"
                        ) from None
                    except Unpicklable as exc:
                        raise _Uncacheable(self._unpicklable(values, result, refs, exc)) from None
                    if doubtful:
                        self._prove_round_trip(serialised, values, result, namespace)
                    self.store.put_value(bundle, serialised)
            written = {path: self._put_file(data) for path, data in produced.items()}
            self.store.put(
                Entry(
                    key=plan.key,
                    source=plan.source,
                    variables=variables,
                    deleted=deleted,
                    outputs=outputs,
                    result=result_digest,
                    bundle=bundle,
                    random=random,
                    packages=packages,
                    duration=duration,
                    created=time.time(),
                    components=plan.components,
                    requires=requires,
                    files=plan.files,
                    cwd=self._started_in(plan),
                    written=written,
                    through=through,
                    probes=probes,
                    sources=code_sources([*values.values(), result]),
                    interpreter=before,
                )
            )
            self.store.put_note(
                f"lineage:{plan.identity}", {"key": plan.key, "components": plan.components}
            )
            for name, value in values.items():
                self._remember(value, bytes.fromhex(variables[name]), frozenset(packages[name]))
        except _Uncacheable as exc:
            return str(exc)
        except StoreError as exc:
            warnings.warn(
                f"incrcell: could not save the cell to the cache ({exc.reason}); "
                "it will run again next time.",
                CacheWarning,
                stacklevel=2,
            )
            return f"could not be saved: {exc.reason}"
        return ""

    def _written_through(self, plan: Plan, values: dict[str, Any]) -> dict[str, str]:
        """The names among ``values`` the cell changed through objects they share with what
        it changed (not inputs, not bound anew), with their content before it ran.

        Raises :class:`_Uncacheable` when that content is unknown: the name is then
        noted for the cell's source, and hashed before its next run (see :meth:`_through`).
        An alias of an input (the same object) had the input's content.
        """
        inputs = {
            plan.bindings[name]: digest.hex()
            for name, digest in plan.digests.items()
            if name in plan.bindings
        }
        through: dict[str, str] = {}
        unknown = []
        for name, value in values.items():
            if name in plan.digests or name in plan.writes or plan.bindings.get(name) != id(value):
                continue
            before = plan.through.get(name, inputs.get(id(value), _ABSENT))
            if before is None:
                raise _Uncacheable(
                    f"changes `{name}` through an object they share, and what "
                    f"`{name}` held before cannot be hashed"
                )
            if before is _ABSENT:
                unknown.append(name)
            else:
                through[name] = before
        if unknown:
            self.store.put_note(
                f"through:{plan.source_digest}",
                {"names": sorted({*plan.through, *through, *unknown})},
            )
            raise _Uncacheable(
                f"changes `{unknown[0]}` through an object they share, which was not known "
                "before it ran: what it held before is part of the key from the next run on"
            )
        return through

    @staticmethod
    def _prove_round_trip(
        serialised: Any, values: dict[str, Any], result: Any, namespace: MutableMapping[str, Any]
    ) -> None:
        """Load what was just pickled and hash it; raises :class:`_Uncacheable` unless it is
        what was stored, sharing included.

        Only for values whose pickle may leave out what they hold (see
        ``ValueHasher.doubtful``): a ``__getstate__`` dropping a field, closures
        sharing a cell, which pickling copies apart.  Both sides are hashed
        skimming numpy arrays and pandas objects (``ValueHasher.skim``): their
        pickles are faithful, and a large one is never read again here.
        """
        try:
            loaded, loaded_result, *_ = loads(
                serialised.method, serialised.stream, serialised.buffers, namespace.__getitem__
            )
        except Exception as exc:  # user __setstate__ & co.: any failure means not cacheable
            raise _Uncacheable(
                f"writes values that cannot be loaded back from their pickle ({one_line(exc)})"
            ) from None
        aliases = {
            id(loaded[name]): name
            for name, value in values.items()
            if notebook_definition(value) == name
        }
        lossy = (
            "{} ({}), which its pickle does not bring back as it was (its __reduce__ or "
            "__getstate__ leaves out part of what it holds)"
        )
        pairs = [
            *(
                (lossy.format(f"`{name}`", _type_name(values[name])), values[name], loaded[name])
                for name in values
            ),
            (lossy.format("its result", _type_name(result)), result, loaded_result),
            (
                "values sharing objects (closure cells...) that pickling copies apart",
                (values, result),
                (loaded, loaded_result),
            ),
        ]
        with ValueHasher() as original, ValueHasher() as copied:
            original.skim = copied.skim = True  # arrays and frames come back as they were
            copied.aliases = aliases
            for what, value, copy in pairs:
                try:
                    same = original.hash(value) == copied.hash(copy)
                except Unhashable:
                    same = False
                if not same:
                    raise _Uncacheable(f"writes {what}")

    @staticmethod
    def _started_in(plan: Plan) -> str:
        """The working directory the cell started in: the one its key and files hold for
        (it may change directory itself: interpreter.py replays that)."""
        started = plan.state_before.groups.get(interpreter.CWD) if plan.state_before else None
        return started if isinstance(started, str) else os.getcwd()

    def _put_file(self, data: bytes | str | None) -> str:
        """Store the bytes of a file the cell wrote; returns the blob's name (MISSING: deleted;
        a directory's or symlink's state is kept as is, see files.FileWatch.outputs)."""
        if data is None:
            return MISSING
        if isinstance(data, str):
            return data
        blob = xxhash.xxh3_128_hexdigest(b"file\0" + data)
        if not self.store.has_value(blob):
            self.store.put_value(blob, dumps(data))
        return blob

    @staticmethod
    def _unpicklable(
        values: dict[str, Any], result: Any, refs: dict[str, Any], exc: Unpicklable
    ) -> str:
        """Which written value could not be pickled, as a reason."""
        for what, value in [*((f"`{n}`", v) for n, v in values.items()), ("its result", result)]:
            try:
                dumps(value, refs=refs)
            except Unpicklable as inner:
                return (
                    f"writes {what} ({_type_name(value)}), which cannot be pickled: {inner.reason}"
                )
        return f"writes values that cannot be pickled together: {exc.reason}"

    @staticmethod
    def _digest(value: Any, hasher: ValueHasher, what: str) -> bytes:
        try:
            return hasher.hash(value)
        except Unhashable as exc:
            raise _Uncacheable(
                f"writes {what} ({_type_name(value)}), which cannot be hashed: {exc.reason}"
            ) from None

    # -- housekeeping ------------------------------------------------------------
    def clear_session(self, also: Iterable[str] = ()) -> int:
        """Delete the entries of the cells seen in this session, and the entries
        ``also``; returns how many."""
        keys = {r.key for r in self.records.values() if r.key} | set(also)
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


class _Uncacheable(Exception):
    """A value the cell wrote cannot be stored: the cell stays uncacheable."""
