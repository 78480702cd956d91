"""Values to bytes and back: fast path, notebook code by value, refusals."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings

import dill
import numpy as np
import pandas as pd
import pytest

from incrcell.serialise import Serialised, Unpicklable, dumps, loads


def roundtrip(obj: object) -> tuple[Serialised, object]:
    serialised = dumps(obj)
    return serialised, loads(serialised.method, serialised.stream, serialised.buffers)


def notebook(source: str) -> dict:
    """A namespace like a notebook's: what it defines has ``__module__ == "__main__"``."""
    namespace = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)
    return namespace


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        -(10**40),
        2.5,
        1 + 2j,
        "héllo",
        b"\x00bytes",
        [1, (2, 3), {"a": {4, 5}}],
        frozenset({1}),
        range(3),
    ],
)
def test_plain_values_round_trip_with_the_c_pickler(value: object) -> None:
    serialised, restored = roundtrip(value)
    assert serialised.method == "pickle"
    assert serialised.buffers == []
    assert restored == value
    assert serialised.nbytes == len(serialised.stream)


def test_numpy_buffers_are_views_of_the_array_memory() -> None:
    array = np.arange(100_000, dtype=np.float64)
    serialised = dumps(array)
    assert len(serialised.buffers) == 1
    assert serialised.buffers[0].nbytes == array.nbytes
    assert serialised.nbytes == len(serialised.stream) + array.nbytes
    view = np.frombuffer(serialised.buffers[0], dtype=array.dtype)
    assert np.shares_memory(view, array)  # no copy was made
    array[0] = 42.0
    assert view[0] == 42.0


def test_numpy_arrays_load_on_top_of_the_given_buffers() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    serialised = dumps(array)
    memory = bytearray(serialised.buffers[0])
    restored = loads(serialised.method, serialised.stream, [memoryview(memory)])
    np.testing.assert_array_equal(restored, array)
    assert restored.flags.writeable
    restored[0, 0] = 99
    assert memory[:4] == (99).to_bytes(4, sys.byteorder)  # built on the buffer, not a copy
    frozen = loads(serialised.method, serialised.stream, [memoryview(memory).toreadonly()])
    assert not frozen.flags.writeable


def test_fortran_ordered_and_strided_arrays_round_trip() -> None:
    fortran = np.asfortranarray(np.arange(20.0).reshape(4, 5))
    strided = np.arange(20.0)[::3]
    _, (restored_fortran, restored_strided) = roundtrip((fortran, strided))
    np.testing.assert_array_equal(restored_fortran, fortran)
    assert restored_fortran.flags.f_contiguous
    np.testing.assert_array_equal(restored_strided, strided)


def test_pandas_frames_round_trip_with_out_of_band_blocks() -> None:
    frame = pd.DataFrame(
        {"x": np.arange(1000), "y": np.linspace(0, 1, 1000), "name": [f"n{i}" for i in range(1000)]}
    )
    serialised, restored = roundtrip(frame)
    assert serialised.method == "pickle"
    assert serialised.buffers
    pd.testing.assert_frame_equal(restored, frame)


def test_shared_references_keep_their_identity_within_one_value() -> None:
    shared = [1, 2]
    array = np.zeros(10)
    _, restored = roundtrip({"a": shared, "b": shared, "arrays": (array, array)})
    assert restored["a"] is restored["b"]
    assert restored["arrays"][0] is restored["arrays"][1]


def test_modules_are_pickled_by_name() -> None:
    serialised, restored = roundtrip({"np": np})
    assert serialised.method == "pickle"
    assert restored["np"] is np


def test_notebook_functions_are_pickled_by_value_with_the_globals_they_use() -> None:
    namespace = notebook(
        """
        K = 3
        UNUSED = "not read by f"
        def f(x):
            return x + K
        """
    )
    _, restored = roundtrip(namespace["f"])
    assert restored is not namespace["f"]  # by reference it would be __main__.f, absent here
    assert restored(1) == 4
    # Not bound to a module namespace: it carries a copy of the globals it reads, and only those.
    assert restored.__globals__ is not namespace
    assert "UNUSED" not in restored.__globals__


def test_notebook_classes_and_instances_are_pickled_by_value() -> None:
    namespace = notebook(
        """
        from dataclasses import dataclass
        SCALE = 10
        class Point:
            def __init__(self, x):
                self.x = x
            def scaled(self):
                return self.x * SCALE
        @dataclass
        class Pair:
            left: object
            right: object
        """
    )
    Point, Pair = namespace["Point"], namespace["Pair"]
    value = {"deep": [Pair(Point(1), Point(2))], "cls": Point}
    _, restored = roundtrip(value)
    pair = restored["deep"][0]
    assert (pair.left.scaled(), pair.right.scaled()) == (10, 20)
    assert type(pair.left) is restored["cls"]  # one class object within one value...
    assert restored["cls"] is not Point  # ...rebuilt from the value, not looked up by name


def test_lambdas_and_local_functions_are_pickled_by_value() -> None:
    def make_adder(n: int):
        def add(x: int) -> int:
            return x + n

        return add

    _, restored = roundtrip([lambda x: x * 2, make_adder(5)])
    assert restored[0](4) == 8
    assert restored[1](1) == 6


def test_many_instances_share_one_pickled_class_and_stay_on_the_c_pickler() -> None:
    namespace = notebook("class Row:\n    def __init__(self, i):\n        self.i = i\n")
    one = dumps([namespace["Row"](0)])
    many = dumps([namespace["Row"](i) for i in range(1000)])
    assert len(many.stream) - len(one.stream) < 30 * 1000  # the class is not repeated per instance
    restored = loads(many.method, many.stream, many.buffers)
    assert len({type(row) for row in restored}) == 1
    assert [row.i for row in restored] == list(range(1000))


def test_arrays_captured_by_notebook_code_stay_out_of_band() -> None:
    array = np.arange(100_000.0)
    serialised, restored = roundtrip(lambda: array.sum())
    assert any(
        np.shares_memory(np.frombuffer(buffer, dtype=np.float64), array)
        for buffer in serialised.buffers
    )
    assert restored() == array.sum()


def test_user_dill_settings_do_not_make_notebook_code_pickle_by_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(dill.settings, "byref", True)
    namespace = notebook("class Thing:\n    def hello(self):\n        return 'hi'\n")
    _, restored = roundtrip(namespace["Thing"]())
    assert restored.hello() == "hi"  # by reference, __main__.Thing would not exist here


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (threading.Lock, "cannot pickle '_thread.lock' object"),
        (lambda: (i for i in range(3)), "cannot pickle 'generator' object"),
    ],
)
def test_unpicklable_values_raise_with_a_one_line_reason(make, reason: str) -> None:
    with pytest.raises(Unpicklable) as raised:
        dumps({"value": make()})
    assert raised.value.reason == reason
    assert "\n" not in raised.value.reason


def test_resources_inside_notebook_objects_are_refused_not_reopened(tmp_path) -> None:
    namespace = notebook(
        "class Holder:\n    def __init__(self, resource):\n        self.resource = resource\n"
    )
    with open(tmp_path / "log.txt", "w") as handle:
        for resource in (handle, threading.Lock()):
            with pytest.raises(Unpicklable, match="cannot pickle"):
                dumps(namespace["Holder"](resource))


def test_notebook_objects_that_reduce_to_a_global_name_are_refused() -> None:
    namespace = notebook("class Singleton:\n    def __reduce__(self):\n        return 'THE_ONE'\n")
    with pytest.raises(Unpicklable, match="by reference"):
        dumps(namespace["Singleton"]())


def test_notebook_enums_are_refused_rather_than_pickled_by_reference() -> None:
    namespace = notebook("import enum\nclass Colour(enum.Enum):\n    RED = 1\n")
    filters = list(warnings.filters)
    with pytest.raises(Unpicklable):
        dumps(namespace["Colour"].RED)
    assert warnings.filters == filters  # the failed attempt left nothing behind
    assert loads("pickle", dumps([1, 2]).stream, []) == [1, 2]


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError):
        loads("marshal", b"", [])


WRITER = """
import sys
from incrcell.serialise import dumps
K = 3
def f():
    return K
serialised = dumps(f)
assert not serialised.buffers
open(sys.argv[1], "wb").write(serialised.stream)
"""

READER = """
import sys
from incrcell.serialise import loads
def f():
    return "a different f, defined in the loading session"
g = loads("pickle", open(sys.argv[1], "rb").read(), [])
assert g is not f and g.__name__ == "f"
assert g.__globals__ is globals()  # bound to the loading __main__, like the original
try:
    g()
except NameError:
    print("NameError")
K = 3  # what the engine does when it restores the cell that assigned K
print(g())
K = 7  # a later cell rebinds K: the function sees it, as the original would
print(g())
"""


def test_main_function_round_trips_across_processes_by_value(tmp_path) -> None:
    stream = tmp_path / "f.pickle"
    writer, reader = tmp_path / "writer.py", tmp_path / "reader.py"
    writer.write_text(WRITER)
    reader.write_text(READER)
    subprocess.run([sys.executable, str(writer), str(stream)], check=True)
    result = subprocess.run(
        [sys.executable, str(reader), str(stream)], check=True, capture_output=True, text=True
    )
    assert result.stdout.split() == ["NameError", "3", "7"]


def test_an_array_viewing_an_unnamed_buffer_is_the_anchor_of_its_views() -> None:
    # a restored `m` views the buffer it was loaded on; `col = m[:, 1]` views the same memory
    _, m = roundtrip(np.arange(16.0).reshape(4, 4))
    assert m.base is not None
    col = m[:, 1]
    values = {"col": col, "m": m}
    serialised = dumps(values, own=[col, m])
    loaded = loads(serialised.method, serialised.stream, serialised.buffers)
    loaded["col"] *= 3
    assert loaded["m"][1, 1] == 15.0 and np.shares_memory(loaded["col"], loaded["m"])


def test_pickles_that_leave_state_out_lose_it() -> None:
    """What the engine's record-time round trip exists for: pickle itself does not complain."""
    ns = notebook("""
        class Memo:
            def __init__(self):
                self.cache = {}
            def __getstate__(self):
                return {"cache": {}}
        def make():
            n = [0]
            return (lambda: n.append(1)), (lambda: len(n))
        """)
    memo = ns["Memo"]()
    memo.cache["k"] = 1
    _, restored = roundtrip(memo)
    assert restored.cache == {}
    inc, get = ns["make"]()
    _, (inc2, get2) = roundtrip((inc, get))
    inc2()
    assert get2() == 1  # the two closures no longer share `n`


def test_a_notebook_base_class_is_referred_to_by_name_inside_a_class_stored_by_value() -> None:
    import types as _types

    main = _types.ModuleType("__main__")
    exec("class Base:\n    pass\nclass Sub(Base):\n    pass", main.__dict__)
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = main
    try:
        stored = dumps(main.Sub, own=[main.Sub])
        copy = loads(stored.method, stored.stream, stored.buffers)
    finally:
        sys.modules["__main__"] = saved
    assert copy is not main.Sub and copy.__bases__ == (main.Base,)  # not a copy of Base
