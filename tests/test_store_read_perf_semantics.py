"""What the cheaper read path of a cache entry must still refuse.

:func:`~incrcell.store.entry.parse_entry` checks an entry's JSON in one pass
before any Entry is made of it, and :meth:`Store._read` reads a small file at
once: every malformed shape of every field is still refused (a miss with one
line, the file removed), and a file is still checked whole before it is used.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from incrcell.store import CacheWarning, Entry, Store, StoreError, open_store
from incrcell.store.codec import ENTRY, Unusable, frame
from incrcell.store.entry import entry_bytes, json_bytes, parse_entry
from incrcell.store.signing import Signer

KEY = b"k" * 32
OTHER = b"o" * 32
KEY_A = "a1" * 16
DIGEST = "d4" * 16
BUNDLE = "b5" * 16


def valid() -> dict:
    """Every field of an Entry holding a value of its shape, no collection empty."""
    return {
        "key": KEY_A,
        "source": "x = 1",
        "variables": {"x": DIGEST},
        "deleted": ["y"],
        "outputs": [{"name": "stdout", "text": "1"}],
        "result": DIGEST,
        "duration": 0.5,
        "created": 1700000000,
        "components": {"source": DIGEST, "inputs": {"a": [1, None]}},
        "requires": {"f": DIGEST},
        "files": {"data.csv": DIGEST},
        "cwd": "/work",
        "bundle": BUNDLE,
        "random": {"random": DIGEST, "numpy": None},
        "packages": {"x": ["numpy", "pandas"]},
        "written": {"out.txt": DIGEST, "gone.txt": "<missing>"},
        "through": {"m": DIGEST},
        "probes": {"exists data.csv": "<exists>"},
        "sources": {"<ipython-input-1>": "def f(): pass"},
        "interpreter": {"state: locale": DIGEST},
        "inline": {BUNDLE: [1, 2]},
    }


def body_of(data: object, inline_parts: int = 2) -> list[memoryview]:
    return [memoryview(json_bytes(data)), *(memoryview(b"p") for _ in range(inline_parts))]


def test_a_valid_entry_parses_to_the_entry_it_was_made_from() -> None:
    entry = parse_entry(0, body_of(valid()))
    assert entry == Entry(**valid())
    assert entry.digests() == {DIGEST}  # the bundle travels inline; "<missing>" is no value
    again = parse_entry(0, [memoryview(entry_bytes(entry)), memoryview(b"p"), memoryview(b"p")])
    assert again == entry


@pytest.mark.parametrize("field", list(valid()))
def test_each_field_of_the_wrong_type_is_refused(field: str) -> None:
    wrong = "text" if not isinstance(valid()[field], str) else 7
    with pytest.raises(Unusable, match="not an entry"):
        parse_entry(0, body_of({**valid(), field: wrong}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("variables", {"x": 1}),
        ("variables", {"x": None}),
        ("variables", []),
        ("deleted", ["y", 1]),
        ("deleted", {"y": "z"}),
        ("outputs", [{"name": "stdout"}, "text"]),
        ("outputs", {}),
        ("result", 1),
        ("result", ["a"]),
        ("duration", "0.5"),
        ("duration", None),
        ("created", None),
        ("created", [1]),
        ("components", []),
        ("components", None),
        ("requires", {"f": None}),
        ("files", {"data.csv": 1}),
        ("cwd", None),
        ("bundle", 1),
        ("bundle", "NOT-HEX"),
        ("bundle", "abc"),  # too short for a digest
        ("random", {"random": 1}),
        ("random", {"random": ["a"]}),
        ("random", []),
        ("packages", {"x": "numpy"}),
        ("packages", {"x": ["numpy", 1]}),
        ("packages", {"x": None}),
        ("written", {"out.txt": 1}),
        ("written", {"out.txt": None}),
        ("through", {"m": 1}),
        ("probes", {"exists data.csv": True}),
        ("sources", {"<ipython-input-1>": None}),
        ("interpreter", {"state: locale": 0}),
        ("inline", {"zz": [1, 2]}),  # not a digest
        ("inline", {BUNDLE: [1]}),
        ("inline", {BUNDLE: [1, 2, 3]}),
        ("inline", {BUNDLE: [1, 0]}),  # a value of no part
        ("inline", {BUNDLE: ["1", 2]}),
        ("inline", {BUNDLE: [1, 2.0]}),
        ("inline", {BUNDLE: [True, 2]}),
        ("inline", {BUNDLE: [1, 1]}),  # one of the two parts unaccounted for
        ("inline", {BUNDLE: [1, 3]}),  # more parts than the file has
        ("inline", [[BUNDLE, 1, 2]]),
    ],
)
def test_each_malformed_value_inside_a_field_is_refused(field: str, value: object) -> None:
    with pytest.raises(Unusable, match="not an entry"):
        parse_entry(0, body_of({**valid(), field: value}))


def test_a_bundle_that_is_not_inline_must_still_be_a_digest() -> None:
    """Without inline values, the bundle is a value file of its own: it must be named by a digest."""
    entry = parse_entry(0, body_of({**valid(), "inline": {}}, inline_parts=0))
    assert entry.digests() == {BUNDLE, DIGEST}
    with pytest.raises(Unusable, match="not an entry"):
        parse_entry(0, body_of({**valid(), "inline": {}, "bundle": "b5" * 3}, inline_parts=0))


@pytest.mark.parametrize("value", [0, 2, True, 1.5])
def test_numbers_are_accepted_as_they_always_were(value: object) -> None:
    assert parse_entry(0, body_of({**valid(), "duration": value})).duration == value


@pytest.mark.parametrize(
    "body",
    [
        [memoryview(json_bytes([valid()]))],  # not an object
        [memoryview(json_bytes(None))],
        [memoryview(json_bytes({k: v for k, v in valid().items() if k != "cwd"}))],  # missing
        [memoryview(json_bytes({**valid(), "extra": 1}))],  # a field no Entry has
        [memoryview(json_bytes(valid())[:-1])],  # not JSON
        [memoryview(json.dumps(valid()).encode("utf-16"))],  # not UTF-8
        [memoryview(b"\xff" + json_bytes(valid()))],
        [],  # no JSON at all
    ],
)
def test_a_body_that_is_not_an_entry_object_is_refused(body: list[memoryview]) -> None:
    with pytest.raises(Unusable, match="not an entry"):
        parse_entry(0, [*body, memoryview(b"p"), memoryview(b"p")])


# -- through the store ---------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def reader(root: Path, key: bytes = KEY) -> Store:
    return open_store(root, signer=Signer(key), housekeeping=False)


def write_entry(store: Store, data: dict, parts: list[bytes], key: bytes = KEY) -> Path:
    obj = f"entries/{KEY_A[:2]}/{KEY_A}"
    chunks, _ = frame(ENTRY, 0, KEY_A, [json_bytes(data), *parts], Signer(key))
    store.backend.write(obj, chunks)
    return Path(store.backend._path(obj))  # type: ignore[attr-defined]


def test_a_signed_entry_of_the_wrong_shape_is_a_miss_and_removed(root: Path) -> None:
    """Signed by a trusted key, so only the shape check stands between it and its use."""
    store = reader(root)
    path = write_entry(store, {**valid(), "written": {"out.txt": 1}}, [b"p", b"p"])
    with pytest.warns(CacheWarning, match="not an entry"):
        assert reader(root).get(KEY_A) is None
    assert not path.exists()


def test_a_well_formed_entry_is_read_with_its_inline_values(root: Path) -> None:
    store = reader(root)
    write_entry(store, {**valid(), "written": {}}, [b"stream", b"buffer"])
    found = reader(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entry = found.get(KEY_A)
    assert entry == Entry(**{**valid(), "written": {}})
    stored = found.get_value(BUNDLE)
    assert (stored.method, bytes(stored.stream), [bytes(b) for b in stored.buffers]) == (
        "pickle",
        b"stream",
        [b"buffer"],
    )


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda data: data[:-1], "truncated"),
        (lambda data: data + b"\0", "trailing bytes"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch"),
        (lambda data: data[:100], "truncated"),  # shorter than a header
    ],
)
def test_a_small_file_read_at_once_is_still_checked_whole(
    root: Path, damage: object, why: str
) -> None:
    store = reader(root)
    path = write_entry(store, {**valid(), "written": {}}, [b"stream", b"buffer"])
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.warns(CacheWarning, match=why):
        assert reader(root).get(KEY_A) is None
    with pytest.raises(StoreError, match="not in the cache"):
        reader(root).get_value(BUNDLE)


def test_a_small_file_of_an_untrusted_signer_is_refused_unparsed(root: Path) -> None:
    store = reader(root)
    write_entry(store, {**valid(), "written": {}}, [b"stream", b"buffer"], key=OTHER)
    with pytest.warns(CacheWarning, match="untrusted key"):
        assert reader(root).get(KEY_A) is None
