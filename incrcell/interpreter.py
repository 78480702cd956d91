"""State of the interpreter that no variable holds, changed in place by a cell.

``sys.path.insert(0, "vendor")``, ``os.environ["MODE"] = "fast"``,
``os.chdir("data")``, ``np.set_printoptions(precision=3)``,
``warnings.simplefilter("ignore")``, ``settings.LEVEL = 5`` on a module: a
cell's effect on the rest of the notebook is not only the names it binds.
Whoever changes it (the cell, a function of an earlier cell, a local
module, a library), the change shows in a before/after snapshot, so the
engine snapshots this state around every cell that runs (:func:`snapshot`,
:func:`changed`; mostly C-speed copies compared by identity):

* a change is an output: its value after the cell is stored with the entry
  and set again on a restore (:func:`apply`), so ``import vendored_mod``
  after a restored ``sys.path.insert`` works as in a plain run;
* its value before is an input: a restore needs exactly that value (the
  entry keeps its digest), as ``sys.path.append`` run on another path would
  leave another path;
* the few process-wide :data:`SETTINGS` key every cell; every other item a
  cell of the session changed stays *touched* and keys every later cell
  that may read it (:func:`reaches`: any cell for ``sys.path``, the working
  directory, the environment and library settings, the cells referring to a
  module for its attributes, through local modules' and notebook functions
  too).  So the cell calling ``helpers.level()``, which reads
  ``settings.LEVEL``, reruns when an edit of the cell that sets it changes
  it.  Over-approximate, never stale.

What is tracked: ``sys.path``, the working directory, ``os.environ`` (by
variable), ``sys.getrecursionlimit()``, ``warnings.filters`` (incrcell's own
filter aside), the locale, the decimal context (flags aside: they record
what happened, not a setting), numpy's print options and error state,
pandas' options (for cells that refer to pandas: a slow snapshot) and
matplotlib's ``rcParams`` (by key, when those libraries are imported; a cell
that imports one and changes its settings at once is compared with the
settings the import leaves), and the attributes of modules: of ``builtins``,
of the user's own (local) modules, and of the modules that notebook and
local functions the cell reaches refer to (``json.flag = 1`` in a helper);
private attributes (``_x``) of library modules are the library's own caches
and are not tracked, nor are submodules bound by imports.  What a cell
cannot have replayed makes it uncacheable (:func:`refusal`): removing
entries of ``sys.modules`` or planting objects there by hand, threads still
running when it ends.

Not seen: in-place changes inside an object a module attribute holds
(``settings.CONFIG["k"] = v`` through a helper; the cell doing it itself is
refused by effects.py), attributes a helper sets on a module first imported
in the same cell (there is no "before" to compare with; the cell setting
them itself is refused by the engine), and state kept by C libraries other
than those above.
"""

from __future__ import annotations

import ast
import importlib
import operator
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .files import ORIGINAL
from .packages import is_local_code
from .reasons import Code, Reason
from .store import CacheWarning


class _Absent:
    """The value of an item that does not exist (an unset variable, a deleted attribute):
    one object, also after a pickle round trip (it pickles as a reference to ``ABSENT``)."""

    def __repr__(self) -> str:
        return "<absent>"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()

# module name -> whether it is the user's own code (its file is outside the install prefixes)
_local: dict[str, bool] = {}
_OWN = __name__.partition(".")[0]  # incrcell itself, wherever it is installed
_locals: tuple[int, list[str]] = (-1, [])  # (len(sys.modules), the local modules among them)


def is_local_module(name: str, module: object) -> bool:
    """Whether ``module`` (bound in sys.modules as ``name``) is the user's own code."""
    known = _local.get(name)
    if known is None:
        path = getattr(module, "__file__", None)
        known = _local[name] = (
            isinstance(path, str)
            and is_local_code(path)
            and name != "__main__"
            and name.partition(".")[0] != _OWN
        )
    return known


@dataclass(frozen=True)
class _Group:
    """One kind of state: how to read it (None: not in use) and set one of its items.

    ``keyed`` groups are mappings whose keys are separate items (``os.environ['X']``);
    their ``get`` returns a :data:`_Table`, cheap to take and to compare.
    """

    prefix: str
    get: Callable[[], Any]
    set: Callable[[str, Any], None]
    keyed: bool = False
    # keyed groups whose snapshot holds encoded keys and values: (key, value) as the user sees them
    decode: Callable[[Any, Any], tuple[Any, Any]] | None = None
    ignored: frozenset[str] = frozenset()  # keys not tracked
    # taken only for cells that refer to this module (a slow snapshot: only its own
    # API changes it in practice, and the cell or code it reaches then names the module)
    reached: str | None = None
    # keyed groups of a library: its settings as the import leaves them (a cell that imports
    # the library and changes them at once is compared with these)
    pristine: Callable[[], dict[Any, Any]] | None = None


# A mapping, possibly nested, as (keys, values) of each of its dicts, depth first: lists
# copied at C speed, compared by identity (a setting set anew is a new object).
_Table = list[tuple[list[Any], list[Any]]]


def _table(mapping: dict[Any, Any], nested: bool = False) -> _Table:
    parts: _Table = []
    stack = [mapping]
    while stack:
        level = stack.pop()
        values = list(dict.values(level))
        parts.append((list(dict.keys(level)), values))
        if nested:
            stack.extend([value for value in values if type(value) is dict])
    return parts


def _same_table(a: _Table, b: _Table) -> bool:
    return len(a) == len(b) and all(
        keys == other_keys and len(values) == len(other) and all(map(operator.is_, values, other))
        for (keys, values), (other_keys, other) in zip(a, b)
    )


def _flat(table: _Table) -> dict[Any, Any]:
    """The settings of a table, by their (dotted, for nested mappings) names."""
    flat: dict[Any, Any] = {}
    paths = [""]  # a stack like _table's: its top is the path of the next part
    for keys, values in table:
        path = paths.pop()
        for key, value in zip(keys, values):
            if type(value) is dict:
                paths.append(f"{path}{key}.")
            else:
                flat[f"{path}{key}" if path else key] = value
    return flat


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _environ() -> _Table:
    data = getattr(os.environ, "_data", None)  # the encoded dict: no decoding
    return _table(data if isinstance(data, dict) else dict(os.environ))


def _decode_environ(key: Any, value: Any) -> tuple[Any, Any]:
    if not hasattr(os.environ, "decodekey"):
        return key, value
    return os.environ.decodekey(key), value if value is ABSENT else os.environ.decodevalue(value)


def _set_environ(key: str, value: Any) -> None:
    if value is ABSENT:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _warnings() -> list[Any]:
    # the engine shows its own warnings through a filter it adds while it works
    return [entry for entry in warnings.filters if entry[2] is not CacheWarning]


def _set_warnings(_: str, value: Any) -> None:
    # typeshed declares warnings.filters a Sequence: it is a list, replaced in place here
    warnings.filters[:] = value  # type: ignore[index]
    mutated = getattr(warnings, "_filters_mutated", None) or getattr(
        warnings, "_filters_mutated_lock_held", None
    )
    if mutated is not None:
        mutated()


def _locale() -> Any:
    locale = _module("locale")
    return None if locale is None else locale.setlocale(locale.LC_ALL)


def _set_locale(_: str, value: Any) -> None:
    locale = importlib.import_module("locale")
    locale.setlocale(locale.LC_ALL, value)


_DECIMAL = ("prec", "rounding", "Emin", "Emax", "capitals", "clamp")


def _decimal() -> Any:
    decimal = _module("decimal")
    if decimal is None:
        return None
    context = decimal.getcontext()
    return (
        context.prec,
        context.rounding,
        context.Emin,
        context.Emax,
        context.capitals,
        context.clamp,
        tuple(context.traps.values()),
    )


def _set_decimal(_: str, value: Any) -> None:
    decimal = importlib.import_module("decimal")
    context = decimal.getcontext()
    for name, setting in zip(_DECIMAL, value):
        setattr(context, name, setting)
    for trap, on in zip(list(context.traps), value[-1]):
        context.traps[trap] = on


def _numpy(get: str) -> Callable[[], Any]:
    def read() -> Any:
        numpy = _module("numpy")
        return None if numpy is None else getattr(numpy, get)()

    return read


def _set_numpy(setter: str) -> Callable[[str, Any], None]:
    def write(_: str, value: Any) -> None:
        getattr(importlib.import_module("numpy"), setter)(**value)

    return write


def _pandas() -> _Table | None:
    config = _module("pandas._config.config")
    options = getattr(config, "_global_config", None)
    return _table(options, nested=True) if isinstance(options, dict) else None


def _pandas_defaults() -> dict[Any, Any]:
    config = importlib.import_module("pandas._config.config")
    return {key: option.defval for key, option in config._registered_options.items()}


def _rc_defaults() -> dict[Any, Any]:
    return _flat(_table(importlib.import_module("matplotlib").rcParamsOrig))


def _set_pandas(key: str, value: Any) -> None:
    importlib.import_module("pandas").set_option(key, value)


def _rc() -> _Table | None:
    matplotlib = _module("matplotlib")
    params = getattr(matplotlib, "rcParams", None)
    # the raw values (dict's own methods): no validation, no deprecation warnings
    return _table(params) if isinstance(params, dict) else None


def _set_rc(key: str, value: Any) -> None:
    importlib.import_module("matplotlib").rcParams[key] = value


def _set_recursion(_: str, value: Any) -> None:
    sys.setrecursionlimit(value)


def _set_path(_: str, value: Any) -> None:
    sys.path[:] = value


def _set_cwd(_: str, value: Any) -> None:
    os.chdir(value)


CWD = "working directory"  # the item of the working directory

_GROUPS = (
    _Group("sys.path", lambda: list(sys.path), _set_path),
    _Group(CWD, os.getcwd, _set_cwd),
    _Group("os.environ", _environ, _set_environ, keyed=True, decode=_decode_environ),
    _Group("recursion limit", sys.getrecursionlimit, _set_recursion),
    _Group("warnings filters", _warnings, _set_warnings),
    _Group("locale", _locale, _set_locale),
    _Group("decimal context", _decimal, _set_decimal),
    _Group("numpy print options", _numpy("get_printoptions"), _set_numpy("set_printoptions")),
    _Group("numpy error state", _numpy("geterr"), _set_numpy("seterr")),
    _Group(
        "pandas option",
        _pandas,
        _set_pandas,
        keyed=True,
        reached="pandas",
        pristine=_pandas_defaults,
    ),
    # the backend is resolved lazily by matplotlib itself, on the first plot
    _Group(
        "matplotlib.rcParams",
        _rc,
        _set_rc,
        keyed=True,
        ignored=frozenset({"backend"}),
        pristine=_rc_defaults,
    ),
)
_BY_PREFIX = {group.prefix: group for group in _GROUPS}
#: Settings that key every cell, whatever changed them and whenever (also before incrcell
#: was loaded): few, small, the same in every kernel of a project.  The other items key
#: the cells after one that changed them (the path and working directory differ between
#: projects, which may share cells).
SETTINGS = tuple(
    group.prefix for group in _GROUPS if not group.keyed and group.prefix not in ("sys.path", CWD)
)
_ATTRIBUTE = "module attribute "  # prefix of the items that are module attributes
BUILTINS = _ATTRIBUTE + "builtins"  # what precedes ``.name`` in the items of builtins


@dataclass
class Snapshot:
    """The tracked state at one moment (see :func:`snapshot`)."""

    groups: dict[str, Any]
    modules: dict[str, dict[str, Any]]  # module name -> copy of its namespace
    module_table: dict[str, Any]  # a copy of sys.modules
    threads: frozenset[int]  # idents of the live threads
    reach: frozenset[str] = frozenset()  # what it was taken for (see snapshot)


def watched_modules(referenced: Iterable[object]) -> list[str]:
    """Names of the modules whose attributes a snapshot tracks: ``builtins``, the local
    modules imported so far, and the modules among ``referenced``."""
    names = {"builtins"}
    names.update(
        module.__name__
        for module in referenced
        if isinstance(module, types.ModuleType) and module.__name__ in sys.modules
    )
    global _locals
    if _locals[0] != len(sys.modules):  # modules were imported (or removed) since
        _locals = (
            len(sys.modules),
            [name for name, module in list(sys.modules.items()) if is_local_module(name, module)],
        )
    names.update(_locals[1])
    return sorted(names)


def snapshot(
    modules: Iterable[str], reach: frozenset[str] = frozenset(), since: Snapshot | None = None
) -> Snapshot:
    """The tracked state now; ``modules`` from :func:`watched_modules`, ``reach`` the
    modules the cell refers to (for the groups taken only then).

    ``since``: a snapshot after which, the caller knows, no user code has run (the
    previous cell's state after it, when no user code ran between the two cells): its
    settings, module table and threads are taken from it rather than read again, unless a
    module was imported or removed since (an import may change any setting).  Module
    namespaces are always copied anew (cheap): the kernel sets attributes of modules
    around every execution (ipykernel's ``builtins.input`` and ``getpass.getpass``).
    """
    if since is not None and not _same_table_of_modules(since.module_table):
        since = None
    groups = {}
    for group in _GROUPS:
        if group.reached is not None and group.reached not in reach:
            continue
        if since is not None and (group.reached is None or group.reached in since.reach):
            if group.prefix in since.groups:
                groups[group.prefix] = since.groups[group.prefix]
            continue
        try:
            value = group.get()
        except Exception:  # a half-imported or unusual library: nothing to track
            continue
        if value is not None:
            groups[group.prefix] = value
    namespaces = {}
    for name in modules:
        module = sys.modules.get(name)
        if module is not None:
            namespaces[name] = dict(vars(module))
    if since is not None:
        return Snapshot(groups, namespaces, since.module_table, since.threads, reach)
    return Snapshot(
        groups,
        namespaces,
        sys.modules.copy(),
        frozenset(thread.ident for thread in threading.enumerate() if thread.ident is not None),
        reach,
    )


def _same_table_of_modules(table: dict[str, Any]) -> bool:
    """Whether ``sys.modules`` still has the entries of ``table`` (a copy of it): imports
    append, so the same size and the same last name mean nothing was added or removed."""
    return len(table) == len(sys.modules) and (
        not table or next(reversed(table)) == next(reversed(sys.modules))
    )


def _tracked_attribute(module: str, name: str, value: object) -> bool:
    if name.startswith("__") or isinstance(value, types.ModuleType):
        return False  # module machinery, or a submodule bound by an import
    return not name.startswith("_") or module == "builtins" or _local.get(module, False)


def changed(before: Snapshot, after: Snapshot) -> dict[str, tuple[Any, Any]]:
    """``{item: (value before, value after)}`` of every item whose value differs (ABSENT:
    it did not exist)."""
    changes: dict[str, tuple[Any, Any]] = {}
    for prefix, new in after.groups.items():
        # the group's value before the cell; None: its library was not imported yet
        old: Any = before.groups.get(prefix)
        group = _BY_PREFIX[prefix]
        imported = old is None  # the library came in during the cell
        if imported and group.keyed:
            if group.pristine is None:
                continue
            try:
                old = group.pristine()
            except Exception:  # cannot tell what the import alone left: take it all
                old = {}
        elif imported:
            changes[prefix] = (ABSENT, new)
            continue
        elif _same_table(old, new) if group.keyed else same(old, new):
            continue
        if group.keyed:
            old, new = (old if imported else _flat(old)), _flat(new)
            for key in old.keys() | new.keys():
                was, value = old.get(key, ABSENT), new.get(key, ABSENT)
                if key not in group.ignored and not same(was, value):
                    if imported:
                        was = ABSENT  # before the cell, the setting did not exist
                    if group.decode is not None:
                        _, was = group.decode(key, was)
                        key, value = group.decode(key, value)
                    changes[f"{prefix}[{key!r}]"] = (was, value)
        else:
            changes[prefix] = (old, new)
    for module, old in before.modules.items():
        new = after.modules.get(module)
        if new is None or same(old, new):  # C speed: values compare by identity first
            continue
        # the names bound to other objects, found in C: IPython rebinds a few builtins around
        # every cell, and a module has hundreds of names
        rebound = {name for name, _ in bindings(old).items() ^ bindings(new).items()}
        for name in rebound:
            was, value = old.get(name, ABSENT), new.get(name, ABSENT)
            if _tracked_attribute(module, name, value) and not _incrcell_wrapping(was, value):
                changes[f"{_ATTRIBUTE}{module}.{name}"] = (was, value)
    return changes


def bindings(namespace: Mapping[str, Any]) -> dict[str, int]:
    """``name -> id(value)`` of every name in ``namespace``, built in C: comparing two of
    these finds what was bound, rebound or deleted between them without a Python loop
    over names (a module has hundreds; a long session's ``__main__`` thousands)."""
    return dict(zip(namespace.keys(), map(id, namespace.values())))


def _incrcell_wrapping(was: Any, value: Any) -> bool:
    """Whether one of the two is incrcell's wrapper of the other (files.py, nativeio.py
    install them while a cell records): incrcell's doing, not the cell's."""
    return (getattr(value, ORIGINAL, None) is was) or (getattr(was, ORIGINAL, None) is value)


def _users_thread(thread: threading.Thread) -> bool:
    """Whether ``thread`` runs the user's code (a target defined in the notebook or a local
    module, or a Thread subclass of theirs), not a library's worker (matplotlib's, a pool's),
    whose work is the library's own business, as its other internal state is."""
    target = getattr(thread, "_target", None)
    code_of = target if target is not None else type(thread).run
    module = getattr(code_of, "__module__", None) or ""
    return module == "__main__" or is_local_module(module, sys.modules.get(module))


def same(a: Any, b: Any) -> bool:
    """Whether two values of an item are the same (identical or equal; a comparison that
    fails or is element-wise counts as different)."""
    try:
        return a is b or bool(a == b)
    except Exception:  # element-wise or failing comparisons: call them different
        return False


def refusal(before: Snapshot, after: Snapshot) -> Reason | None:
    """Why what a cell did to the interpreter cannot be replayed (None when it can)."""
    old, new = before.module_table.keys(), after.module_table.keys()
    # imports append to sys.modules: the same size and the same last key means nothing was
    # added, hence nothing removed (or only re-imported: ``del sys.modules[m]; import m``)
    if len(old) != len(new) or (old and next(reversed(old)) != next(reversed(new))):
        removed = sorted(old - new)
        if removed:
            return Code.MODULE_REMOVED(module=removed[0])
        added = new - old
        for name in sorted(added):
            module = after.module_table[name]
            # an import leaves modules with a spec; libraries also share private ones
            # between their extensions (Cython's ``_cython_3_3_0``), made again by their import
            if (
                not isinstance(module, types.ModuleType)
                or (
                    getattr(module, "__spec__", None) is None
                    and not name.rpartition(".")[2].startswith("_")
                )
            ) and not _submodule_of_import(name, module, after.module_table, added):
                return Code.MODULE_INSERTED(module=name)
    running = [
        thread
        for thread in threading.enumerate()
        if thread.ident not in before.threads and thread.is_alive() and _users_thread(thread)
    ]
    if running:
        return Code.THREAD_RUNNING(thread=running[0].name)
    return None


def _submodule_of_import(
    name: str, module: object, table: dict[str, Any], added: Container[str]
) -> bool:
    """Whether ``name`` is a submodule an extension made while the cell imported its
    package: the package came in during the cell, by an import (it has a spec), and holds
    the module as its attribute (pybind11's ``def_submodule``, as scipy's
    ``_highspy._core.cb``).  Importing the package makes it again, as a restore does."""
    parent, _, last = name.rpartition(".")
    package = table.get(parent)
    return (
        parent in added
        and getattr(package, "__spec__", None) is not None
        and getattr(package, last, None) is module
    )


def current(item: str, cache: dict[str, Any] | None = None) -> Any:
    """The value of ``item`` (a key of :func:`changed`) now; ABSENT if it does not exist.

    ``cache`` (prefix -> settings) saves reading a keyed group again for its other items.
    """
    if item.startswith(_ATTRIBUTE):
        module, _, name = item[len(_ATTRIBUTE) :].rpartition(".")
        return vars(sys.modules[module]).get(name, ABSENT) if module in sys.modules else ABSENT
    prefix, key = _split(item)
    if prefix == "os.environ":
        return os.environ.get(key, ABSENT)
    group = _BY_PREFIX[prefix]
    cache = {} if cache is None else cache
    if prefix not in cache:
        try:
            value = group.get()
        except Exception:
            value = None
        cache[prefix] = _flat(value) if group.keyed and value is not None else value
    value = cache[prefix]
    if value is None:
        return ABSENT
    return value.get(key, ABSENT) if group.keyed else value


def imported_items(before: Snapshot, after: Snapshot) -> set[str]:
    """The data attributes of the user's own modules imported between ``before`` and ``after``.

    A cell that imports a module and sets its attributes (itself or through the
    module's functions) is not cached (see engine's interpreter refusal), and the
    snapshots cannot tell those attributes from what the import left: they key
    every later cell that reaches the module, as items a cell changed do.
    """
    items: set[str] = set()
    for name in after.module_table.keys() - before.module_table.keys():
        module = after.module_table[name]
        if isinstance(module, types.ModuleType) and is_local_module(name, module):
            items.update(
                f"{_ATTRIBUTE}{name}.{attribute}"
                for attribute, value in list(vars(module).items())
                if _tracked_attribute(name, attribute, value)
                and not isinstance(value, (types.FunctionType, type))
            )
    return items


def reaches(item: str, modules: frozenset[str]) -> bool:
    """Whether code referring to ``modules`` (and the local modules they reach) may read
    ``item``: any code reads process settings and builtins, only code referring to a
    module reads that module's attributes."""
    if not item.startswith(_ATTRIBUTE) or item.startswith(BUILTINS + "."):
        return True
    return item[len(_ATTRIBUTE) :].rpartition(".")[0] in modules


def _split(item: str) -> tuple[str, Any]:
    prefix, bracket, rest = item.partition("[")
    if not bracket:
        return item, None
    return prefix, ast.literal_eval(rest[:-1])


def apply(changes: dict[str, Any]) -> None:
    """Set every item of ``changes`` (from :func:`changed`) to its value.

    Raises OSError (e.g. a working directory that no longer exists) or what a
    library's setter raises; the caller reports it.
    """
    for item, value in changes.items():
        if item.startswith(_ATTRIBUTE):
            module_name, _, name = item[len(_ATTRIBUTE) :].rpartition(".")
            module = sys.modules.get(module_name) or importlib.import_module(module_name)
            if value is ABSENT:
                if hasattr(module, name):
                    delattr(module, name)
            else:
                setattr(module, name, value)
        else:
            prefix, key = _split(item)
            _BY_PREFIX[prefix].set(key, value)
