"""The golden cache files (tests/golden/, written by tests/golden/make.py): a small cache
of today's format, committed, so that a change of the format cannot go unnoticed.

* Today's code reads them: every entry verifies with the golden key and has the
  fields it had, and its values load back to what the cells made.
* Today's code writes the same: the same cells, run anew in a real kernel, leave
  the same layout: the same files, byte for byte where the bytes do not depend on
  the environment (values made of builtins, a file's content), and otherwise the
  same headers, entry fields and decoded values.

Changing the format therefore fails here until ``FORMAT_VERSION`` is bumped and the
files are regenerated (CONTRIBUTING.md, "Golden cache files").
"""

from __future__ import annotations

import json
import shutil
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from incrcell.serialise import loads
from incrcell.store import FORMAT_VERSION, Entry, FileBackend, Signer, Store
from incrcell.store.codec import ENTRY, KINDS, NOTE, VALUE, parts
from incrcell.store.signing import parse_private

from golden import make

SOURCES = dict(make.CELLS[1:])  # cell id -> source
# Entry fields whose values depend on the machine, the run or the installed packages
# (keys, times, paths, the files and settings of imported libraries): compared by type.
VARYING = {
    "key",
    "created",
    "duration",
    "components",
    "cwd",
    "files",
    "probes",
    "packages",
    "sources",
    "interpreter",
}
_PLAIN = (int, float, str, bytes, bool, type(None))


SIGNER = Signer(parse_private(make.KEY))


def _open(directory: Path) -> Store:
    return Store(FileBackend(directory), SIGNER, housekeeping=False)


@pytest.fixture
def golden(tmp_path: Path) -> Store:
    """A copy of the golden files (a store removes a file that fails verification)."""
    assert make.GOLDEN.is_dir(), (
        f"no golden files of format version {FORMAT_VERSION}: after a format change, "
        "run python tests/golden/make.py and commit tests/golden/"
    )
    copy = tmp_path / "golden"
    shutil.copytree(make.GOLDEN, copy)
    return _open(copy)


def _entries(store: Store) -> dict[str, Entry]:
    """The store's entries, by the cell source they were recorded for."""
    found = {}
    for listing in store.backend.list(KINDS[ENTRY]):
        entry = store.get(listing.name.rpartition("/")[2])
        assert entry is not None, f"{listing.name} does not load"
        found[entry.source] = entry
    return found


def _value(store: Store, digest: str) -> Any:
    stored = store.get_value(digest)
    return loads(stored.method, stored.stream, stored.buffers)


def _bundle(store: Store, entry: Entry) -> tuple[dict[str, Any], Any]:
    """(the variables, the Out value) an entry's bundle holds."""
    assert entry.bundle is not None
    variables, result, random_states, interpreter = _value(store, entry.bundle)
    assert isinstance(random_states, dict) and isinstance(interpreter, dict)
    return variables, result


def test_todays_code_reads_the_golden_files(golden: Store) -> None:
    entries = _entries(golden)
    assert set(entries) == set(SOURCES.values())
    cell = {cell_id: entries[source] for cell_id, source in SOURCES.items()}

    assert _bundle(golden, cell["values"]) == (
        {"x": 42, "s": "golden", "lst": [1, "two", 3.0, None]},
        None,
    )
    arr = _bundle(golden, cell["array"])[0]["arr"]
    assert arr.dtype == np.int64
    np.testing.assert_array_equal(arr, np.arange(12).reshape(3, 4))
    big = _bundle(golden, cell["big"])[0]["big"]  # a value file of its own
    np.testing.assert_array_equal(big, np.arange(10_000))
    df = _bundle(golden, cell["frame"])[0]["df"]
    pd.testing.assert_frame_equal(df, pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    area = _bundle(golden, cell["function"])[0]["area"]
    assert area(3) == 6 and area(3, 4) == 12

    outputs = cell["outputs"]
    assert outputs.outputs == [
        {"type": "stream", "name": "stdout", "text": "printed\n"},
        {
            "type": "display",
            "data": {"text/plain": "shown", "text/html": "<b>shown</b>"},
            "metadata": {},
            "transient": {},
            "update": False,
        },
        {"type": "result"},  # where the Out value was shown (entries before it have none)
    ]
    assert outputs.result is not None and _bundle(golden, outputs) == ({}, 43)

    written = cell["file"].written
    assert list(written) == [str(Path(cell["file"].cwd, "out.txt"))]
    assert _value(golden, written[str(Path(cell["file"].cwd, "out.txt"))]) == b"written\n"


@pytest.mark.kernel
def test_todays_code_writes_the_golden_files(golden: Store, tmp_path: Path) -> None:
    anew = _open(make.write_cache(tmp_path / "anew"))
    expected, got = _layout(golden), _layout(anew)
    assert got.keys() == expected.keys()
    for part in expected:  # one at a time, for a readable difference
        assert got[part] == expected[part], part


def _layout(store: Store) -> dict[str, Any]:
    """What a format change would change in a cache written by :data:`make.CELLS`."""
    root = Path(store.backend.root)
    files = [path.relative_to(root) for path in root.rglob("*") if path.is_file()]
    layout: dict[str, Any] = {
        "files": Counter(
            (path.parts[0], len(path.parts), path.parts[1] == path.name[:2]) for path in files
        )
    }
    for source, entry in _entries(store).items():
        layout[f"entry {source!r}"] = _entry_shape(entry)
        layout[f"entry file {source!r}"] = _header(store, ENTRY, entry.key)
        for digest in sorted({*entry.digests(), *entry.inline}):
            value = _value(store, digest)
            what = f"value {_decoded(value)!r} of {source!r}"
            if digest in entry.inline:  # inside the entry's file: (method, parts)
                layout[what] = entry.inline[digest]
            elif _plain(value):  # the bytes depend on nothing but the format
                layout[what] = bytes(store.backend.read(f"{KINDS[VALUE]}/{digest[:2]}/{digest}")[0])
            else:
                layout[what] = _header(store, VALUE, digest)[:2]
    layout["notes"] = sorted(_note(store, listing.name) for listing in store.backend.list("notes"))
    return layout


def _entry_shape(entry: Entry) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    for field, value in vars(entry).items():
        if field in VARYING:
            shape[field] = type(value).__name__
        elif field == "variables":
            shape[field] = sorted(value)  # their digests: functions' depend on the bytecode
        elif field == "written":
            shape[field] = {str(Path(path).relative_to(entry.cwd)): d for path, d in value.items()}
        elif field == "inline":
            shape[field] = sorted(value.values())
        elif field in ("bundle", "result"):
            shape[field] = value is not None
        else:
            shape[field] = value
    return shape


def _header(store: Store, kind: int, name: str) -> tuple[int, int, list[bool]]:
    """(kind, method, read-only flag of each part) of a cache file, verified."""
    data = store.backend.read(f"{KINDS[kind]}/{name[:2]}/{name}")[0]
    method, found = parts(data, kind, SIGNER)
    return kind, method, [part.readonly for part in found]


def _note(store: Store, name: str) -> tuple[str, list[str]]:
    """(what kind of note, the fields it holds)."""
    _, (note_name, body) = parts(store.backend.read(name)[0], NOTE, SIGNER)
    return bytes(note_name).decode().partition(":")[0], sorted(json.loads(bytes(body)))


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(map(_plain, value))
    if isinstance(value, dict):
        return all(map(_plain, value)) and all(map(_plain, value.values()))
    return isinstance(value, (*_PLAIN, types.ModuleType))


def _decoded(value: Any) -> Any:
    """A comparable form of a decoded value, whatever the versions of numpy and pandas."""
    if isinstance(value, (list, tuple)):
        return type(value)(map(_decoded, value))
    if isinstance(value, dict):
        return {key: _decoded(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, pd.DataFrame):
        return ("DataFrame", value.to_dict("list"))
    if isinstance(value, types.FunctionType):
        return ("function", value.__qualname__, value.__defaults__)
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    return value
