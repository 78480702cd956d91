"""Which names share objects: what a cell changed besides what it wrote, and what may be kept.

A cell that changes an object in place changes every value holding it
(``b`` after ``b = a; a.append(1)``, ``c = [a]``, a numpy view of ``a``):
a plain run leaves them changed, so the engine counts them as written and
stores them together with the changed values (which keeps them shared).
This module finds those holders (:func:`sharers`), the names bound to values
with an identity worth keeping (:func:`identities`), and whether a value has
no holder but the namespace (:func:`unshared`: then keeping it is the same as
binding an equal value anew).

Fails safe: when there are too many holders to be sure, :func:`sharers`
returns None and the cell is not cached.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable, Container, MutableMapping
from typing import Any

from .fingerprint import ATOMS, ValueHasher, array_owner

_IMMUTABLE: frozenset[type] = frozenset((*ATOMS, tuple, frozenset))
# Values that may stand for themselves whoever else refers to them: a module is the
# same object however often it is imported, an atom has no identity worth keeping.
SELF_STANDING = (*ATOMS, types.ModuleType)
# Values whose identity never matters when stored as another name's reference: code,
# modules and immutable values.
_NO_IDENTITY: tuple[type, ...] = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    *_IMMUTABLE,
)
# Objects through which the holders of a mutated object are searched (see sharers).
_CONTAINERS: frozenset[type] = frozenset({list, dict, set, tuple, frozenset, types.SimpleNamespace})
_HOLDERS_LIMIT = 10_000
# Objects inside mutated values walked to find those held elsewhere, and how many of those
# may be searched for holders (each costs a pass over the heap; see _held_elsewhere).
_INNER_LIMIT = 1_000_000
_SHARED_LIMIT = 1_000
# What that walk does not enter: values without parts, code (whose globals are the whole
# namespace: only a function's closure cells are walked), modules.
_NOT_WALKED: tuple[type, ...] = (*_NO_IDENTITY, types.CodeType)

#: Whether a namespace name holds the user's data (not IPython's history or session objects).
UserName = Callable[[str], bool]


def unshared(value: object, hasher: ValueHasher) -> bool:
    """True when no other object than the namespace refers to ``value`` (or it is immutable),
    nor to the memory it views (see _owns_its_memory_alone).

    The references counted here: the namespace's, the caller's variable, this
    function's argument, ``getrefcount``'s own argument, the hasher's memo
    if it hashed the value already, and the stand-in it was given for it.  Without
    reference counts (not CPython), every value counts as shared: it is then reloaded,
    which is always right.
    """
    if type(value) in ATOMS:
        return True
    if sys.implementation.name != "cpython":
        return False
    if sys.getrefcount(value) > 4 + hasher.knows(value) + hasher.stands_in(value):
        return False
    return _owns_its_memory_alone(value)


def _owns_its_memory_alone(value: object) -> bool:
    """False for a numpy array viewing memory whose owner (its ``base``, and the base's
    base...) something else holds too: another array may view the same memory (``view =
    arr[::2]`` of an earlier run, arrays loaded from one buffer), not by referring to the
    array but to its owner, and a kept array would keep sharing it where the fresh array
    of a real run would not."""
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(value, numpy.ndarray):
        return True
    base = value.base
    while base is not None:
        # the references: the viewing array's, getrefcount's argument, this variable
        if sys.getrefcount(base) > 3:
            return False
        base = base.base if isinstance(base, numpy.ndarray) else None
    return True


def is_notebook_object(obj: object) -> bool:
    """An instance of a class defined in the notebook: a plain data holder we may look through."""
    return getattr(type(obj), "__module__", None) == "__main__" and not isinstance(obj, type)


def identities(
    namespace: MutableMapping[str, Any], exclude: Container[str], user: UserName
) -> dict[int, str]:
    """``id() -> name`` of the user's values with identity (not code, modules, atoms)."""
    return {
        id(value): name
        for name, value in namespace.items()
        if type(value) not in _IMMUTABLE
        and name not in exclude
        and not isinstance(value, _NO_IDENTITY)
        and user(name)
    }


def _holding(
    namespace: MutableMapping[str, Any], known: Container[str], user: UserName, session: UserName
) -> dict[int, str]:
    """``id() -> name`` of the values outside ``known`` that may hold a shared object."""
    bound = identities(namespace, known, user)
    # a tuple has no identity of its own to keep, but one holding a mutated object changed
    bound.update(
        {
            id(value): name
            for name, value in namespace.items()
            if type(value) in (tuple, frozenset) and name not in known and user(name)
        }
    )
    # functions see the closure cells they share with a changed one (``inc, get = make()``)
    bound.update(
        {
            id(value): name
            for name, value in namespace.items()
            if type(value) is types.FunctionType and name not in known and not session(name)
        }
    )
    return bound


def sharers(
    namespace: MutableMapping[str, Any],
    mutated: set[str],
    inner: dict[str, set[int]],
    known: set[str],
    user: UserName,
    session: UserName,
) -> set[str] | None:
    """Names outside ``known`` whose values changed with the ``mutated`` inputs.

    ``b`` after ``b = a; a.append(1)``, ``z`` bound to an object inside
    ``a``, ``c`` after ``c = [a]``: a plain run leaves them changed, so
    they are written too (and stored together with ``a``, which keeps them
    shared).  ``inner``: per input, the ids of the mutable objects inside it
    before the cell ran (ValueHasher.collect).  Holders are found by walking
    the garbage collector's referrers up through plain containers and notebook
    objects; None when there are too many to be sure (the cell is then not cached).
    ``user``: see :data:`UserName`; ``session``: whether a name is a session object.
    """
    if not mutated:
        return set()
    bound = _holding(namespace, known, user, session)
    changed = [namespace[name] for name in mutated if name in namespace]
    inside = set().union(*(inner.get(name, set()) for name in mutated))
    found = {bound[i] for i in inside | set(map(id, changed)) if i in bound}
    found |= _same_memory(namespace, changed, bound)
    seen = set(map(id, changed)) | {id(namespace), id(changed)}
    shared = _held_elsewhere(changed, seen)
    if shared is None:
        return None
    return _holders([*changed, *shared], seen, bound, found)


def keepers(
    namespace: MutableMapping[str, Any],
    rebound: set[str],
    known: set[str],
    user: UserName,
    session: UserName,
) -> set[str] | None:
    """Names outside ``known`` holding an object that the new values of the ``rebound``
    inputs hold too.

    ``xs = [xs, xs]`` after ``pair = (xs, [0])``: the new ``xs`` holds the old list,
    which ``pair`` still holds; a plain run leaves ``xs[0] is pair[0]``, so ``pair`` is
    stored with ``xs`` (which keeps them shared), as :func:`sharers` does for a changed
    value.  Only objects inside the new values that something else refers to are
    searched (no heap pass when there are none); None when there are too many.
    """
    changed = [namespace[name] for name in rebound if name in namespace]
    if not changed:
        return set()
    seen = set(map(id, changed)) | {id(namespace), id(changed)}
    shared = _held_elsewhere(changed, seen)
    if not shared:
        return None if shared is None else set()
    return _holders(shared, seen, _holding(namespace, known, user, session), set())


def _holders(
    level: list[object], seen: set[int], bound: dict[int, str], found: set[str]
) -> set[str] | None:
    """``found`` and the names in ``bound`` whose values hold an object of ``level``,
    walking up through plain containers and notebook objects; None when too many."""
    while level:
        upper: list[object] = []
        for holder in gc.get_referrers(*level):
            if id(holder) in seen:
                continue
            seen.add(id(holder))
            if id(holder) in bound:
                found.add(bound[id(holder)])
            if type(holder) in _CONTAINERS or is_notebook_object(holder):
                upper.append(holder)
        if len(seen) > _HOLDERS_LIMIT:
            return None
        seen.add(id(upper))
        level = upper
    return found


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
