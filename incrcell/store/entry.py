"""What one cell execution left behind: the :class:`Entry` record and its JSON form.

An entry is plain JSON data, never pickled: it is read before any value is
trusted, and :func:`parse_entry` refuses anything that does not have exactly
the shape of an Entry.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable

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


#: The fields of an Entry, in order: an entry's JSON object has exactly these keys.
_FIELDS = {field.name: None for field in dataclasses.fields(Entry)}.keys()
_TEXT = {str}
_TEXT_OR_NONE = {str, type(None)}
_DICT = {dict}


def _texts(items: Iterable[object]) -> bool:
    """Whether every item is a string (the types JSON decodes to are exact)."""
    return set(map(type, items)) <= _TEXT


def _text_map(value: object) -> bool:
    """Whether ``value`` maps strings to strings (a JSON object's keys are strings)."""
    return type(value) is dict and (not value or _texts(value.values()))


def _inline_table(inline: dict, parts: int) -> bool:
    """Whether ``inline`` (digest -> [method code, part count]) accounts for exactly the
    ``parts`` parts after the JSON, each value having one at least."""
    for digest, shape in inline.items():
        if not (
            _NAME.fullmatch(digest)
            and type(shape) is list
            and len(shape) == 2
            and type(shape[0]) is int
            and type(shape[1]) is int
            and shape[1] >= 1
        ):
            return False
        parts -= shape[1]
    return parts == 0


def parse_entry(method: int, body: list[memoryview]) -> Entry:
    """An Entry from its file's body (its JSON, then the parts of its inline values),
    refusing anything that doesn't have the right shape.

    The JSON data is checked in one pass before the Entry is made of it: exactly
    the fields of an Entry, each of its type (JSON decodes to exact types, so
    ``type(x) is str`` is ``isinstance(x, str)`` here; numbers may be bools, as
    isinstance has it), the inline table accounting for every part after the
    JSON, and the values it needs as files of their own named by hex digests
    (the bundle; written files' values are such only if they are, see
    :meth:`Entry.digests`).
    """
    data = json_body(body[:1])
    if not (
        type(data) is dict
        and data.keys() == _FIELDS
        and type(data["key"]) is str
        and type(data["source"]) is str
        and _text_map(data["variables"])
        and type(deleted := data["deleted"]) is list
        and _texts(deleted)
        and type(outputs := data["outputs"]) is list
        and set(map(type, outputs)) <= _DICT
        and type(data["result"]) in _TEXT_OR_NONE
        and isinstance(data["duration"], (int, float))
        and isinstance(data["created"], (int, float))
        and type(data["components"]) is dict
        and _text_map(data["requires"])
        and _text_map(data["files"])
        and type(data["cwd"]) is str
        and (
            (bundle := data["bundle"]) is None or (type(bundle) is str and _NAME.fullmatch(bundle))
        )
        and type(random := data["random"]) is dict
        and set(map(type, random.values())) <= _TEXT_OR_NONE
        and type(packages := data["packages"]) is dict
        and all(type(names) is list and _texts(names) for names in packages.values())
        and _text_map(data["written"])
        and _text_map(data["through"])
        and _text_map(data["probes"])
        and _text_map(data["sources"])
        and _text_map(data["interpreter"])
        and type(inline := data["inline"]) is dict
        and _inline_table(inline, len(body) - 1)
    ):
        raise Unusable("is corrupt (not an entry)")
    # every field checked: the decoded object becomes the instance's attributes, as
    # Entry(**data) would make them (a plain dataclass: no __post_init__, no slots)
    entry = object.__new__(Entry)
    entry.__dict__ = data
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


#: One encoder for every body written: ``json.dumps`` with these options builds a new one
#: per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_bytes(data: object) -> bytes:
    return _ENCODER.encode(data).encode()


#: One decoder for every read: ``json.loads`` would sniff the encoding of bytes (ours are
#: always UTF-8, see json_bytes) and check its arguments anew each time.
_DECODER = json.JSONDecoder()


def json_body(body: list[memoryview]) -> object:
    """The JSON document that is ``body``'s only part; None if it is not one (or not UTF-8)."""
    try:
        return _DECODER.decode(str(body[0], "utf-8")) if len(body) == 1 else None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def entry_bytes(entry: Entry, inline: dict[str, list[int]] | None = None) -> bytes:
    """The JSON body of ``entry``'s file, with ``inline`` for its field of that name if given;
    raises TypeError/ValueError if it is not JSON data."""
    # shallow: asdict() would deep-copy every output first, for nothing
    fields = {name: getattr(entry, name) for name in _FIELDS}
    if inline is not None:
        fields["inline"] = inline
    return json_bytes(fields)
