"""What a cell reads from the world that no variable holds (the clock, entropy,
the network, other processes, the keyboard, the environment, values that name
this process such as ``id()`` or ``os.getpid()``), and changes to process
state that interpreter.py cannot snapshot (``matplotlib.use``,
``logging.basicConfig``, a change inside an object a module holds such as
``helpers.CONFIG["k"] = 0``: a restore could not bring them back).

A cell that calls ``time.time()`` or ``requests.get(url)`` gives another
result each time it runs, and a cell that runs ``subprocess.run(...)`` acts
on the world: replaying its recorded outputs would be a stale result served
as fresh, or a side effect silently skipped.  Such cells are uncacheable by
default, with the reason shown; ``%%incrcell cache`` declares one cacheable
on purpose (a timing printout nobody minds being replayed, say).

Environment variables are different: their values are plain inputs, so a
cell reading ``os.environ["DATA_DIR"]`` or ``os.getenv("N")`` with a literal
name is keyed on those values; reading the environment any other way
(iterating it, a computed name) is an input incrcell cannot pin down and makes
the cell uncacheable.  Setting variables through ``os.environ`` is captured
and replayed by interpreter.py (``os.putenv`` bypasses it: uncacheable).

How calls are recognised: every call in the cell whose callee is a dotted
name (``time.time``, ``dt.now``, ``t``) is resolved to a qualified name,
through the cell's own imports (``import datetime as dt``) and the objects
the namespace binds (``from time import time`` in an earlier cell), and
looked up in the tables below.  The code of earlier cells' functions that the
cell calls, and of the functions of the user's own modules it reaches
(``helpers.stamp()`` calling ``time.time()``, through any chain of local
modules), is checked by the globals and attribute names it uses.  Calls made
inside libraries are not seen: a library function that reads the clock is
not flagged (documented in the README).
"""

from __future__ import annotations

import ast
import builtins
import dis
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .analysis import child_nodes, code_globals, parse_cell
from .interpreter import is_local_module
from .reasons import Code, Reason

# qualified name (or prefix ending in ".") -> the kind of effect (reasons.EFFECTS)
_EFFECTS: dict[str, str] = {
    **{
        f"time.{name}": "clock"
        for name in (
            "time",
            "time_ns",
            "localtime",
            "gmtime",
            "ctime",
            "asctime",
            "strftime",
            "monotonic",
            "monotonic_ns",
            "perf_counter",
            "perf_counter_ns",
            "process_time",
            "process_time_ns",
            "thread_time",
            "thread_time_ns",
        )
    },
    **{
        f"datetime.{name}": "clock"
        for name in ("datetime.now", "datetime.today", "datetime.utcnow", "date.today")
    },
    **{f"pandas.Timestamp.{name}": "clock" for name in ("now", "today", "utcnow")},
    **{
        f"numpy.random.{name}": "entropy"
        for name in ("default_rng()", "SeedSequence()", "Generator()")
    },
    "os.urandom": "entropy",
    "os.getrandom": "entropy",
    "uuid.uuid1": "entropy",
    "uuid.uuid4": "entropy",
    "secrets.": "entropy",
    "random.SystemRandom": "entropy",
    "socket.": "network",
    "urllib.request.": "network",
    "http.client.": "network",
    "requests.": "network",
    "httpx.": "network",
    "aiohttp.": "network",
    "urllib3.": "network",
    "ftplib.": "network",
    "smtplib.": "network",
    "subprocess.": "processes",
    "multiprocessing.": "processes",
    "os.system": "processes",
    "os.popen": "processes",
    "os.fork": "processes",
    "os.kill": "processes",
    **{
        f"os.{name}": "processes"
        for name in (
            "execv",
            "execve",
            "execvp",
            "execvpe",
            "execl",
            "execle",
            "execlp",
            "execlpe",
            "spawnv",
            "spawnve",
            "spawnvp",
            "spawnvpe",
            "spawnl",
            "spawnle",
            "spawnlp",
            "spawnlpe",
            "posix_spawn",
            "posix_spawnp",
        )
    },
    "builtins.input": "keyboard",
    "getpass.getpass": "keyboard",
    "os.putenv": "setenv",
    "os.unsetenv": "setenv",
    **dict.fromkeys(
        (
            "builtins.id",
            "builtins.hash",
            "os.getpid",
            "os.getppid",
            "threading.get_ident",
            "threading.get_native_id",
            "_thread.get_ident",
            "_thread.get_native_id",
        ),
        "process identity",
    ),
    # Settings that interpreter.py does not snapshot (the rest it captures and replays).
    **dict.fromkeys(
        (
            "numpy.seterrcall",
            "matplotlib.use",
            "logging.basicConfig",
            "torch.set_default_dtype",
            "torch.set_num_threads",
            "torch.set_printoptions",
        ),
        "settings",
    ),
}
# Modules whose every use counts (by the prefixes above), and the attribute
# names through which code in earlier cells' functions reaches the others.
_EFFECT_MODULES = {prefix[:-1] for prefix in _EFFECTS if prefix.endswith(".")}
_EFFECT_ATTRIBUTES = {
    name.rsplit(".", 1)[1].rstrip("()"): kind
    for name, kind in _EFFECTS.items()
    if not name.endswith(".")
    and name.split(".")[0] in {"time", "datetime", "os", "uuid", "threading"}
}
_ENV_READS = ("os.getenv", "os.environ.get")
# Mappings held by modules whose items interpreter.py snapshots: stores into them are captured.
_SNAPSHOTTED = frozenset({"environ", "rcParams"})


@dataclass(frozen=True)
class Effects:
    """The world a cell touches: ``reason`` (None if none), the environment variables it
    reads, and the modules it or the code it reaches refers to or stores attributes on
    (their attributes are tracked by interpreter.py; ``stores``: those it sets itself)."""

    reason: Reason | None = None
    environment: frozenset[str] = frozenset()
    modules: tuple[types.ModuleType, ...] = ()
    stores: frozenset[str] = frozenset()
    # the modules the code of notebook and local functions it reaches refers to: the code
    # that may set their attributes (the cell's own stores are ``stores``)
    referenced: tuple[types.ModuleType, ...] = ()
    # calls through the cell's own imports of modules not imported yet (see late_effects)
    unresolved: tuple[str, ...] = ()


def find_effects(
    source: str,
    namespace: Mapping[str, object],
    reached: Iterable[types.CodeType] = (),
    roots: Iterable[object] = (),
) -> Effects:
    """Effects of running ``source`` (IPython-transformed, parseable) in ``namespace``.

    ``reached`` are the code objects of the earlier cells' functions the cell
    may call (analysis.expand_through_callables), ``roots`` the values of the
    names the cell and those functions read: the functions of the user's own
    modules they reach, and those the cell calls through its own imports
    (``import helpers; helpers.run()``), are followed too (:func:`local_code`).
    """
    finder = _CallFinder(namespace)
    finder.visit(parse_cell(source))
    codes = [(code, namespace) for code in reached]
    modules: dict[int, types.ModuleType] = {}
    codes += local_code([*roots, *finder.called], modules)
    referenced: dict[int, types.ModuleType] = {}
    reason = _reached_effects(codes, referenced) or finder.reason
    return Effects(
        reason,
        frozenset(finder.environment),
        tuple({**modules, **referenced}.values()),
        frozenset(finder.stores),
        tuple(referenced.values()),
        tuple(finder.unresolved),
    )


def late_effects(unresolved: Iterable[str]) -> Reason | None:
    """The effects of the calls ``Effects.unresolved`` names, once the cell imported their
    modules (None if none): ``import clock; t = clock.stamp()`` on a fresh kernel."""
    objects = [_resolve(name) for name in unresolved]
    return _reached_effects(local_code(objects, {}), {})


# Bytecodes that bind or unbind a module global from inside a function (``global LEVEL``).
_GLOBAL_STORES = frozenset({dis.opmap["STORE_GLOBAL"], dis.opmap["DELETE_GLOBAL"]})


def late_global_stores(unresolved: Iterable[str]) -> str:
    """The first function reached by the calls ``Effects.unresolved`` names that sets a
    global of its module ('' if none), once the cell imported their modules.

    Such a module was first imported by the cell itself: interpreter.py cannot tell
    what its import alone left from what the call changed (``import helpers;
    helpers.configure(0)``), so a restore could not bring the change back.
    """
    objects = [_resolve(name) for name in unresolved]
    for code, namespace in local_code(objects, {}):
        # every instruction is two bytes (opcode, argument), inline caches included
        if not _GLOBAL_STORES.isdisjoint(code.co_code[::2]):
            # co_qualname is new in Python 3.11
            name = getattr(code, "co_qualname", code.co_name)
            return f"{namespace.get('__name__', '?')}.{name}"
    return ""


def local_code(
    roots: Iterable[object], modules: dict[int, types.ModuleType]
) -> list[tuple[types.CodeType, Mapping[str, object]]]:
    """(code, globals) of the functions of the user's own modules reachable from ``roots``.

    Follows local modules (their functions and classes), functions defined in
    them (the globals they load, their closures) and classes (their methods),
    transitively; library code is not followed.  ``modules`` collects every
    module met on the way (local or not).
    """
    found: list[tuple[types.CodeType, Mapping[str, object]]] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.ModuleType):
            modules[id(obj)] = obj
            if is_local_module(obj.__name__, obj):
                stack.extend(
                    v
                    for v in list(vars(obj).values())
                    if isinstance(v, (types.FunctionType, type, types.ModuleType))
                )
            continue
        module_name = getattr(obj, "__module__", None)
        if not isinstance(module_name, str) or module_name == "__main__":
            continue
        module = sys.modules.get(module_name)
        if module is None or not is_local_module(module_name, module):
            continue
        modules[id(module)] = module  # its code reads that module's attributes
        if isinstance(obj, types.FunctionType):
            found.append((obj.__code__, obj.__globals__))
            stack.extend(obj.__globals__.get(name) for name in code_globals(obj.__code__)[0])
            stack.extend(cell.cell_contents for cell in obj.__closure__ or () if _filled(cell))
        elif isinstance(obj, type):
            stack.extend(getattr(v, "__func__", v) for v in list(vars(obj).values()))
            stack.extend(v.fget for v in list(vars(obj).values()) if isinstance(v, property))
    return found


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _resolve(qualified: str) -> object:
    """The object an imported dotted name stands for (None if it cannot be told without
    running code: only module and class dictionaries are looked in)."""
    parts = qualified.split(".")
    for end in range(len(parts), 0, -1):
        obj: object = sys.modules.get(".".join(parts[:end]))
        if obj is not None:
            for attribute in parts[end:]:
                obj = vars(obj).get(attribute) if hasattr(obj, "__dict__") else None
            return obj
    return None


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (reading an empty cell raises ValueError)
    except ValueError:
        return False
    return True


def _effect_module(obj: object) -> bool:
    return isinstance(obj, types.ModuleType) and obj.__name__.partition(".")[0] in _EFFECT_MODULES


def _qualify_object(obj: object) -> str | None:
    """``module.qualname`` of a function, class or module; None for other objects."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, types.BuiltinFunctionType) and obj.__self__ is builtins:
        return f"builtins.{obj.__name__}"
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and callable(obj):
        if module in ("posix", "nt"):
            module = "os"
        elif module.startswith("pandas.") and qualname == "Timestamp":
            module = "pandas"
        return f"{module}.{qualname}"
    return None


def _lookup(qualified: str, called_without_arguments: bool) -> str:
    if called_without_arguments and f"{qualified}()" in _EFFECTS:
        return _EFFECTS[f"{qualified}()"]
    if qualified in _EFFECTS:
        return _EFFECTS[qualified]
    for prefix in (qualified[: i + 1] for i, c in enumerate(qualified) if c == "."):
        if prefix in _EFFECTS:
            return _EFFECTS[prefix]
    return ""


def _reached_effects(
    codes: Iterable[tuple[types.CodeType, Mapping[str, object]]],
    modules: dict[int, types.ModuleType],
) -> Reason | None:
    """What the code of earlier cells' and local modules' functions does, judged by the
    names it uses (each code with its own globals); notes the modules it refers to."""
    reason = None
    for code, namespace in codes:
        names = set(code.co_names)
        for name in sorted(names):
            obj = namespace.get(name)
            if isinstance(obj, types.ModuleType):
                modules[id(obj)] = obj
            qualified = _qualify_object(obj)
            if qualified is None or reason:
                continue
            if _effect_module(obj):
                reason = Code.EFFECT_CALLED(
                    function=code.co_name, kind=_lookup(qualified + ".", False)
                )
            elif isinstance(obj, types.ModuleType):
                hits = sorted(names & _EFFECT_ATTRIBUTES.keys())
                if hits:
                    reason = Code.EFFECT_CALLED(
                        function=code.co_name, kind=_EFFECT_ATTRIBUTES[hits[0]]
                    )
            elif _lookup(qualified, False):
                reason = Code.EFFECT_CALLED(function=code.co_name, kind=_lookup(qualified, False))
        if reason:
            continue
        for name in sorted(code_globals(code)[0]):
            if name not in namespace and _lookup(f"builtins.{name}", False):
                reason = Code.EFFECT_CALLED(
                    function=code.co_name, kind=_lookup(f"builtins.{name}", False)
                )
                break
        else:
            if "environ" in names or "getenv" in names:
                reason = Code.EFFECT_CALLED(function=code.co_name, kind="environment")
    return reason


class _CallFinder(ast.NodeVisitor):
    """Resolves the cell's calls and environment accesses (see the module docstring)."""

    def __init__(self, namespace: Mapping[str, object]) -> None:
        self.namespace = namespace
        self.aliases: dict[str, str] = {}  # names the cell's own imports bind -> qualified
        self.reason: Reason | None = None
        self.environment: set[str] = set()
        self.stores: set[str] = set()  # modules whose attributes the cell sets
        self.called: list[object] = []  # what calls through the cell's own imports resolve to
        self.unresolved: list[str] = []  # such calls into modules not imported yet

    def visit(self, node: ast.AST) -> None:
        """NodeVisitor's visit, with each node class's ``visit_`` method looked up once, not
        by name for every node (the cell's whole tree is visited for every cell)."""
        cls = type(node)
        try:
            method = _VISITS[cls]
        except KeyError:  # a node class not met yet: its method, or generic_visit
            method = _VISITS[cls] = vars(_CallFinder).get(f"visit_{cls.__name__}")
        if method is None:
            self.generic_visit(node)
        else:
            method(self, node)

    def generic_visit(self, node: ast.AST) -> None:
        """NodeVisitor's generic_visit: every child node, in field order."""
        for child in child_nodes(node):
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.partition(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def qualify(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        root = self.aliases.get(node.id)
        if root is None:
            if node.id in self.namespace:
                root = _qualify_object(self.namespace[node.id])
            elif hasattr(builtins, node.id):
                root = f"builtins.{node.id}"
        if root is None:
            return None
        return ".".join([root, *reversed(parts)])

    def visit_Call(self, node: ast.Call) -> None:
        qualified = self.qualify(node.func)
        if qualified is not None and _root(node.func) in self.aliases:
            resolved = _resolve(qualified)
            if resolved is None:  # its module is not imported yet: look again once it ran
                self.unresolved.append(qualified)
            self.called.append(resolved)
        if qualified is not None:
            if qualified in _ENV_READS:
                self._environment(node.args[0] if node.args else None)
            else:
                self._flag(qualified, not node.args and not node.keywords)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign | ast.AugAssign | ast.Delete) -> None:
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for target in targets:
            self._store(target)
        self.generic_visit(node)

    visit_AugAssign = visit_Delete = visit_Assign

    def _store(self, target: ast.expr) -> None:
        """``helpers.LEVEL = 0`` (noted in ``stores``: interpreter.py captures it), or
        ``helpers.CONFIG["k"] = 0``: a change inside an object a module holds, which
        nothing snapshots (``rcParams`` and ``os.environ`` aside: they are)."""
        if isinstance(target, (ast.Tuple, ast.List, ast.Starred)):
            for element in getattr(target, "elts", [getattr(target, "value", None)]):
                if element is not None:
                    self._store(element)
            return
        if not isinstance(target, (ast.Attribute, ast.Subscript)):
            return
        node = target.value
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        if not isinstance(node, ast.Name):
            return
        obj = self.namespace.get(node.id)
        module = self.aliases.get(node.id) or (
            obj.__name__ if isinstance(obj, types.ModuleType) else None
        )
        if module is None:
            return
        if isinstance(target, ast.Attribute) and target.value is node:
            self.stores.add(module)
        else:
            holder = (self.qualify(target.value) or "").rpartition(".")[2]
            if holder not in _SNAPSHOTTED and not self.reason:
                self.reason = Code.MODULE_OBJECT_CHANGED(module=module)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self.qualify(node.value) == "os.environ":
            if isinstance(node.ctx, ast.Load):
                self._environment(node.slice)
            self.visit(node.slice)
            return
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        qualified = self.qualify(node)
        if qualified == "os.environ":
            self._whole_environment()  # os.environ used otherwise than by a literal key
        elif qualified is not None and qualified.startswith("os.environ."):
            # setting variables is captured by interpreter.py; reading them otherwise
            # than by a literal name is an input nobody can key
            if node.attr not in ("get", "update", "setdefault", "pop", "clear", "popitem"):
                self._whole_environment()
            return
        else:
            self.generic_visit(node)

    def _environment(self, key: ast.expr | None) -> None:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            self.environment.add(key.value)
        else:
            self._whole_environment()

    def _whole_environment(self) -> None:
        if not self.reason:
            self.reason = Code.ENVIRONMENT_DYNAMIC()

    def _flag(self, qualified: str, without_arguments: bool) -> None:
        effect = _lookup(qualified, without_arguments)
        if effect and not self.reason:
            self.reason = Code.EFFECT(kind=effect, call=qualified)


# node class -> the _CallFinder method visiting it (None: generic_visit)
_VISITS: dict[type, Callable[[_CallFinder, Any], None] | None] = {}
