"""What one cell execution left behind: the :class:`Entry` record and its JSON form.

An entry is plain JSON data, never pickled: it is read before any value is
trusted, and :func:`parse_entry` refuses anything that does not have exactly
the shape of an Entry.
"""

from __future__ import annotations

import dataclasses
import json
import re

from .codec import Unusable

NAME = re.compile(r"[0-9a-f]{8,128}")  # keys and digests: lowercase hex
_NAME = NAME


@dataclasses.dataclass
class Entry:
    """What one cell execution left behind, as JSON-serialisable data (never pickled itself)."""

    key: str  # hex cell key
    source: str  # the cell's raw source (for display in status/why)
    variables: dict[str, str]  # name -> content digest (hex) of the value it bound
    deleted: list[str]  # names the cell unbound
    outputs: list[dict]  # output events in order (JSON dicts; opaque to the store)
    result: str | None  # content digest of the cell's Out value, if any
    duration: float  # seconds the cell took to run
    created: float  # time.time() when recorded
    components: dict  # what went into the key (opaque JSON, for explaining misses)
    # notebook definitions (functions, classes) the values refer to by name, with the
    # digest they had when recorded: a restore needs exactly those (see serialise)
    requires: dict[str, str] = dataclasses.field(default_factory=dict)
    # files the cell read, with the content digest they had (see files.py), and the
    # working directory they were found from (relative paths resolve against it)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str = ""
    # the stored value (see Store.put_value) holding ``({name: value}, Out value, {generator:
    # state after}, {interpreter item: value after})``: all in one pickle, so that objects
    # shared between them stay shared
    bundle: str | None = None
    # global random generators the cell drew from (see randomness.py) -> digest of the state
    # it needs before (None: it seeded the generator before drawing)
    random: dict[str, str | None] = dataclasses.field(default_factory=dict)
    # name -> the packages hashing its value noted (ValueHasher.packages_of), so that a
    # restored value's digest can key the next cells without hashing it again
    packages: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # paths the cell wrote: path -> stored value holding a file's bytes (written back on a
    # hit), files.MISSING for a path it deleted, or a directory's or symlink's state
    # (files.DIRECTORY, TREE, LINK + target)
    written: dict[str, str] = dataclasses.field(default_factory=dict)
    # names the cell changed through objects they share with what it changed, not inputs
    # (``m`` when it writes ``col = m[:, 1]`` in place): name -> digest of their content
    # before it ran, which a restore requires (a restore brings their content after back)
    through: dict[str, str] = dataclasses.field(default_factory=dict)
    # directory listings, globs and existence/size/stat checks it made ("<what> <path>", see
    # files.observe) -> what they showed: inputs like the files it read
    probes: dict[str, str] = dataclasses.field(default_factory=dict)
    # the source of the in-memory files (IPython cells) its functions were compiled from:
    # filename -> text, registered in linecache on a restore (see engine.code_sources)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    # interpreter state the cell changed (see interpreter.py) -> digest of its value before,
    # which a restore needs; the values after are the fourth element of the bundle
    interpreter: dict[str, str] = dataclasses.field(default_factory=dict)
    # values small enough to travel inside the entry's own file (see Store.put): digest ->
    # [method code, how many of the file's parts after the JSON are theirs], in part order
    inline: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def digests(self) -> set[str]:
        """The stored values this entry needs as files of their own (not those inline)."""
        found = {digest for digest in self.written.values() if _NAME.fullmatch(digest)}
        if self.bundle is not None:
            found.add(self.bundle)
        return found - self.inline.keys()


def parse_entry(method: int, body: list[memoryview]) -> Entry:
    """An Entry from its file's body (its JSON, then the parts of its inline values),
    refusing anything that doesn't have the right shape."""
    data = json_body(body[:1])
    fields = {field.name for field in dataclasses.fields(Entry)}
    if not isinstance(data, dict) or data.keys() != fields:
        raise Unusable("is corrupt (not an entry)")
    entry = Entry(**data)
    shapes = [
        isinstance(entry.key, str),
        isinstance(entry.source, str),
        isinstance(entry.variables, dict)
        and all(
            isinstance(name, str) and isinstance(digest, str)
            for name, digest in entry.variables.items()
        ),
        isinstance(entry.deleted, list) and all(isinstance(name, str) for name in entry.deleted),
        isinstance(entry.outputs, list)
        and all(isinstance(output, dict) for output in entry.outputs),
        entry.result is None or isinstance(entry.result, str),
        entry.bundle is None or isinstance(entry.bundle, str),
        isinstance(entry.duration, (int, float)),
        isinstance(entry.created, (int, float)),
        isinstance(entry.components, dict),
        isinstance(entry.requires, dict)
        and all(isinstance(name, str) and isinstance(d, str) for name, d in entry.requires.items()),
        isinstance(entry.files, dict)
        and all(isinstance(path, str) and isinstance(d, str) for path, d in entry.files.items()),
        isinstance(entry.cwd, str),
        isinstance(entry.random, dict)
        and all(
            isinstance(name, str) and (d is None or isinstance(d, str))
            for name, d in entry.random.items()
        ),
        isinstance(entry.packages, dict)
        and all(
            isinstance(name, str) and isinstance(p, list) and all(isinstance(t, str) for t in p)
            for name, p in entry.packages.items()
        ),
        isinstance(entry.written, dict)
        and all(isinstance(path, str) and isinstance(d, str) for path, d in entry.written.items()),
        isinstance(entry.probes, dict)
        and all(isinstance(probe, str) and isinstance(d, str) for probe, d in entry.probes.items()),
        isinstance(entry.through, dict)
        and all(isinstance(name, str) and isinstance(d, str) for name, d in entry.through.items()),
        isinstance(entry.sources, dict)
        and all(isinstance(path, str) and isinstance(t, str) for path, t in entry.sources.items()),
        isinstance(entry.interpreter, dict)
        and all(isinstance(i, str) and isinstance(d, str) for i, d in entry.interpreter.items()),
        isinstance(entry.inline, dict)
        and all(
            _NAME.fullmatch(digest)
            and isinstance(shape, list)
            and len(shape) == 2
            and all(type(n) is int for n in shape)
            and shape[1] >= 1
            for digest, shape in entry.inline.items()
        )
        and sum(shape[1] for shape in entry.inline.values()) == len(body) - 1,
    ]
    if not all(shapes) or not all(_NAME.fullmatch(digest) for digest in entry.digests()):
        raise Unusable("is corrupt (not an entry)")
    return entry


def inline_parts(entry: Entry, body: list[memoryview]) -> dict[str, tuple[int, list[memoryview]]]:
    """The values inside an entry's file (parsed by :func:`parse_entry`): digest -> (method
    code, parts)."""
    found = {}
    start = 1
    for digest, (method, count) in entry.inline.items():
        found[digest] = (method, body[start : start + count])
        start += count
    return found


def json_bytes(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def json_body(body: list[memoryview]) -> object:
    try:
        return json.loads(bytes(body[0])) if len(body) == 1 else None
    except ValueError:
        return None


def entry_bytes(entry: Entry) -> bytes:
    """The JSON body of ``entry``'s file; raises TypeError/ValueError if it is not JSON data."""
    # shallow: asdict() would deep-copy every output first, for nothing
    return json_bytes({f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)})
