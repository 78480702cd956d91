"""Cells cheaper to run than to restore: straight-line code over plain values.

A restore costs a lookup, an entry's read and signature check, its key and its
bookkeeping: about a millisecond.  ``lr = base_lr / 10``, ``n_epochs = 20`` or
``print(f"{n:,} rows")`` run in microseconds, so such a cell is run again
instead of cached, and planning it costs a walk over its few statements.  A
cell is *quick* when it provably

* reads only names bound to plain values (numbers, strings, bytes, None, of
  exactly those types: no user-defined operator can run) and calls only a few
  builtins that are still the originals (``print``, ``len``, ``str``...);
* is straight-line code: assignments to names and expressions, no loops,
  definitions, imports, or stores into attributes and items; and
* cannot build a large value out of small ones: no repetition of strings,
  powers and shifts only by small literal amounts.

Such a cell changes nothing but the names it binds, each to a plain value; it
leaves the interpreter, files and random generators as they were; and it takes
about as long as hashing its inputs for a key would.  Running it can never be
stale.  Values are described here by *kind* (:data:`NUMBER`, :data:`TEXT`,
:data:`BYTES`, :data:`NONE`), which is all these rules need, and what the
sidebar's predictions can know of a value without holding it.
"""

from __future__ import annotations

import ast
import builtins
import functools
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .analysis import parse_cell

NUMBER, TEXT, BYTES, NONE = "number", "text", "bytes", "none"
_KINDS = {
    bool: NUMBER,
    int: NUMBER,
    float: NUMBER,
    complex: NUMBER,
    str: TEXT,
    bytes: BYTES,
    type(None): NONE,
}

# builtin -> the kind of its result from the kinds of its positional arguments (None: not
# quick); keywords are allowed only for print (sep, end, flush: plain values).
_CALLS: dict[str, Callable[[list[str]], str | None]] = {
    "print": lambda args: NONE,
    "len": lambda args: NUMBER if args in ([TEXT], [BYTES]) else None,
    "abs": lambda args: NUMBER if args == [NUMBER] else None,
    "round": lambda args: NUMBER if args in ([NUMBER], [NUMBER, NUMBER]) else None,
    "int": lambda args: NUMBER if len(args) == 1 else None,
    "float": lambda args: NUMBER if args in ([NUMBER], [TEXT]) else None,
    "bool": lambda args: NUMBER if len(args) <= 1 else None,
    "str": lambda args: TEXT if len(args) <= 1 else None,
    "repr": lambda args: TEXT if len(args) == 1 else None,
    "ascii": lambda args: TEXT if len(args) == 1 else None,
    "format": lambda args: TEXT if len(args) == 1 else None,  # a spec may ask for any width
    "hex": lambda args: TEXT if args == [NUMBER] else None,
    "oct": lambda args: TEXT if args == [NUMBER] else None,
    "bin": lambda args: TEXT if args == [NUMBER] else None,
    "chr": lambda args: TEXT if args == [NUMBER] else None,
    "ord": lambda args: NUMBER if args in ([TEXT], [BYTES]) else None,
    "min": lambda args: _same(args, over_one={TEXT: TEXT, BYTES: NUMBER}),
    "max": lambda args: _same(args, over_one={TEXT: TEXT, BYTES: NUMBER}),
}
#: The builtins a quick cell may call, as the interpreter started with them.
_ORIGINALS = {name: getattr(builtins, name) for name in _CALLS}

_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_BITS = (ast.BitAnd, ast.BitOr, ast.BitXor, ast.RShift)
_GROWING = (ast.Pow, ast.LShift)
_SMALL = 64  # the largest literal a power or a left shift may use


def _same(kinds: list[str], over_one: Mapping[str, str]) -> str | None:
    """min/max: of several values of one kind, that kind; of one string, a character."""
    if len(kinds) == 1:
        return over_one.get(kinds[0])
    return kinds[0] if kinds and len(set(kinds)) == 1 else None


def original_builtin(name: str, bound: Callable[[str], bool]) -> bool:
    """Whether ``name`` is one of the builtins a quick cell may call, as the interpreter
    started with it: not shadowed by a variable (``bound``), not replaced in builtins."""
    original = _ORIGINALS.get(name)
    return original is not None and not bound(name) and vars(builtins).get(name) is original


def kind_of(value: object) -> str | None:
    """The kind of a plain value (exactly one of the builtin types); None for anything else."""
    return _KINDS.get(type(value))


@functools.lru_cache(maxsize=1024)
def _statements(source: str) -> tuple[ast.stmt, ...] | None:
    """The cell's statements if they are all of the shapes a quick cell may have."""
    try:
        body = parse_cell(source).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    shapes = (ast.Assign, ast.AugAssign, ast.Expr, ast.Pass)
    return tuple(body) if body and all(isinstance(s, shapes) for s in body) else None


@dataclass(frozen=True)
class QuickCell:
    """What a quick cell reads (names bound before it, and the builtins it calls) and
    binds (name -> kind): all it can touch."""

    reads: frozenset[str]
    written: dict[str, str]


def quick_cell(
    source: str,
    outside: Callable[[str], str | None],
    bound: Callable[[str], bool],
) -> QuickCell | None:
    """The cell (IPython-transformed ``source``) as a quick cell (see the module's
    docstring); None when it is not one.

    ``outside(name)``: the kind of the value a name the cell reads from before it holds
    (None: not a plain value, or unbound); ``bound(name)``: whether a name is bound in
    the namespace (then it is no builtin: see :func:`original_builtin`).
    """
    statements = _statements(source)
    if statements is None:
        return None
    typer = _Typer(outside, bound)
    try:
        for statement in statements:
            typer.statement(statement)
    except _NotQuick:
        return None
    return QuickCell(frozenset(typer.reads), typer.written)


def evaluate(
    source: str, inputs: Mapping[str, object], written: Mapping[str, str]
) -> dict[str, object] | None:
    """The values a :func:`quick_cell` binds (``written``), computed from
    the values it reads (``inputs``) with its output left out (``print`` prints nothing);
    None if it raises.  Its code can do nothing else (see the module's docstring): the
    sidebar's predictions work out what such cells will bind."""
    namespace: dict[str, object] = {"__builtins__": _SILENT, **inputs}
    try:
        exec(_compiled(source), namespace)
    except Exception:  # the cell will raise when it runs: what it binds is not known
        return None
    return {name: namespace[name] for name in written}


def _silent_print(*args: object, **kwargs: object) -> None:
    return None


_SILENT = {**_ORIGINALS, "print": _silent_print}


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> types.CodeType:
    return compile(source, "<cell>", "exec", dont_inherit=True)


class _NotQuick(Exception):
    pass


class _Typer:
    """The kinds of a straight-line cell's expressions, statement by statement."""

    def __init__(self, outside: Callable[[str], str | None], bound: Callable[[str], bool]):
        self.outside = outside
        self.bound = bound
        self.written: dict[str, str] = {}
        self.reads: set[str] = set()

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            kind = self.kind(node.value)
            for target in node.targets:
                self.written[self.target(target)] = kind
        elif isinstance(node, ast.AugAssign):
            name = self.target(node.target)
            self.written[name] = self.binary(self.name(name), node.op, node.value)
        elif isinstance(node, ast.Expr):
            self.kind(node.value)

    @staticmethod
    def target(node: ast.expr) -> str:
        if not isinstance(node, ast.Name):
            raise _NotQuick
        return node.id

    def name(self, name: str) -> str:
        kind = self.written.get(name)
        if kind is None:
            kind = self.outside(name)
            self.reads.add(name)
        if kind is None:
            raise _NotQuick
        return kind

    def kind(self, node: ast.expr) -> str:
        """The kind of ``node``'s value; raises _NotQuick when it may not be plain, or may
        run code or grow large."""
        if isinstance(node, ast.Constant):
            kind = _KINDS.get(type(node.value))
            if kind is None:
                raise _NotQuick
            return kind
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp):
            literal = isinstance(node.left, ast.Constant)
            return self.binary(self.kind(node.left), node.op, node.right, literal)
        if isinstance(node, ast.UnaryOp):
            kind = self.kind(node.operand)
            if isinstance(node.op, ast.Not) or kind == NUMBER:
                return NUMBER
            raise _NotQuick
        if isinstance(node, ast.BoolOp):  # its value is one of its operands
            return self.one_kind(node.values)
        if isinstance(node, ast.IfExp):
            self.kind(node.test)
            return self.one_kind([node.body, node.orelse])
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                self.kind(operand)
            if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                raise _NotQuick  # ``in`` asks the right operand, which may be anything
            return NUMBER
        if isinstance(node, ast.JoinedStr):
            for value in node.values:
                self.kind(value)
            return TEXT
        if isinstance(node, ast.FormattedValue):
            self.kind(node.value)
            if node.format_spec is not None:
                self.literal_spec(node.format_spec)
            return TEXT
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise _NotQuick

    def one_kind(self, nodes: list[ast.expr]) -> str:
        kinds = {self.kind(node) for node in nodes}
        if len(kinds) != 1:
            raise _NotQuick
        return kinds.pop()

    def literal_spec(self, spec: ast.expr) -> None:
        """A format spec written out in full (``:>10``): a width from a variable could be
        any size."""
        if not (
            isinstance(spec, ast.JoinedStr)
            and all(isinstance(part, ast.Constant) for part in spec.values)
        ):
            raise _NotQuick

    def binary(
        self, left: str, op: ast.operator, right_node: ast.expr, literal: bool = False
    ) -> str:
        """The kind of ``left op right``; ``literal``: the left operand is written out."""
        right = self.kind(right_node)
        if left == NUMBER and right == NUMBER:
            if isinstance(op, (*_ARITHMETIC, *_BITS)):
                return NUMBER
            if isinstance(op, _GROWING) and _small_literal(right_node):
                return NUMBER
            raise _NotQuick
        if isinstance(op, ast.Add) and left == right and left in (TEXT, BYTES):
            return left
        if isinstance(op, ast.Mod) and left in (TEXT, BYTES) and literal:
            return left  # printf-style formatting by a format written out (widths included)
        raise _NotQuick

    def subscript(self, node: ast.Subscript) -> str:
        value = self.kind(node.value)
        index = node.slice
        if isinstance(index, ast.Slice):
            for bound in (index.lower, index.upper, index.step):
                if bound is not None and self.kind(bound) != NUMBER:
                    raise _NotQuick
            if value in (TEXT, BYTES):
                return value
        elif self.kind(index) == NUMBER and value in (TEXT, BYTES):
            return TEXT if value == TEXT else NUMBER
        raise _NotQuick

    def call(self, node: ast.Call) -> str:
        func = node.func
        if not (isinstance(func, ast.Name) and original_builtin(func.id, self.bound)):
            raise _NotQuick
        if func.id in self.written or any(isinstance(a, ast.Starred) for a in node.args):
            raise _NotQuick
        if node.keywords and (
            func.id != "print" or any(k.arg not in ("sep", "end", "flush") for k in node.keywords)
        ):
            raise _NotQuick
        for keyword in node.keywords:
            self.kind(keyword.value)
        self.reads.add(func.id)
        kind = _CALLS[func.id]([self.kind(arg) for arg in node.args])
        if kind is None:
            raise _NotQuick
        return kind


def _small_literal(node: ast.expr) -> bool:
    """A literal number (or its negation) of at most _SMALL: a power or shift by it stays
    about the size of what it raises."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    value = node.value if isinstance(node, ast.Constant) else None
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= _SMALL
