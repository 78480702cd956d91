"""Which global names a notebook cell reads, writes and mutates.

A cell is cached under the content of its source and of every global it may
read, so a read missed here is a stale result later.  Every approximation in
this module therefore errs on the side of *more* dependencies:

* Static analysis (:func:`analyse_cell`) walks the cell's AST in statement
  order.  A name is a read unless it is *definitely* bound earlier in the cell.
  After a compound statement only what every normally-completing path binds is
  definite: ``if``/``else`` and ``try``/``except`` keep what all their branches
  bind; loop, ``with`` (a context manager may swallow an exception) and
  ``match`` bodies never count.  A walrus binds only after its statement.
* Function bodies are deferred: their global reads, ``global`` writes and
  mutations are added to the cell when the function's name is loaded anywhere
  in the cell (transitively through other definitions of the cell), or at once
  if the function is decorated.  Classes gather their methods the same way and
  are pulled in at once when they have decorators, bases or keywords (which may
  call methods while the class is created).  Lambda bodies count immediately.
* Runtime expansion (:func:`expand_through_callables`) follows the functions,
  classes, instances, closures and wrappers that the read names are bound to,
  because calling a function from an earlier cell reads whatever *it* reads.

No IPython here: the input is already-transformed Python source.
"""

from __future__ import annotations

import abc
import ast
import builtins
import contextlib
import dis
import functools
import inspect
import operator
import sys
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .reasons import Code, Reason

DYNAMIC_BUILTINS = frozenset(
    {"globals", "locals", "vars", "exec", "eval", "__import__", "setattr", "delattr", "getattr"}
)

_Deferred = Mapping[str, tuple[frozenset[str], frozenset[str]]]


@dataclass(frozen=True)
class CellAnalysis:
    """Conservative summary of the global names a cell touches.

    ``reads``: globals the cell may read before binding them itself.
    ``writes``: globals it may bind or unbind.  ``imports``: absolute module
    names it imports (also inside its functions).  ``calls_dynamic``: the
    DYNAMIC_BUILTINS it references (any load, not only calls) plus ``"*"``
    for a star import.  ``mutates`` holds names whose *pre-cell* object may be changed in place (it
    is a subset of ``reads``); it is a hint, not a complete list: ``f(x)`` or an
    alias may mutate too, so the engine must still compare hashes at runtime.
    ``deferred`` maps each function/class the cell defines to the (reads,
    writes) of its deferred bodies, closed over the cell's other definitions;
    pass it to :func:`expand_through_callables` so a cell-defined function
    reached through an earlier cell's function (``run()`` calling global ``f``)
    still contributes its reads.  ``unbinds``: names the cell may ``del``
    without having bound them first: whether they exist decides whether the
    cell raises NameError, so their existence is an input.
    """

    reads: frozenset[str]
    writes: frozenset[str]
    mutates: frozenset[str]
    imports: frozenset[str]
    calls_dynamic: frozenset[str]
    deferred: _Deferred = field(default_factory=lambda: types.MappingProxyType({}), hash=False)
    unbinds: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- scopes


class _Effects:
    """Global effects of deferred code (function bodies, a class's methods).

    It is the global namespace as seen from that code: flow-insensitive, so
    every global load is a read.  ``eager`` marks code that runs at definition
    time (decorated functions, classes with bases/keywords/decorators).
    """

    deferred = True

    def __init__(self) -> None:
        self.root = self
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.mutates: set[str] = set()
        self.eager = False

    def load(self, name: str) -> None:
        self.reads.add(name)

    def mutate(self, name: str) -> None:
        self.reads.add(name)
        self.mutates.add(name)

    def store(self, name: str, definite: bool = True) -> None:
        self.writes.add(name)

    delete = store


class _Cell:
    """The cell's own (global) scope: flow-sensitive via ``bound``."""

    deferred = False

    def __init__(self, def_names: set[str]) -> None:
        self.root = self
        self.bound: set[str] = set()  # names definitely bound by the cell so far
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.mutates: set[str] = set()
        self.imports: set[str] = set()
        self.dynamic: set[str] = set()
        self.unbinds: set[str] = set()  # names deleted that the cell had not bound itself
        self.def_names = def_names  # every def/class name in the source
        self.registry: dict[str, list[_Effects]] = {}  # top-level def/class -> effects
        # loads of (possibly) defined names, or eager definitions, with the
        # names bound at that point; resolved once all definitions are known.
        self.uses: list[tuple[str | _Effects, frozenset[str]]] = []

    def _read(self, name: str) -> None:
        self.reads.add(name)
        if name in DYNAMIC_BUILTINS:
            self.dynamic.add(name)

    def load(self, name: str) -> None:
        if name in self.def_names:
            self.uses.append((name, frozenset(self.bound)))
        if name not in self.bound:
            self._read(name)

    def mutate(self, name: str) -> None:
        # An object the cell bound itself is covered by ``writes``.
        if name not in self.bound:
            self._read(name)
            self.mutates.add(name)

    def store(self, name: str, definite: bool = True) -> None:
        self.writes.add(name)
        if definite:
            self.bound.add(name)

    def delete(self, name: str) -> None:
        if name not in self.bound:
            self.unbinds.add(name)
        self.writes.add(name)
        self.bound.discard(name)

    def walrus(self, name: str) -> None:
        self.store(name, definite=False)

    def closure(self, effects: Iterable[_Effects]) -> tuple[set[str], set[str], set[str]]:
        """Union of ``effects`` and of every cell definition they load, transitively."""
        reads: set[str] = set()
        writes: set[str] = set()
        mutates: set[str] = set()
        stack, seen = list(effects), set()
        while stack:
            eff = stack.pop()
            if id(eff) not in seen:
                seen.add(id(eff))
                reads |= eff.reads
                writes |= eff.writes
                mutates |= eff.mutates
                for name in eff.reads:
                    stack.extend(self.registry.get(name, ()))
        return reads, writes, mutates

    def summary(self) -> CellAnalysis:
        """Pull in the deferred code of every used definition and freeze the result."""
        for used, bound in self.uses:
            reads, writes, mutates = self.closure(
                self.registry.get(used, ()) if isinstance(used, str) else [used]
            )
            for name in reads - bound:
                self._read(name)
            self.mutates |= mutates - bound
            self.writes |= writes
        deferred = {}
        for name, effects in self.registry.items():
            reads, writes, _ = self.closure(effects)
            deferred[name] = (frozenset(reads), frozenset(writes))
        return CellAnalysis(
            reads=frozenset(self.reads),
            writes=frozenset(self.writes),
            mutates=frozenset(self.mutates),
            imports=frozenset(self.imports),
            calls_dynamic=frozenset(self.dynamic),
            deferred=types.MappingProxyType(deferred),
            unbinds=frozenset(self.unbinds),
        )


class _Nested(abc.ABC):
    """Shared name resolution of class, function and comprehension scopes."""

    parent: _Scope
    root: _Cell | _Effects
    deferred: bool  # inside a function body (effects go to an _Effects root)?
    bound: set[str]  # names definitely bound so far (only class bodies are flow-sensitive)

    @abc.abstractmethod
    def _resolve(self, name: str) -> _Scope | None:
        """The scope a non-local ``name`` is looked up in, or None if it is local here."""

    @abc.abstractmethod
    def store(self, name: str, definite: bool = True) -> None:
        """Bind ``name`` in this scope (``definite``: on every path from here on)."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Unbind ``name`` in this scope."""

    def load(self, name: str) -> None:
        target = self._resolve(name)
        if target is not None:
            target.load(name)

    def mutate(self, name: str) -> None:
        target = self._resolve(name)
        if target is not None:
            target.mutate(name)

    def walrus(self, name: str) -> None:
        self.store(name, definite=False)


@typing.overload
def _skip_classes(scope: _Body) -> _Body: ...
@typing.overload
def _skip_classes(scope: _Scope) -> _Scope: ...
def _skip_classes(scope: _Scope) -> _Scope:
    """Function and comprehension bodies do not see names bound in a class body."""
    while isinstance(scope, _Class):
        scope = scope.parent
    return scope


class _Class(_Nested):
    """A class body: runs immediately, flow-sensitive, binds class-local names."""

    parent: _Body

    def __init__(self, parent: _Body, body: list[ast.stmt]) -> None:
        self.parent, self.root, self.deferred = parent, parent.root, parent.deferred
        self.locals, self.globals, _ = _scope_names(body)
        self.bound: set[str] = set()

    def _resolve(self, name: str) -> _Scope | None:
        if name in self.bound:
            return None
        # A class-local name not yet bound is looked up with LOAD_NAME, which
        # falls back to the globals (skipping enclosing functions).
        return self.root if name in self.locals or name in self.globals else self.parent

    def store(self, name: str, definite: bool = True) -> None:
        if name in self.globals:
            self.root.store(name, definite)
        elif definite:
            self.bound.add(name)

    def delete(self, name: str) -> None:
        if name in self.globals:
            self.root.delete(name)
        self.bound.discard(name)


class _Function(_Nested):
    """A def or lambda body: flow-insensitive, Python's local/global/nonlocal rules."""

    def __init__(
        self, parent: _Scope, args: ast.arguments, body: Sequence[ast.AST], deferred: bool
    ) -> None:
        self.parent, self.root, self.deferred = _skip_classes(parent), parent.root, deferred
        bound, self.globals, self.nonlocals = _scope_names(body)
        params = {
            a.arg
            for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
            if a
        }
        self.locals = (bound | params) - self.globals - self.nonlocals
        self.bound: set[str] = set()  # unused: no flow-sensitivity inside functions

    def _resolve(self, name: str) -> _Scope | None:
        if name in self.globals:
            return self.root
        return None if name in self.locals or name in self.nonlocals else self.parent

    def store(self, name: str, definite: bool = True) -> None:
        if name in self.globals:
            self.root.store(name, definite)

    def delete(self, name: str) -> None:
        if name in self.globals:
            self.root.delete(name)


class _Comprehension(_Nested):
    """A comprehension: its targets are local, a walrus binds in the enclosing scope."""

    parent: _Body  # a comprehension is only ever walked inside a body

    def __init__(self, parent: _Body, generators: list[ast.comprehension]) -> None:
        self.parent = _skip_classes(parent)
        self.root, self.deferred = parent.root, parent.deferred
        self.bound: set[str] = set()  # unused: a comprehension holds no statements
        self.locals = {
            n.id
            for g in generators
            for n in ast.walk(g.target)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }

    def _resolve(self, name: str) -> _Scope | None:
        return None if name in self.locals else self.parent

    def store(self, name: str, definite: bool = True) -> None:
        pass  # comprehension targets do not leak

    delete = store  # unreachable: a comprehension holds no ``del``

    def walrus(self, name: str) -> None:
        self.parent.walrus(name)


_Scope: TypeAlias = "_Cell | _Effects | _Class | _Function | _Comprehension"
# The scopes the walker runs code in (an _Effects only collects the effects of one).
_Body: TypeAlias = "_Cell | _Class | _Function | _Comprehension"


def _walrus_targets(node: ast.AST) -> Iterator[str]:
    """Walrus targets inside a comprehension (they bind outside it), not in lambdas."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.NamedExpr):
            yield child.target.id
        if not isinstance(child, ast.Lambda):
            yield from _walrus_targets(child)


def _scope_names(body: Sequence[ast.AST]) -> tuple[set[str], set[str], set[str]]:
    """(bound, declared global, declared nonlocal) names of one scope's code."""
    bound: set[str] = set()
    globals_: set[str] = set()
    nonlocals: set[str] = set()
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)  # the body is another scope; what runs here:
            stack.extend(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                stack.extend([*node.bases, *node.keywords])
            else:
                stack.extend([node.args] + ([node.returns] if node.returns else []))
        elif isinstance(node, ast.Lambda):
            stack.append(node.args)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            stack.append(node.generators[0].iter)
            bound.update(_walrus_targets(node))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update(a.asname or a.name.partition(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.Global):
            globals_.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            nonlocals.update(node.names)
        else:
            if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
                bound.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                bound.add(node.rest)
            stack.extend(ast.iter_child_nodes(node))
    return bound, globals_, nonlocals


def _root_name(node: ast.expr) -> str | None:
    """The name an attribute/subscript/call chain starts from: ``x`` in ``x.a[0].f().g``."""
    while True:
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred, ast.NamedExpr, ast.Await)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return node.id if isinstance(node, ast.Name) else None


# --------------------------------------------------------------------------- walker


class _Walker:
    """Visits statements in execution order, feeding names to the current scope."""

    def __init__(self, cell: _Cell) -> None:
        self.cell = cell
        self.scope: _Body = cell
        self.owner: _Effects | None = None  # effects of the top-level class being defined
        self.definite = True  # is the current expression evaluated unconditionally?
        self.pending: list[tuple[_Body, str]] = []  # walrus bindings of this statement

    @contextlib.contextmanager
    def _in(self, scope: _Body, definite: bool) -> Iterator[None]:
        saved = self.scope, self.definite
        self.scope, self.definite = scope, definite
        try:
            yield
        finally:
            self.scope, self.definite = saved

    def run(self, body: list[ast.stmt]) -> None:
        for node in body:
            cls = type(node)
            (_STATEMENTS.get(cls) or _handler(_STATEMENTS, "s_", cls))(self, node)
            self.flush()

    def flush(self) -> None:
        for scope, name in self.pending:
            scope.store(name)
        self.pending.clear()

    def _branch(self, body: list[ast.stmt], start: set[str]) -> set[str]:
        self.scope.bound = set(start)
        self.run(body)
        return self.scope.bound

    # ---------------------------------------------------------------- targets

    def target(self, node: ast.expr, delete: bool = False) -> None:
        if isinstance(node, ast.Name):
            (self.scope.delete if delete else self.scope.store)(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                self.target(elt, delete)
        elif isinstance(node, ast.Starred):
            self.target(node.value, delete)
        else:  # Attribute / Subscript: the object is changed in place
            self.expr(node)
            root = _root_name(node)
            if root is not None:
                self.scope.mutate(root)

    # ------------------------------------------------------------- statements

    def s_generic(self, node: ast.stmt) -> None:
        # Return/Raise/Assert/Global/... and unknown (future) statements:
        # every load is a read, nothing they bind is definite afterwards.
        pre = set(self.scope.bound)
        for child in child_nodes(node):
            if isinstance(child, ast.stmt):
                self.run([child])
            else:
                self.expr(child)
        self.scope.bound &= pre

    def s_Expr(self, node: ast.Expr) -> None:
        self.expr(node.value)

    def s_Assign(self, node: ast.Assign) -> None:
        self.expr(node.value)
        for target in node.targets:
            self.target(target)

    def s_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            # In-place operators (list +=) also change the pre-cell object.
            self.scope.load(node.target.id)
            self.scope.mutate(node.target.id)
            self.expr(node.value)
            self.scope.store(node.target.id)
        else:
            self.target(node.target)
            self.expr(node.value)

    def s_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.expr(node.annotation)  # evaluated at module and class level
        if node.value is not None:
            self.expr(node.value)
            self.target(node.target)
        elif not isinstance(node.target, ast.Name):
            self.expr(node.target)  # `x.a: int` evaluates x, stores nothing
        if node.simple and self.scope is self.cell:
            # Module-level annotations are recorded in (and may create) __annotations__.
            self.cell.mutate("__annotations__")
            self.cell.store("__annotations__", definite=False)

    def s_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self.target(target, delete=True)

    def s_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.cell.imports.add(alias.name)
            self.scope.store(alias.asname or alias.name.partition(".")[0])

    def s_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.cell.imports.add(node.module)
        for alias in node.names:
            if alias.name == "*":
                self.cell.dynamic.add("*")
            else:
                self.scope.store(alias.asname or alias.name)

    def _signature(self, args: ast.arguments, returns: ast.expr | None = None) -> None:
        """Defaults and annotations: evaluated when the def/lambda runs."""
        for default in (*args.defaults, *args.kw_defaults):
            self.expr(default)
        for arg in (*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg):
            if arg is not None:
                self.expr(arg.annotation)
        self.expr(returns)

    def _define(self, eager: bool) -> _Effects | None:
        """Effects that collect a top-level definition's deferred code
        (None when nested in a function)."""
        if self.scope.deferred:
            return None
        effects = self.owner or _Effects()
        effects.eager |= eager
        return effects

    def _register(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, effects: _Effects | None
    ) -> None:
        self.scope.store(node.name)
        if effects is not None and self.owner is None:
            self.cell.registry.setdefault(node.name, []).append(effects)
            if effects.eager:
                self.cell.uses.append((effects, frozenset(self.cell.bound)))

    def s_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.expr(decorator)
        self._signature(node.args, node.returns)
        effects = self._define(eager=bool(node.decorator_list))
        scope = _Function(effects or self.scope, node.args, node.body, deferred=True)
        with self._in(scope, definite=True):
            self.run(node.body)
        self._register(node, effects)

    s_AsyncFunctionDef = s_FunctionDef

    def s_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *node.keywords):
            self.expr(expr)
        effects = self._define(eager=bool(node.decorator_list or node.bases or node.keywords))
        saved, self.owner = self.owner, effects
        try:
            with self._in(_Class(self.scope, node.body), definite=True):
                self.run(node.body)
        finally:
            self.owner = saved
        self._register(node, effects)

    def s_If(self, node: ast.If) -> None:
        self.expr(node.test)
        self.flush()
        pre = set(self.scope.bound)
        body = self._branch(node.body, pre)
        self.scope.bound = body & self._branch(node.orelse, pre)

    def s_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.expr(node.iter)
        self.flush()
        pre = set(self.scope.bound)
        self.scope.bound = set(pre)
        self.target(node.target)
        self.run(node.body)
        body = pre & self.scope.bound
        self.scope.bound = body & self._branch(node.orelse, body)

    s_AsyncFor = s_For

    def s_While(self, node: ast.While) -> None:
        self.expr(node.test)
        self.flush()
        pre = set(self.scope.bound)
        body = pre & self._branch(node.body, pre)
        self.scope.bound = body & self._branch(node.orelse, body)

    def s_With(self, node: ast.With | ast.AsyncWith) -> None:
        # A context manager may suppress an exception: nothing is definite after.
        pre = set(self.scope.bound)
        for item in node.items:
            self.expr(item.context_expr)
            self.flush()
            if item.optional_vars is not None:
                self.target(item.optional_vars)
        self.run(node.body)
        self.scope.bound &= pre

    s_AsyncWith = s_With

    def s_Try(self, node: ast.Try) -> None:
        pre = set(self.scope.bound)
        body = self._branch(node.body, pre)
        outcomes = [self._branch(node.orelse, body)]
        for handler in node.handlers:
            self.scope.bound = pre & body
            self.expr(handler.type)
            self.flush()
            if handler.name:
                self.scope.store(handler.name)
            self.run(handler.body)
            if handler.name:
                self.scope.delete(handler.name)  # Python unbinds it after the handler
            outcomes.append(self.scope.bound)
        after = set.intersection(*outcomes)
        # `finally` may also run after a partial body (and swallow the error
        # with break/continue), so it starts from what is bound on every path.
        self.scope.bound = (
            self._branch(node.finalbody, pre & body & after) if node.finalbody else after
        )

    s_TryStar = s_Try

    def s_Match(self, node: ast.Match) -> None:
        self.expr(node.subject)
        self.flush()
        pre = set(self.scope.bound)
        outcomes = [pre]
        for case in node.cases:
            self.scope.bound = set(pre)
            self.pattern(case.pattern)
            self.expr(case.guard)
            self.flush()
            self.run(case.body)
            outcomes.append(self.scope.bound)
        self.scope.bound = set.intersection(*outcomes)

    def pattern(self, node: ast.pattern) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.pattern):
                self.pattern(child)
            else:
                self.expr(child)  # value patterns, class names, mapping keys
        name = getattr(node, "rest" if isinstance(node, ast.MatchMapping) else "name", None)
        if name:
            self.scope.store(name)

    # ------------------------------------------------------------ expressions

    def expr(self, node: ast.AST | None) -> None:
        if node is not None:
            cls = type(node)
            (_EXPRESSIONS.get(cls) or _handler(_EXPRESSIONS, "e_", cls))(self, node)

    def e_generic(self, node: ast.AST) -> None:
        for child in child_nodes(node):
            self.expr(child)

    def e_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.scope.load(node.id)
        elif isinstance(node.ctx, ast.Store):  # only reached from s_generic
            self.scope.store(node.id, definite=False)
        else:
            self.scope.delete(node.id)

    def e_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.expr(node.value)
        self.scope.walrus(node.target.id)
        if self.definite:
            self.pending.append((self.scope, node.target.id))

    def _conditionally(self, nodes: Iterable[ast.expr]) -> None:
        with self._in(self.scope, definite=False):
            for node in nodes:
                self.expr(node)

    def e_BoolOp(self, node: ast.BoolOp) -> None:
        self.expr(node.values[0])
        self._conditionally(node.values[1:])

    def e_IfExp(self, node: ast.IfExp) -> None:
        self.expr(node.test)
        self._conditionally([node.body, node.orelse])

    def e_Compare(self, node: ast.Compare) -> None:
        self.expr(node.left)
        self.expr(node.comparators[0])
        self._conditionally(node.comparators[1:])  # chains short-circuit

    def e_Call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name):  # x.append(1), x[0].f(), x.a.b()
            root = _root_name(node.func)
            if root is not None:
                self.scope.mutate(root)
        self.e_generic(node)

    def e_Lambda(self, node: ast.Lambda) -> None:
        self._signature(node.args)
        # Not deferred: free names of a lambda count as reads right away.
        scope = _Function(self.scope, node.args, [node.body], deferred=self.scope.deferred)
        with self._in(scope, definite=False):
            self.expr(node.body)

    def _comprehension(self, generators: list[ast.comprehension], elts: list[ast.expr]) -> None:
        self.expr(generators[0].iter)  # evaluated in the enclosing scope
        with self._in(_Comprehension(self.scope, generators), definite=False):
            for i, gen in enumerate(generators):
                if i:
                    self.expr(gen.iter)
                self.target(gen.target)
                for cond in gen.ifs:
                    self.expr(cond)
            for elt in elts:
                self.expr(elt)

    def e_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self._comprehension(node.generators, [node.elt])

    e_SetComp = e_GeneratorExp = e_ListComp

    def e_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node.generators, [node.key, node.value])


@functools.lru_cache(maxsize=512)
def parse_cell(source: str) -> ast.Module:
    """The AST of a cell, top-level ``await`` allowed as in IPython; raises SyntaxError
    (or ValueError, RecursionError) for code that does not parse.

    Cached: the engine parses each cell for its key, its analysis and its effects,
    and Run All parses the same cells again.  Callers must not modify the tree.
    """
    return compile(
        source,
        "<cell>",
        "exec",
        flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )


# node class -> the _Walker method for it ("s_" / "e_" + its name, else the generic one):
# looked up once per class, not by name for every node of every cell
_Handler: TypeAlias = "Callable[[_Walker, Any], None]"
_STATEMENTS: dict[type, _Handler] = {}
_EXPRESSIONS: dict[type, _Handler] = {}


def _handler(table: dict[type, _Handler], prefix: str, cls: type) -> _Handler:
    handler = table[cls] = getattr(
        _Walker, prefix + cls.__name__, getattr(_Walker, prefix + "generic")
    )
    return handler


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """``ast.iter_child_nodes(node)`` as a list (its child nodes in field order), without
    its two generators."""
    children: list[ast.AST] = []
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, ast.AST):
            children.append(value)
        elif isinstance(value, list):
            children.extend([item for item in value if isinstance(item, ast.AST)])
    return children


# What holds statements: blocks of statements, except handlers and match cases.
_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)


def _definitions(body: list[ast.stmt]) -> set[str]:
    """Names of the functions and classes defined anywhere in ``body``, nested blocks and
    definitions included.  Only statements define them, and no expression holds a statement:
    only the lists of statements (and of handlers, cases) are walked, not every node."""
    names: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list and value and isinstance(value[0], _BLOCKS):
                stack.extend(value)
    return names


def analyse_cell(source: str) -> CellAnalysis:
    """Statically analyse one cell of (IPython-transformed) Python source.

    Top-level ``await``/``async for``/``async with`` are accepted, as IPython
    runs them.  Raises SyntaxError for code that does not parse.
    """
    tree = parse_cell(source)
    cell = _Cell(_definitions(tree.body))
    _Walker(cell).run(tree.body)
    return cell.summary()


# --------------------------------------------------------------------------- runtime

_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_GLOBAL_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})


@functools.lru_cache(maxsize=8192)
def code_globals(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    """(names the code may load as globals, names it may store/delete as globals).

    Nested code objects (inner functions, lambdas, comprehensions, class
    bodies) are included.  LOAD_NAME in a class body may hit a class-local
    name; reporting it is a harmless over-approximation.  Code objects are
    immutable and hashable, so the result is cached per code object.
    """
    loads: set[str] = set()
    stores: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in _GLOBAL_LOADS:
            loads.add(ins.argval)
        elif ins.opname in _GLOBAL_STORES:
            stores.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_loads, inner_stores = code_globals(const)
            loads |= inner_loads
            stores |= inner_stores
    return frozenset(loads), frozenset(stores)


def referenced_globals(fn: types.FunctionType) -> frozenset[str]:
    """Global names ``fn`` may load or store that exist in its ``__globals__``."""
    loads, stores = code_globals(fn.__code__)
    return frozenset(name for name in loads | stores if name in fn.__globals__)


_MEMBERS = (
    types.FunctionType,
    staticmethod,
    classmethod,
    property,
    functools.partialmethod,
    functools.cached_property,
)


def _is_user_class(cls: type, namespace: Mapping[str, object], checked: dict[type, bool]) -> bool:
    """Was ``cls`` defined in the user namespace (so its instances hold user state)?"""
    if "__name__" in namespace and cls.__module__ == namespace["__name__"]:
        return True
    return any(
        isinstance(v, types.FunctionType) and v.__globals__ is namespace
        for klass in cls.__mro__
        if not _plain_members(klass, checked)  # (no notebook function there)
        for v in vars(klass).values()
    )


#: Py_TPFLAGS_IMMUTABLETYPE: a class whose attributes cannot be set (builtins, C extensions').
_IMMUTABLE_TYPE = 1 << 8


def _sealed(cls: type) -> bool:
    """Whether no user code can be reached through an instance of ``cls``: none of its
    classes or metaclasses can be given attributes (so no notebook function is among their
    members), none defines ``__wrapped__``, and its instances have no ``__dict__``.

    An int, a string or a numpy array read by a cell is then passed over at once, instead
    of walking the hundreds of members of its classes (the most common inputs).
    """
    if cls.__dictoffset__:
        return False
    meta: type = type(cls)
    return all(
        klass.__flags__ & _IMMUTABLE_TYPE and "__wrapped__" not in vars(klass)
        for klass in (*cls.__mro__, *meta.__mro__)
    )


# class -> the values of its ``__dict__`` when last found to hold no member through which
# a notebook's code can be reached (see _plain_members).  The values themselves, not their
# ids: while kept here, none of them can be freed and its address reused by a replacement.
_plain: weakref.WeakKeyDictionary[type, tuple[object, ...]] = weakref.WeakKeyDictionary()
_PLAIN_CLASSES = 4096


def _inert(member: object) -> bool:
    """Whether walking the class attribute ``member`` in :func:`_user_code` reaches no
    notebook code, whatever the namespace: it is not a member that is walked, or a module's
    function (wrapping only such functions), directly or as the static method, class
    method, property or cached property it makes."""
    if not isinstance(member, _MEMBERS):
        return True
    if isinstance(member, (staticmethod, classmethod)):
        return _module_function(member.__func__)
    if isinstance(member, functools.cached_property):
        return _module_function(member.func)
    if isinstance(member, property):
        return all(
            f is None or _module_function(f) for f in (member.fget, member.fset, member.fdel)
        )
    return _module_function(member)  # a function; a partialmethod is walked


def _module_function(obj: object) -> bool:
    """A function of an imported module other than ``__main__`` (the notebook), wrapping
    (``__wrapped__``, as decorators leave it) only such functions."""
    for _ in range(8):  # decorators stack a few deep; deeper is walked
        if not isinstance(obj, types.FunctionType):
            return False
        name = obj.__globals__.get("__name__")
        module = sys.modules.get(name) if isinstance(name, str) and name != "__main__" else None
        if getattr(module, "__dict__", None) is not obj.__globals__:
            return False
        obj = obj.__dict__.get("__wrapped__")
        if obj is None:
            return True
    return False


def _plain_members(klass: type, checked: dict[type, bool]) -> bool:
    """Whether no member of ``klass`` leads to notebook code (a library's class, unchanged
    since it was last found so: its ``__dict__`` holds the same objects); ``checked``
    remembers the answers within one walk.

    Walking the hundreds of members of a pandas DataFrame's classes for every cell that
    reads one cost a millisecond; a class that is monkeypatched (an attribute added,
    replaced or deleted) is walked again.
    """
    answer = checked.get(klass)
    if answer is None:
        values = tuple(vars(klass).values())
        known = _plain.get(klass, ())
        answer = len(known) == len(values) and all(map(operator.is_, known, values))
        if not answer and all(map(_inert, values)):
            answer = True
            if len(_plain) >= _PLAIN_CLASSES:  # members holding their class (super()'s
                _plain.clear()  # closure) keep it alive: classes made on the fly are bounded
            with contextlib.suppress(TypeError):  # a class that cannot be weakly referenced
                _plain[klass] = values
        checked[klass] = answer
    return answer


def _cell_contents(cell: types.CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # empty cell
        return None


def _user_code(
    obj: object, namespace: Mapping[str, object], seen: dict[int, object]
) -> Iterator[types.CodeType]:
    """Code of the user-defined functions reachable from ``obj``.

    Follows functions (closures, defaults, ``__wrapped__``), bound methods,
    partials, classes (whole MRO and metaclass: methods, static/class methods,
    properties, cached properties) and instances (their class; the attributes
    of instances of user classes).  Only functions whose ``__globals__`` is
    ``namespace`` yield code; ``seen`` (id -> object) makes it cycle-safe.
    """
    stack = [obj]
    checked: dict[type, bool] = {}
    while stack:
        o = stack.pop()
        if o is None or id(o) in seen:
            continue
        seen[id(o)] = o
        if isinstance(o, types.FunctionType):
            if o.__globals__ is namespace:
                yield o.__code__
                stack.extend(_cell_contents(c) for c in o.__closure__ or ())
                stack.extend([*(o.__defaults__ or ()), *(o.__kwdefaults__ or {}).values()])
            stack.append(o.__dict__.get("__wrapped__"))
        elif isinstance(o, types.MethodType):
            stack.extend([o.__func__, o.__self__])
        elif isinstance(o, (functools.partial, functools.partialmethod)):
            stack.extend([o.func, *o.args, *o.keywords.values()])
        elif isinstance(o, (staticmethod, classmethod)):
            stack.append(o.__func__)
        elif isinstance(o, property):
            stack.extend([o.fget, o.fset, o.fdel])
        elif isinstance(o, functools.cached_property):
            stack.append(o.func)
        elif isinstance(o, type):
            meta: type = type(o)
            for klass in (*o.__mro__, *meta.__mro__):
                if not _plain_members(klass, checked):
                    stack.extend(v for v in vars(klass).values() if isinstance(v, _MEMBERS))
        elif not _sealed(type(o)):  # an instance: its class, a wrapper's target, a user
            # object's attributes
            stack.extend([type(o), inspect.getattr_static(o, "__wrapped__", None)])
            if _is_user_class(type(o), namespace, checked):
                with contextlib.suppress(AttributeError, TypeError):
                    stack.extend(object.__getattribute__(o, "__dict__").values())


@dataclass(frozen=True)
class Expansion:
    """What calling the objects some names are bound to may do.

    ``reads``/``writes``: see :func:`expand_through_callables`.  ``hidden``: why
    that code may read globals no analysis can see ('' when it cannot): it
    uses ``eval``/``exec``/``globals``, refers to one of them as an object
    (``ev = eval``, ``partial(eval, "x")``) or imports ``__main__``.
    """

    reads: frozenset[str]
    writes: frozenset[str]
    hidden: Reason | None = None
    codes: tuple[types.CodeType, ...] = ()  # the user code reached (see effects.py)


#: Builtins through which code reads globals that no analysis can see.
HIDDEN_READ_BUILTINS = ("eval", "exec", "globals")


def expand_through_callables(
    names: Iterable[str],
    namespace: Mapping[str, object],
    deferred: _Deferred | None = None,
) -> Expansion:
    """Reads, writes and hidden reads of calling what ``names`` are bound to.

    Closes transitively (and cycle-safely) over the globals loaded by user code
    reachable from ``namespace[name]`` (see :func:`_user_code`; library code,
    whose ``__globals__`` is another dict, is not expanded).  ``deferred`` is
    ``CellAnalysis.deferred`` of the cell about to run: a reached name the cell
    itself defines also contributes its definitions' reads/writes, since that
    is what an earlier function looking it up will call.

    ``reads`` are reached names that are keys of ``namespace``, excluding
    ``names`` themselves; ``writes`` are every global stored or deleted by
    the reached code, even names not yet in ``namespace`` (a store creates them).
    """
    start = set(names)
    deferred = deferred or {}
    reads: set[str] = set()
    writes: set[str] = set()
    hidden: Reason | None = None
    builtin_ids = {id(getattr(builtins, n)): n for n in HIDDEN_READ_BUILTINS}
    seen: dict[int, object] = {}
    codes: list[types.CodeType] = []
    done: set[str] = set()
    todo = sorted(start, reverse=True)  # sorted: the first hidden read found is reproducible
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        loads: set[str] = set()
        if name in deferred:
            deferred_reads, deferred_writes = deferred[name]
            loads |= deferred_reads
            writes |= deferred_writes
        if name in namespace:
            for code in _user_code(namespace[name], namespace, seen):
                codes.append(code)
                code_loads, code_stores = code_globals(code)
                loads |= code_loads
                writes |= code_stores
                if not hidden and "__main__" in code.co_names:
                    hidden = Code.HIDDEN_READ(name=name, how="imports __main__")
            reached = sorted(b for i, b in builtin_ids.items() if i in seen)
            if not hidden and reached:
                hidden = Code.HIDDEN_READ(name=name, how=f"refers to {reached[0]}()")
        used = sorted(loads.intersection(HIDDEN_READ_BUILTINS))
        if not hidden and used:
            hidden = Code.HIDDEN_READ(name=name, how=f"uses {used[0]}()")
        reads |= loads
        todo.extend(sorted(loads - done, reverse=True))
    return Expansion(
        frozenset(n for n in reads - start if n in namespace),
        frozenset(writes),
        hidden,
        tuple(codes),
    )


def notebook_definition(obj: object) -> str | None:
    """The name under which the notebook namespace binds ``obj``, if ``obj`` is
    a function or class defined in the notebook and still bound to its own name.

    Such a definition can be referred to *by name* across stored values
    (``c = C()`` in one cell, ``class C`` in another) as long as the restore
    checks that the name still means the same content (``Entry.requires``).
    """
    if not isinstance(obj, (type, types.FunctionType)):
        return None
    name = obj.__qualname__
    if getattr(obj, "__module__", None) != "__main__" or "." in name:
        return None
    main = sys.modules.get("__main__")
    return name if getattr(main, name, None) is obj else None
