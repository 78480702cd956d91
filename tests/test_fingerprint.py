"""Tests for incrcell.fingerprint: content hashing of values and cell sources."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import functools
import importlib
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import types
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incrcell.fingerprint import (
    HASH_FORMAT,
    Unhashable,
    ValueHasher,
    hash_bytes,
    hash_value,
    normalise_source,
    source_hash,
)

H = hash_value


def run_cell(
    source: str, namespace: dict[str, object] | None = None, filename: str = "<cell-1>"
) -> dict[str, object]:
    """Execute ``source`` the way a notebook kernel does: in a __main__ namespace."""
    ns: dict[str, object] = {"__name__": "__main__"} if namespace is None else namespace
    exec(compile(textwrap.dedent(source), filename, "exec"), ns)
    return ns


# -- basics -------------------------------------------------------------------


def test_api_shapes() -> None:
    assert HASH_FORMAT == 3
    digest = H([1, "a"])
    assert isinstance(digest, bytes) and len(digest) == 16
    assert hash_bytes(b"abc") == hash_bytes(memoryview(b"abc"))
    assert len(hash_bytes(b"abc")) == 16
    assert H([1, "a"]) == ValueHasher().hash([1, "a"])


def test_golden_digests() -> None:
    # If these change, the hashing scheme changed: bump HASH_FORMAT (and update).
    assert H(None).hex() == "d59bf36b411cde6f6435c1686d09b718"
    assert H({"a": [1, 2.5, "x", b"y"]}).hex() == "ce91066305c4e9683a820ee7496d6a00"


DISTINCT_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**64,
    -(2**64),
    1.0,
    0.0,
    -0.0,  # differs from 0.0 (different bits); only a possible missed hit
    math.inf,
    1 + 0j,
    "1",
    "",
    "\udc80",  # lone surrogate: hashable via surrogatepass
    b"1",
    b"",
    bytearray(b"1"),
    memoryview(b"1"),
    [1],
    (1,),
    [],
    (),
    {1},
    frozenset({1}),
    set(),
    frozenset(),
    {1: 1},
    {},
    {"a": 1, "b": 2},
    {"b": 2, "a": 1},  # insertion order changes iteration: differs
    [1, [2]],
    [[1], 2],
    [(1, 2)],
    [(1,), 2],
    ["ab"],
    ["a", "b"],
    [b"ab"],
    ("a", ("b",)),
    (("a",), "b"),
    collections.OrderedDict(a=1),
    collections.Counter(a=1),
    decimal.Decimal("1"),
    decimal.Decimal("1.0"),
    range(3),
    slice(1, 2),
    Ellipsis,
    int,
    float,
    np.float64(1.0),
    np.float32(1.0),
    np.int64(1),
    np.array(1.0),
    np.array([1.0]),
    np.array([1.0], dtype=np.float32),
    np.array([[1.0]]),
]


def test_distinct_values_hash_distinct() -> None:
    digests = [H(value) for value in DISTINCT_VALUES]
    duplicates = [
        (DISTINCT_VALUES[i], DISTINCT_VALUES[j])
        for i in range(len(digests))
        for j in range(i)
        if digests[i] == digests[j]
    ]
    assert not duplicates


@pytest.mark.parametrize("value", DISTINCT_VALUES, ids=lambda v: type(v).__name__)
def test_equal_values_hash_equal(value: object) -> None:
    if isinstance(value, memoryview):
        other: object = memoryview(bytes(value))
    else:
        other = pickle.loads(pickle.dumps(value))
    assert H(value) == H(other)
    assert H(value) == H(value)


def test_sets_are_order_independent() -> None:
    a = {"x", "y", "zzz", 1, 2.5, b"b", ("t", 1), frozenset({"q"})}
    items = list(a)
    b: set[object] = set()
    for item in reversed(items):
        b.add(item)
    assert H(a) == H(b)
    assert H(frozenset(a)) == H(frozenset(reversed(items)))
    assert H(a) != H(frozenset(a))
    assert H({"a", "b"}) != H({"a", "c"})
    assert H({1, 2}) != H({1, 2, 3})


def test_subclasses_of_builtins_differ_from_builtins() -> None:
    ns = run_cell(
        """
        class MyList(list): pass
        class MyDict(dict): pass
        class MyStr(str): pass
        class MySet(set): pass
        """
    )
    assert H(ns["MyList"]([1, 2])) != H([1, 2])
    assert H(ns["MyDict"](a=1)) != H({"a": 1})
    assert H(ns["MyStr"]("a")) != H("a")
    assert H(ns["MySet"]({1})) != H({1})
    assert H(ns["MySet"]({"a", "b"})) == H(ns["MySet"]({"b", "a"}))
    assert H(collections.OrderedDict(a=1)) != H({"a": 1})


def test_large_containers() -> None:
    big = list(range(20_000))
    assert H(big) == H(list(range(20_000)))
    changed = list(big)
    changed[12_345] = -1
    assert H(big) != H(changed)
    big_dict = {str(i): i for i in range(20_000)}
    assert H(big_dict) == H(dict(big_dict))
    assert H(big_dict) != H({**big_dict, "5": -5})
    big_set = set(range(20_000))
    assert H(big_set) == H(set(reversed(range(20_000))))  # noqa: C414 (another insertion order)


# -- identity: aliasing and cycles -----------------------------------------------


def test_aliasing_structure_is_part_of_the_hash() -> None:
    # A later in-place mutation through one alias would behave differently.
    a = [1, 2]
    assert H([a, a]) != H([a, copy.copy(a)])
    assert H([a, a]) == H(copy.deepcopy([a, a]))
    assert H([a, a]) == H(pickle.loads(pickle.dumps([a, a])))
    d = {"k": a}
    assert H((d, a)) != H((d, [1, 2]))


def test_immutable_atoms_hash_by_value_not_identity() -> None:
    s = "".join(["ab", "cd"])
    t = "".join(["a", "bcd"])
    assert s is not t
    assert H([s, s]) == H([s, t])
    big = 10**30
    assert H([big, big]) == H([big, 10**30 + 0])
    tup = (1, 2)
    assert H([tup, tup]) == H([tup, tuple([1, 2])])  # noqa: C409 (a tuple built at run time)


def test_cycles_terminate_and_distinguish_structure() -> None:
    a: list[object] = []
    a.append(a)
    b: list[object] = []
    b.append(b)
    assert H(a) == H(b)
    c: list[object] = [[]]
    c[0].append(c)  # type: ignore[attr-defined]
    assert H(a) != H(c)
    d: dict[str, object] = {}
    d["self"] = d
    assert H(d) == H(pickle.loads(pickle.dumps(d)))
    ns = run_cell(
        """
        class Node:
            def __init__(self):
                self.next = self
        """
    )
    assert H(ns["Node"]()) == H(ns["Node"]())


GRAPH_SOURCE = """
class Node:
    def __init__(self, name):
        self.name = name
        self.neighbours = set()
    def __hash__(self):
        return hash(self.name)
a, b, c = Node("a"), Node("b"), Node("c")
a.neighbours |= {b, c}
b.neighbours |= {a}
c.neighbours |= {a, b}
"""


def test_sets_of_objects_keep_aliasing_and_cycles() -> None:
    ns = run_cell(GRAPH_SOURCE)
    again = run_cell(GRAPH_SOURCE)
    assert H(ns["a"]) == H(again["a"])
    again["c"].neighbours.discard(again["b"])  # type: ignore[attr-defined]
    assert H(ns["a"]) != H(again["a"])
    # {a} shares `a` with the list: not the same as an equal but distinct node.
    node = ns["a"]
    twin = run_cell(GRAPH_SOURCE)["a"]
    assert H(([node], {node})) != H(([node], {twin}))


def test_stdlib_value_types_hash_by_value() -> None:
    d1 = datetime.date(2020, 1, 2)
    d2 = datetime.date(2020, 1, 2)
    assert H([d1, d1]) == H([d1, d2])
    assert H({datetime.date(2020, 1, i) for i in range(1, 20)}) == H(
        {datetime.date(2020, 1, i) for i in reversed(range(1, 20))}
    )
    assert H(datetime.date(2020, 1, 2)) != H(datetime.date(2020, 1, 3))
    assert H(decimal.Decimal("1.5")) != H(1.5)


def test_weak_references_hash_their_referent() -> None:
    ns = run_cell("class A:\n    def __init__(self, v):\n        self.v = v")
    x, y = ns["A"](1), ns["A"](2)  # type: ignore[operator]
    assert H(weakref.ref(x)) != H(weakref.ref(y))
    assert H([x, weakref.ref(x)]) != H([x, weakref.ref(ns["A"](1))])  # type: ignore[operator]


def test_numpy_views_sharing_memory_are_aliases() -> None:
    # Writing through a view changes the array it views: sharing matters.
    a = np.arange(10.0)
    assert H([a, a[:4]]) != H([a, a[:4].copy()])
    b = a.copy()
    assert H([b, b[:4]]) == H([a, a[:4]])
    z = np.zeros(10)
    assert H([z, z[:4]]) != H([z, z[1:5]])  # equal contents, other offsets
    assert H([z[1:5], z[2:6]]) != H([np.zeros(10)[1:5], np.zeros(10)[2:6]])
    y = np.zeros(20)
    assert H([z[1:5], z[2:6]]) == H([y[5:9], y[6:10]])  # same relative offset
    # A lone view hashes like a fresh array: layout alone is not content.
    assert H(z[2:6]) == H(np.zeros(4))


# -- memo ------------------------------------------------------------------------


def test_memo_and_remember() -> None:
    hasher = ValueHasher()
    value = [1, 2, 3]
    digest = hasher.hash(value)
    assert hasher.knows(value) and hasher.packages_of(value) == frozenset()
    value.append(4)  # values must not change during a hasher's life: memo wins
    assert hasher.hash(value) == digest
    restored = {"restored": True}
    hasher.remember(restored, b"x" * 16, frozenset({"somepackage"}))
    assert hasher.hash(restored) == b"x" * 16
    assert "somepackage" in hasher.packages  # a remembered value notes its packages


def test_packages_are_noted_per_value() -> None:
    """What hashing one value notes, even when parts of it were hashed (memoised) before."""
    hasher = ValueHasher()
    arr = np.arange(3.0)
    hasher.hash(arr)
    hasher.hash([arr])
    assert hasher.packages_of(arr) == {"numpy"} and hasher.packages_of([arr][0]) == {"numpy"}
    holder = [arr]
    fresh = ValueHasher()
    fresh.hash(holder)
    assert hasher.packages_of(arr) == fresh.packages_of(holder) == {"numpy"}


def test_memoised_arrays_are_reused_inside_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import incrcell.fingerprint as fp

    calls: list[int] = []
    real = fp._array_digest

    def counting(arr: object) -> bytes:
        calls.append(1)
        return real(arr)

    monkeypatch.setattr(fp, "_array_digest", counting)
    hasher = ValueHasher()
    arr = np.arange(1000.0)
    hasher.hash(arr)
    first = hasher.hash([arr, {"x": arr}])
    assert len(calls) == 1
    assert first == H([arr, {"x": arr}])
    # A pre-seeded digest of an array is used inside other values too.
    other = ValueHasher()
    other.remember(arr, b"\0" * 16, frozenset({"numpy"}))
    assert other.hash([arr]) != H([arr])


# -- functions ---------------------------------------------------------------------


FUNC_SOURCE = """
import math
SCALE = 3
UNRELATED = 1

def make(offset):
    def inner(x, k=2, *, z=5):
        return math.floor(x * SCALE + offset + k + z)
    return inner

f = make(10)
"""


def test_function_hash_follows_code_defaults_closure_and_globals() -> None:
    base = H(run_cell(FUNC_SOURCE)["f"])
    assert base == H(run_cell(FUNC_SOURCE)["f"])
    # Same code in another cell / at other line numbers: same hash.
    assert base == H(run_cell("\n\n\n" + FUNC_SOURCE, filename="<cell-7>")["f"])
    assert base == H(
        run_cell(FUNC_SOURCE.replace("    return inner", "    # comment\n    return inner"))["f"]
    )

    assert base != H(run_cell(FUNC_SOURCE.replace("x * SCALE", "x * SCALE * 1"))["f"])
    assert base != H(run_cell(FUNC_SOURCE.replace("k=2", "k=3"))["f"])
    assert base != H(run_cell(FUNC_SOURCE.replace("z=5", "z=6"))["f"])
    assert base != H(run_cell(FUNC_SOURCE.replace("make(10)", "make(11)"))["f"])
    assert base != H(run_cell(FUNC_SOURCE.replace("SCALE = 3", "SCALE = 4"))["f"])
    assert base == H(run_cell(FUNC_SOURCE.replace("UNRELATED = 1", "UNRELATED = 2"))["f"])

    ns = run_cell(FUNC_SOURCE)
    ns["SCALE"] = 4
    assert base != H(ns["f"])
    ns["SCALE"] = 3
    ns["NEW_GLOBAL"] = object()
    assert base == H(ns["f"])


def test_function_globals_are_hashed_by_content() -> None:
    src = """
    TABLE = {"a": [1, 2]}
    def lookup(k):
        return TABLE[k]
    """
    ns = run_cell(src)
    before = H(ns["lookup"])
    ns["TABLE"]["a"].append(3)  # type: ignore[index]
    assert H(ns["lookup"]) != before


def test_function_attribute_and_name_matter() -> None:
    ns = run_cell("def f(): return 1\ndef g(): return 1")
    assert H(ns["f"]) != H(ns["g"])  # qualname differs
    before = H(ns["f"])
    ns["f"].tag = "x"  # type: ignore[attr-defined]
    assert H(ns["f"]) != before


def test_lambdas_and_empty_cells() -> None:
    ns = run_cell(
        """
        a = lambda x: x + 1
        b = lambda x: x + 2
        def outer():
            def uses_later():
                return later
            h = uses_later
            later = 1
            return h
        def outer_empty():
            def uses_later():
                return later
            if False:
                later = 1
            return uses_later
        """
    )
    assert H(ns["a"]) != H(ns["b"])
    assert H(ns["outer"]()) != H(ns["outer_empty"]())  # type: ignore[operator]


def test_shared_closure_cells_are_aliases() -> None:
    ns = run_cell(
        """
        def counter():
            n = 0
            def inc():
                nonlocal n
                n += 1
            def get():
                return n
            return inc, get
        """
    )
    inc, get = ns["counter"]()  # type: ignore[operator]
    inc2, get2 = ns["counter"]()  # type: ignore[operator]
    assert H((inc, get)) == H((inc2, get2))
    assert H((inc, get)) != H((inc, get2))


def test_recursive_functions_terminate() -> None:
    ns = run_cell(
        """
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1)
        """
    )
    assert H(ns["fact"]) == H(
        run_cell("def fact(n):\n    return 1 if n <= 1 else n * fact(n - 1)")["fact"]
    )
    assert H(ns["even"]) != H(ns["odd"])
    assert H([ns["even"], ns["odd"]]) == H([ns["even"], ns["odd"]])
    ns2 = run_cell(
        "def even(n):\n    return n == 0 or odd(n - 1)\ndef odd(n):\n    return n != 1 and even(n - 1)"
    )
    assert H(ns["even"]) != H(ns2["even"])


def test_library_functions_hash_by_name_and_record_packages() -> None:
    hasher = ValueHasher()
    hasher.hash(json.dumps)
    hasher.hash(math.floor)
    assert hasher.packages == set()
    hasher = ValueHasher()
    mean = hasher.hash(np.mean)
    assert hasher.packages == {"numpy"}
    assert mean != H(np.sum)
    assert H(json.dumps) != H(json.loads)
    hasher = ValueHasher()
    hasher.hash(run_cell("import numpy as np\ndef f(x): return np.mean(x)")["f"])
    assert hasher.packages == {"numpy"}


def test_partial_methods_and_wrappers() -> None:
    ns = run_cell(
        """
        import functools
        def add(a, b): return a + b
        class Box:
            def __init__(self, v): self.v = v
            def get(self): return self.v
        @functools.lru_cache(maxsize=None)
        def cached(x): return x * 2
        """
    )
    add, box = ns["add"], ns["Box"]
    assert H(functools.partial(add, 1)) == H(functools.partial(add, 1))
    assert H(functools.partial(add, 1)) != H(functools.partial(add, 2))
    assert H(functools.partial(add, b=1)) != H(functools.partial(add, 1))
    assert H(box(1).get) == H(box(1).get)  # type: ignore[operator]
    assert H(box(1).get) != H(box(2).get)  # type: ignore[operator]
    obj = box(1)  # type: ignore[operator]
    assert H(types.MethodType(lambda self: 1, obj)) != H(types.MethodType(lambda self: 2, obj))
    cached = H(ns["cached"])
    ns2 = run_cell(
        "import functools\n@functools.lru_cache(maxsize=None)\ndef cached(x): return x * 3"
    )
    assert cached != H(ns2["cached"])
    assert H([].append) != H([1].append)
    assert H(len) != H(abs)


def test_main_objects_pickled_by_name_are_unhashable() -> None:
    ns = run_cell(
        """
        class Token:
            def __reduce__(self):
                return "TOKEN"
        TOKEN = Token()
        """
    )
    with pytest.raises(Unhashable, match="by its name"):
        H(ns["TOKEN"])


# -- classes and instances ---------------------------------------------------------


CLASS_SOURCE = """
import abc, dataclasses, enum, functools

LIMIT = 10

class Base(abc.ABC):
    @abc.abstractmethod
    def area(self): ...

class Square(Base):
    sides = 4
    def __init__(self, size):
        self.size = size
    def area(self):
        return min(self.size ** 2, LIMIT)
    @property
    def perimeter(self):
        return self.sides * self.size
    @staticmethod
    def kind():
        return "square"
    @classmethod
    def unit(cls):
        return cls(1)
    @functools.cached_property
    def diagonal(self):
        return self.size * 2 ** 0.5

@dataclasses.dataclass
class Point:
    x: int = 0
    y: list = dataclasses.field(default_factory=list)

class Colour(enum.Enum):
    RED = 1
    GREEN = 2
"""


def test_user_classes_hash_by_content() -> None:
    ns = run_cell(CLASS_SOURCE)
    again = run_cell(CLASS_SOURCE)
    for name in ("Base", "Square", "Point", "Colour"):
        assert H(ns[name]) == H(again[name]), name
    assert H(ns["Square"](3)) == H(again["Square"](3))  # type: ignore[operator]
    assert H(ns["Square"](3)) != H(ns["Square"](4))  # type: ignore[operator]
    assert H(ns["Point"](1)) == H(again["Point"](1))  # type: ignore[operator]
    assert H(ns["Colour"].RED) != H(ns["Colour"].GREEN)  # type: ignore[attr-defined]

    for old, new in [
        ("min(self.size ** 2, LIMIT)", "max(self.size ** 2, LIMIT)"),  # method code
        ("sides = 4", "sides = 5"),  # class attribute
        ("return self.sides * self.size", "return self.sides + self.size"),  # property
        ('return "square"', 'return "SQUARE"'),  # staticmethod
        ("return cls(1)", "return cls(2)"),  # classmethod
        ("size * 2 ** 0.5", "size * 2"),  # cached_property
        ("LIMIT = 10", "LIMIT = 11"),  # global read by a method
        ("class Square(Base)", "class Square(object)"),  # bases
    ]:
        changed = run_cell(CLASS_SOURCE.replace(old, new))
        assert H(ns["Square"]) != H(changed["Square"]), old
        assert H(ns["Square"](3)) != H(changed["Square"](3)), old  # type: ignore[operator]


def test_instances_of_different_classes_differ() -> None:
    ns = run_cell("class A:\n    pass\nclass B:\n    pass")
    a, b = ns["A"](), ns["B"]()  # type: ignore[operator]
    assert H(a) != H(b)
    ns2 = run_cell("class A:\n    def m(self): return 1")
    assert H(a) != H(ns2["A"]())  # type: ignore[operator]


def test_library_classes_hash_by_name() -> None:
    hasher = ValueHasher()
    hasher.hash([collections.OrderedDict, json.JSONDecoder, int, type(None), types.FunctionType])
    assert hasher.packages == set()
    hasher = ValueHasher()
    hasher.hash(pd.DataFrame)
    assert hasher.packages == {"pandas"}
    assert H(pd.DataFrame) != H(pd.Series)
    hasher = ValueHasher()
    hasher.hash([pd.Timestamp("2020-01-01")])
    assert "pandas" in hasher.packages


def test_namedtuple_and_slots() -> None:
    ns = run_cell(
        """
        import collections
        P = collections.namedtuple("P", "x y")
        class S:
            __slots__ = ("a", "b")
            def __init__(self, a, b):
                self.a, self.b = a, b
        """
    )
    assert H(ns["P"](1, 2)) != H((1, 2))  # type: ignore[operator]
    assert H(ns["P"](1, 2)) != H(ns["P"](2, 1))  # type: ignore[operator]
    assert H(ns["S"](1, 2)) != H(ns["S"](1, 3))  # type: ignore[operator]
    assert H(ns["S"](1, 2)) == H(
        run_cell(
            textwrap.dedent("""
        class S:
            __slots__ = ("a", "b")
            def __init__(self, a, b):
                self.a, self.b = a, b
        """)
        )["S"](1, 2)
    )  # type: ignore[operator]


# -- modules ------------------------------------------------------------------------


def test_stdlib_and_library_modules_hash_by_name() -> None:
    hasher = ValueHasher()
    assert hasher.hash(json) != hasher.hash(math)
    hasher.hash(sys)
    assert hasher.packages == set()
    hasher.hash(np)
    assert hasher.packages == {"numpy"}
    assert H(np) == H(np)


def test_local_module_hashes_by_file_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "incrcell_localmod.py"
    path.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("incrcell_localmod")
    try:
        hasher = ValueHasher()
        before = hasher.hash(module)
        assert hasher.packages == set()
        assert before == H(module)
        path.write_text("VALUE = 2\n")
        assert H(module) != before
        # A user function that uses the module changes with it too.
        fn = run_cell("import incrcell_localmod\ndef f():\n    return incrcell_localmod.VALUE")["f"]
        with_v2 = H(fn)
        path.write_text("VALUE = 3\n")
        assert H(fn) != with_v2
    finally:
        sys.modules.pop("incrcell_localmod", None)


def test_module_without_file_is_unhashable() -> None:
    dynamic = types.ModuleType("incrcell_dynamic")
    dynamic.x = 1  # type: ignore[attr-defined]
    with pytest.raises(Unhashable, match="incrcell_dynamic"):
        H(dynamic)
    assert H(sys.modules["builtins"]) == H(sys.modules["builtins"])


# -- numpy --------------------------------------------------------------------------


def test_numpy_arrays() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert H(a) == H(a.copy())
    assert H(a) != H(a.astype(np.float32))
    assert H(a) != H(a.astype(np.int64))
    assert H(a) != H(a.reshape(4, 3))
    assert H(a) != H(a.reshape(12))
    b = a.copy()
    b[1, 2] = -1
    assert H(a) != H(b)
    # Non-contiguous views hash like their contiguous copies.
    assert H(a.T) == H(np.ascontiguousarray(a.T))
    assert H(a[:, ::2]) == H(a[:, ::2].copy())
    assert H(np.asfortranarray(a)) == H(a)
    assert H(a.T) != H(a)
    # Byte order and dtype flavours.
    assert H(a.astype(">f8")) != H(a)
    assert H(np.zeros(3, dtype="M8[s]")) != H(np.zeros(3, dtype="M8[ns]"))
    assert H(np.zeros(3, dtype="M8[s]")) != H(np.zeros(3, dtype="m8[s]"))
    assert H(np.array(["ab", "c"])) != H(np.array(["ab", "d"]))
    assert H(np.zeros((0, 3))) != H(np.zeros((3, 0)))
    assert H(np.array(True)) != H(np.array(1, dtype=np.uint8))


def test_large_non_contiguous_array_is_hashed_in_chunks() -> None:
    a = np.random.default_rng(0).random((3000, 1000))
    assert H(a.T) == H(np.ascontiguousarray(a.T))
    assert H(a[::2]) == H(a[::2].copy())


def test_structured_and_object_arrays() -> None:
    dt1 = np.dtype([("a", "<i4"), ("b", "<f8")])
    dt2 = np.dtype([("x", "<i4"), ("b", "<f8")])
    s1 = np.zeros(3, dtype=dt1)
    assert H(s1) == H(s1.copy())
    assert H(s1) != H(np.zeros(3, dtype=dt2))
    o1 = np.array([1, "a", None, [1, 2]], dtype=object)
    o2 = np.array([1, "a", None, [1, 2]], dtype=object)
    assert H(o1) == H(o2)
    o2[3].append(3)
    assert H(o1) != H(o2)
    assert H(np.array([1, 2], dtype=object)) != H(np.array([1, 2]))
    assert H(np.array([1, 2], dtype=object)) != H(np.array([[1, 2]], dtype=object))
    shared = [1]
    assert H(np.array([shared, shared, None], dtype=object)[:2]) != H(
        np.array([[1], [1], None], dtype=object)[:2]
    )


def test_numpy_scalars() -> None:
    assert H(np.float64(1.5)) == H(np.float64(1.5))
    assert H(np.float64(1.5)) != H(1.5)
    assert H(np.float64(1.5)) != H(np.float32(1.5))
    assert H(np.datetime64("2020-01-01")) != H(np.datetime64("2020-01-02"))
    assert H(np.str_("a")) != H("a")


# -- pandas ---------------------------------------------------------------------


def make_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": np.arange(5, dtype=np.float64),
            "n": np.arange(5),
            "s": list("abcde"),
            "c": pd.Categorical(list("aabba")),
            "o": [1, "two", None, [3], {"four": 4}],
        },
        index=pd.Index(list("vwxyz"), name="key"),
    )


def test_pandas_equal_frames_hash_equal() -> None:
    df = make_frame()
    assert H(df) == H(make_frame())
    assert H(df) == H(df.copy())
    assert H(df) == H(pickle.loads(pickle.dumps(df)))
    # The block layout does not matter: only the columns' content.
    x, y = np.arange(4.0), np.arange(4.0) * 2
    by_column = pd.DataFrame({"a": x, "b": y})
    from_2d = pd.DataFrame(np.column_stack([x, y]), columns=["a", "b"])
    assert H(by_column) == H(from_2d)


@pytest.mark.parametrize(
    "change",
    [
        lambda df: df.__setitem__("x", df["x"] + [0, 0, 1, 0, 0]),
        lambda df: setattr(df, "columns", ["X", *df.columns[1:]]),
        lambda df: df.set_axis(list("vwxyq"), axis=0),
        lambda df: df.__setitem__("n", df["n"].astype("int32")),
        lambda df: df.__setitem__("s", df["s"].astype(object)),
        lambda df: df.attrs.update(source="file"),
        lambda df: df["o"].iloc[3].append(4),
        lambda df: df.index.rename("other", inplace=True),
    ],
)
def test_pandas_changes_change_the_hash(change: object) -> None:
    df = make_frame()
    before = H(df)
    result = change(df)  # type: ignore[operator]
    changed = result if isinstance(result, pd.DataFrame) else df
    assert H(changed) != before


def test_pandas_series_and_indexes() -> None:
    s = pd.Series([1.0, 2.0], index=["a", "b"], name="s")
    assert H(s) == H(s.copy())
    assert H(s) != H(s.rename("t"))
    assert H(s) != H(s.set_axis(["a", "c"]))
    assert H(s) != H(s.to_frame())
    assert H(pd.RangeIndex(3)) != H(pd.Index([0, 1, 2]))
    assert H(pd.RangeIndex(3)) != H(pd.RangeIndex(4))
    mi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
    assert H(mi) == H(pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"]))
    assert H(mi) != H(pd.MultiIndex.from_tuples([("a", 1), ("b", 3)], names=["k", "n"]))
    assert H(pd.date_range("2020", periods=3)) != H(pd.date_range("2021", periods=3))
    tz = pd.date_range("2020", periods=3, tz="UTC")
    assert H(tz) != H(pd.date_range("2020", periods=3, tz="Europe/Paris"))
    hasher = ValueHasher()
    hasher.hash({"series": s})
    assert {"pandas", "numpy"} <= hasher.packages


def test_large_numeric_frame() -> None:
    df = pd.DataFrame(np.random.default_rng(1).random((100_000, 10)), columns=list("abcdefghij"))
    digest = H(df)
    df2 = df.copy()
    df2.iloc[99_999, 9] += 1
    assert H(df2) != digest
    assert H(df.copy()) == digest


# -- unhashable ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (lambda: (x for x in range(3)), "generator"),
        (lambda: open(os.devnull), "TextIOWrapper"),
        (lambda: threading.Lock(), "lock"),
        (lambda: [1, threading.Lock()], "lock"),
        (lambda: {"k": {"inner": threading.RLock()}}, "RLock"),
        (lambda: pd.DataFrame({"o": [threading.Lock()]}), "lock"),
    ],
)
def test_unhashable_values(make: object, type_name: str) -> None:
    value = make()  # type: ignore[operator]
    try:
        with pytest.raises(Unhashable) as info:
            H(value)
    finally:
        if hasattr(value, "close"):
            value.close()
    reason = info.value.reason
    assert "\n" not in reason
    assert type_name in reason
    assert str(info.value) == reason


def test_function_reading_unhashable_global_is_unhashable() -> None:
    ns = run_cell(
        "import threading\nLOCK = threading.Lock()\ndef f():\n    with LOCK:\n        return 1"
    )
    with pytest.raises(Unhashable, match="lock"):
        H(ns["f"])


# -- cross-process stability ------------------------------------------------------


STABILITY_SCRIPT = r"""
import datetime, decimal, json, pathlib, re, sys, textwrap
import numpy as np, pandas as pd
from incrcell.fingerprint import hash_value

ns = {"__name__": "__main__"}
exec(compile(textwrap.dedent('''
    import math
    FACTOR = {"alpha", "beta", "gamma"}
    def make(k):
        def scaled(x, *, y=2):
            return math.sqrt(x) * k * len(FACTOR) + y
        return scaled
    f = make(3)
    class Record:
        tags = frozenset({"x", "y", "z"})
        def __init__(self, name):
            self.name = name
            self.seen = {"a", "b", "c", "d"}
        def describe(self):
            return f"{self.name}: {sorted(self.seen)}"
'''), "<cell-1>", "exec"), ns)

shared = ["s", "h"]
values = {
    "dict_of_str": {"k%d" % i: "v%d" % i for i in range(50)},
    "set_of_str": {"word%d" % i for i in range(200)},
    "nested": [{"a", "b"}, frozenset({("x", 1), ("y", 2)}), (shared, shared), {"deep": {"set": {"q", "r"}}}],
    "array": np.arange(100, dtype=np.float64).reshape(10, 10),
    "object_array": np.array(["a", {"b"}, None], dtype=object),
    "frame": pd.DataFrame({"x": np.arange(3.0), "s": ["a", "b", "c"], "c": pd.Categorical(["u", "v", "u"])}),
    "function": ns["f"],
    "instance": ns["Record"]("r"),
    "class": ns["Record"],
    "dates": {datetime.date(2020, 1, day) for day in range(1, 29)},
    "stdlib": [decimal.Decimal("1.10"), pathlib.Path("a/b"), re.compile("x+", re.I)],
    "library_callables": {int, str, float, json.dumps, len, pd.DataFrame},
}
print(json.dumps({name: hash_value(value).hex() for name, value in values.items()}))
"""


def _hashes_in_subprocess(seed: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run(
        [sys.executable, "-c", STABILITY_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_hashes_are_stable_across_processes() -> None:
    first = _hashes_in_subprocess("1")
    second = _hashes_in_subprocess("4242")
    assert first == second
    assert len(set(first.values())) == len(first)


def test_numpy_and_pandas_are_never_imported() -> None:
    script = (
        "import sys\n"
        "from incrcell.fingerprint import hash_value\n"
        "hash_value([1, {'a'}, {'k': (2.5, b'x')}, len, sys])\n"
        "assert 'numpy' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


# -- normalise_source ------------------------------------------------------------


def test_normalise_source_ignores_formatting_and_comments() -> None:
    base = "x = 1 + 2\ny = [x,\n     3]\nprint(x, y)\n"
    variants = [
        "x = 1 + 2   \n\n\ny = [x,\n  3]\nprint(x, y)",
        "# leading comment\nx = 1 + 2  # trailing\ny = [x, 3]\n\n\nprint(x, y)\n",
        "x = 1 + \\\n    2\ny = [\n    x,\n    3,\n]\nprint(x, y)\n",
        "x = (1 + 2)\ny = [x, 3]\nprint(x, y)",
    ]
    for variant in variants:
        assert normalise_source(variant) == normalise_source(base), variant
        assert source_hash(variant) == source_hash(base)


@pytest.mark.parametrize(
    "other",
    [
        "x = 1 + 3\ny = [x, 3]\nprint(x, y)",
        "x = 1 + 2.0\ny = [x, 3]\nprint(x, y)",
        "z = 1 + 2\ny = [z, 3]\nprint(z, y)",
        "x = 1 + 2\ny = (x, 3)\nprint(x, y)",
        "x = 1 + 2\ny = [x, 3]\nprint(y, x)",
        "x = 1 + 2\ny = [x, 3]\nprint(x, y)\n'doc'",
        "x = 1 + 2\ny = [x, '3']\nprint(x, y)",
    ],
)
def test_normalise_source_detects_code_changes(other: str) -> None:
    assert source_hash(other) != source_hash("x = 1 + 2\ny = [x, 3]\nprint(x, y)")


def test_normalise_source_top_level_await_and_errors() -> None:
    assert "Await" in normalise_source("await foo()")
    broken = "def f(:\n    pass   \n\n  \nx = 1  \n"
    assert normalise_source(broken) == "def f(:\n    pass\nx = 1"
    assert source_hash(broken) == source_hash("def f(:\n    pass\n\nx = 1")
    normalise_source("a\0b")  # null byte: must not raise
    normalise_source("(" * 1000 + ")" * 1000)  # too deeply nested: must not raise
    assert len(source_hash("x")) == 32


# -- properties ------------------------------------------------------------------


atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
hashables = st.recursive(
    atoms, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6
)
values = st.recursive(
    atoms | hashables,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        | st.sets(hashables, max_size=4)
    ),
    max_leaves=20,
)


def strict(value: object) -> object:
    """A key that tells apart everything the hash must tell apart."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(strict(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, strict(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted(repr(strict(v)) for v in value)))
    return (type(value).__name__, value)


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_copies_hash_equal(value: object) -> None:
    assert H(value) == H(copy.deepcopy(value))
    assert H(value) == H(pickle.loads(pickle.dumps(value)))


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_property_strictly_different_values_hash_different(a: object, b: object) -> None:
    if strict(a) != strict(b):
        assert H(a) != H(b)
    else:
        assert H(a) == H(b)


def test_dataclass_and_enum_module_level() -> None:
    @dataclasses.dataclass(frozen=True)
    class Frozen:
        a: int

    class Flag(enum.Flag):
        A = 1
        B = 2

    assert H(Frozen(1)) == H(Frozen(1))
    assert H(Frozen(1)) != H(Frozen(2))
    assert H(Flag.A | Flag.B) != H(Flag.A)


# -- what a pickle may leave out (issue 9: lossy pickles, state inside functions) --


LOSSY = """
class Memo:
    def __init__(self):
        self.weights = [1, 2]
        self.cache = {}
    def __getstate__(self):
        state = self.__dict__.copy()
        state["cache"] = {}  # "transient": but a plain run keeps it
        return state

class Handle:
    __slots__ = ("path", "size")
    def __init__(self, path, size):
        self.path, self.size = path, size
    def __reduce__(self):
        return (Handle, (self.path, 0))
"""


def test_a_field_that_getstate_drops_is_still_hashed() -> None:
    ns = run_cell(LOSSY)
    empty, filled = ns["Memo"](), ns["Memo"]()
    filled.cache["k"] = 42
    assert hash_value(empty) != hash_value(filled)
    hasher = ValueHasher()
    hasher.hash(filled)
    assert hasher.doubtful  # its stored copy must be proven


def test_slots_that_reduce_drops_are_still_hashed() -> None:
    ns = run_cell(LOSSY)
    assert hash_value(ns["Handle"]("a", 1)) != hash_value(ns["Handle"]("a", 2))
    assert hash_value(ns["Handle"]("a", 1)) == hash_value(ns["Handle"]("a", 1))


def test_plain_and_library_classes_are_not_doubtful() -> None:
    ns = run_cell("class Plain:\n    def __init__(self):\n        self.x = [1]")
    for value in (
        ns["Plain"](),
        collections.OrderedDict(a=1),
        np.arange(3),
        pd.DataFrame({"a": [1]}),
    ):
        hasher = ValueHasher()
        hasher.hash(value)
        assert not hasher.doubtful, value


def test_a_filled_lru_cache_memo_cannot_be_hashed() -> None:
    ns = run_cell("import functools\nK = 2\n@functools.lru_cache\ndef g(x):\n    return x * K")
    g = ns["g"]
    before = hash_value(g)
    g(1)
    with pytest.raises(Unhashable, match="lru_cache memo"):
        hash_value(g)
    g.cache_clear()
    assert hash_value(g) == before


def test_closure_cells_shared_by_two_functions_are_doubtful() -> None:
    ns = run_cell(
        "def make():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n"
        "    def get():\n        return n\n    return inc, get\ninc, get = make()\n"
        "lone = make()[0]"
    )
    hasher = ValueHasher()
    hasher.hash(ns["lone"])
    assert not hasher.doubtful
    hasher.hash(ns["inc"])
    assert not hasher.doubtful
    hasher.hash(ns["get"])
    assert hasher.doubtful
    # a change through one of them shows in the other's digest
    before = hash_value(ns["get"])
    ns["inc"]()
    assert hash_value(ns["get"]) != before


def test_a_global_bound_to_its_own_builtin_hashes_as_no_global() -> None:
    # dill restores a function of another module's namespace (a dataclass's __repr__) with
    # private globals that hold the builtins it uses: that must not change its digest
    code = compile("def f(x):\n    return id(x)", "<cell>", "exec")
    plain: dict[str, object] = {"__name__": "__main__"}
    exec(code, plain)
    copied = {"__name__": "__main__", "id": id}
    exec(code, copied)
    assert hash_value(plain["f"]) == hash_value(copied["f"])
    shadowed = {"__name__": "__main__", "id": len}
    exec(code, shadowed)
    assert hash_value(shadowed["f"]) != hash_value(plain["f"])


def test_a_dataclass_restored_from_its_pickle_hashes_the_same() -> None:
    from incrcell.serialise import dumps, loads

    ns = run_cell(
        "from dataclasses import dataclass\n@dataclass(frozen=True, slots=True)\n"
        "class P:\n    x: int"
    )
    stored = dumps(ns["P"], own=[ns["P"]])
    copy = loads(stored.method, stored.stream, stored.buffers)
    assert copy is not ns["P"]
    assert hash_value(copy) == hash_value(ns["P"])


def test_a_local_module_is_the_same_wherever_the_checkout_lives(tmp_path: Path) -> None:
    """A colleague's or CI's checkout at another path keys the same (the team cache);
    moving code between the package's files does not."""
    from incrcell.packages import _local_source_hash

    for checkout in ("alice", "ci"):
        package = tmp_path / checkout / "pkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("from .a import f\n")
        (package / "a.py").write_text("def f():\n    return 1\n")
        (tmp_path / checkout / "helpers.py").write_text("X = 1\n")

    def of_package(checkout: str) -> str:
        return _local_source_hash(
            str(tmp_path / checkout / "pkg" / "__init__.py"), [str(tmp_path / checkout / "pkg")]
        )

    def of_module(checkout: str) -> str:
        return _local_source_hash(str(tmp_path / checkout / "helpers.py"), None)

    assert of_package("alice") == of_package("ci")
    assert of_module("alice") == of_module("ci")
    (tmp_path / "ci" / "pkg" / "a.py").rename(tmp_path / "ci" / "pkg" / "b.py")
    (tmp_path / "ci" / "pkg" / "__init__.py").write_text("from .b import f\n")
    (tmp_path / "alice" / "pkg" / "__init__.py").write_text("from .b import f\n")
    assert of_package("alice") != of_package("ci")
