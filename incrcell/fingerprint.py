"""Content fingerprints of Python values and cell sources.

A cell's cache key is made of the hash of its normalised source and the hash
of every value it reads. Two promises shape everything here:

1. Never a stale result: two values that could make a cell behave
   differently must never hash the same *by construction* (only a 128-bit
   collision could do it). Whatever cannot be hashed faithfully raises
   :class:`Unhashable`, and the engine then simply runs the cell.
2. Fast: values are streamed through the C pickler straight into an xxh3
   state, numpy buffers are hashed in place, and each object is read once.

Equal values should also hash equal across processes and hash seeds; where
that cannot be guaranteed cheaply (noted below) the cost is a missed cache
hit, never a wrong one.

How a value is hashed
---------------------
Every value is pickled (protocol 5, never loaded) into an ``xxh3_128`` state.
Two pickler hooks give the stream the semantics a cache key needs.

``persistent_id`` is called by the C pickler for *every* object, including
exact lists, dicts and sets, which ``reducer_override`` never sees. It

* tracks identity: each object with identity (anything but int, float,
  complex, str, bytes, bool, None, tuple, frozenset, code, numpy scalars and
  dtypes, and a few immutable stdlib types such as dates) gets a visit index
  on its first visit; a later visit (aliasing, or a cycle back to an object
  still being hashed) is emitted as a back-reference to that index. The
  pickler runs in "fast" mode (no pickle memo), so immutable values hash by
  value only, while the sharing structure of mutable objects is part of the
  hash: ``[a, a]`` and ``[a, copy(a)]`` differ, because an in-place mutation
  through one alias behaves differently. numpy arrays that view the same
  memory count as aliases too (with their byte offset);
* replaces objects whose pickle would be wrong, unstable or impossible by a
  tagged tuple of their content, which the pickler then serialises normally
  (so nested values go through the same hooks): user functions and classes
  (code and the values they read, not a by-name reference), code objects,
  closure cells, bound methods, modules, sets, numpy arrays and scalars,
  pandas objects, properties, static/class methods, lru_cache wrappers,
  weak references, memoryviews.

``reducer_override`` sees every other non-basic object and refuses those
that pickle would save *by name* from ``__main__`` (a ``__reduce__`` that
returns a global name): a name says nothing about content.

Digests of numpy arrays and pandas objects are computed on their own, from
their content only, and memoised by the :class:`ValueHasher`, so a large
array reached again (within one value or from another value) is not re-read.

Known limits (the engine author must know these)
------------------------------------------------
* Library code is identified by name: functions and classes importable as
  ``sys.modules[__module__]`` + ``__qualname__`` (outside ``__main__``) and
  modules installed under the interpreter's prefixes are hashed by name, and
  their top-level package is added to :attr:`ValueHasher.packages`. That
  includes functions and classes from *local* modules (e.g. ``mylib`` next to
  the notebook): the engine must version such packages by content.
* Module objects are hashed by name (library) or by the bytes of their file
  (local), never by their live attributes: a runtime assignment such as
  ``mylib.THRESHOLD = 5`` is invisible here.
* Other objects are hashed through their pickle reduction. Instances of the
  user's own classes (``__main__`` or local modules) that customise pickling
  are hashed by what they hold (``__dict__``, slots) as well, and mark the
  hasher :attr:`ValueHasher.doubtful`, like closure cells shared by two
  functions: the engine then proves that a stored copy reloads to the same
  digest. Library classes are trusted: state their reduction leaves out is
  not hashed.
* A notebook function's ``functools.lru_cache`` memo cannot be read: a
  wrapper whose memo holds results is :class:`Unhashable`.
* Library classes whose pickling changes them, or whose state holds numbers
  the process assigns, are hashed without those (``_SIDE_EFFECTS``,
  ``_PROCESS_LOCAL``: matplotlib's callback-id counter, a pyplot figure's
  number); a restore does not bring them back as they were either. Other
  library state a pickle does not bring back as hashed (a ``__setstate__``
  dropping or rebuilding state) is measured by the engine when it records a
  value (:attr:`ValueHasher.reduced`), and keyed by its copy's digest
  (:func:`restored_digest`, :data:`StandIn`).
* Arrays viewing memory held by a non-array object alias only when their
  bytes overlap: such an object may hold several allocations whose distance
  in memory means nothing.
* Sets hash independently of iteration order when all elements are
  value-like (atoms, tuples/frozensets of them, library classes/functions);
  sets of objects with identity are hashed in iteration order (may differ
  between processes: a missed hit only).
* Aliasing is captured within one hashed value, not between values hashed
  by separate :meth:`ValueHasher.hash` calls; nor between a pandas object's
  internals and the rest of a value.
* ``-0.0`` and ``0.0`` (and NaNs with different payloads) hash differently.
* A hasher assumes values are not mutated during its life (memo by id).
"""

from __future__ import annotations

import ast
import builtins
import copyreg
import functools
import pickle
import struct
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

import xxhash

from .analysis import notebook_definition, parse_cell, referenced_globals
from .packages import LOCAL, module_fingerprint

__all__ = [
    "HASH_FORMAT",
    "StandIn",
    "Unhashable",
    "ValueHasher",
    "hash_bytes",
    "hash_value",
    "normalise_source",
    "restored_digest",
    "source_hash",
]

#: Bump whenever the scheme changes, so that old cache entries can never be
#: matched by keys computed under different rules.
HASH_FORMAT = 3


#: incrcell's own top-level package, whose objects are never the user's code.
_OWN = __name__.partition(".")[0]


class Unhashable(Exception):
    """A value whose content cannot be hashed faithfully.

    Raising it is the safe outcome: the engine cannot build a key and simply
    runs the cell. ``reason`` is a one-line human explanation such as
    ``"generator cannot be pickled: cannot pickle 'generator' object"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hash_bytes(data: bytes | memoryview) -> bytes:
    """Return the 16-byte xxh3_128 digest of raw bytes."""
    return xxhash.xxh3_128_digest(data)


class StandIn(NamedTuple):
    """A value recorded or restored under the :func:`restored_digest` of its stored copy.

    ``value``, whose content digest was ``digest`` (None: not known) when it was recorded
    or restored, keys the cells reading it with ``stands_for`` for as long as it still
    hashes to ``digest`` or is that very copy (see :meth:`ValueHasher.hash`). Not a plain
    tuple, so that sharing.sharers does not walk up through it as through a container.
    """

    value: object
    digest: bytes | None
    stands_for: bytes


def restored_digest(copy_digest: bytes) -> bytes:
    """The digest that stands for a value whose stored copy hashes differently from it.

    A library's pickle may not bring back everything the value held (scikit-learn's
    ``Bunch`` drops its ``__dict__``, matplotlib copies the views of an array apart): the
    copy a restore binds then hashes to ``copy_digest``, not to the value's own digest, and
    every cell reading it would miss after a restart. Both the recorded value and its
    restored copies are keyed by this digest instead: a function of what the cache holds,
    and distinct from every plain content digest (a value that merely equals the copy,
    without standing for the recorded one, keeps its own digest).
    """
    return hash_bytes(b"restored\0" + copy_digest)


def hash_value(obj: object) -> bytes:
    """Return the 16-byte content digest of ``obj``; raises :class:`Unhashable`.

    Convenience for a one-off hash; use one :class:`ValueHasher` per cell key
    so that shared objects are hashed once and ``packages`` is collected.
    """
    return ValueHasher().hash(obj)


def normalise_source(source: str) -> str:
    """Return a canonical form of a cell's Python source.

    Comment-only and whitespace-only edits (blank lines, trailing spaces,
    indentation inside brackets, line continuations, redundant parentheses)
    give the same result; any change to the code does not, because the result
    is the dump of the AST without positions. Top-level ``await`` is allowed
    as in IPython. Sources that do not parse are returned with lines
    right-stripped and blank lines dropped: the cell will fail anyway, and
    this function must never raise.
    """
    try:
        return _dump(parse_cell(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: null bytes (before 3.12); RecursionError/MemoryError:
        # pathologically nested code that the parser refuses.
        return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())


# ast.dump's show_empty=False, the default from Python 3.13 on: empty lists and None
# fields are left out, except in the nodes where None is the value itself
_SHOW_EMPTY = sys.version_info < (3, 13)
_NONE_IS_VALUE = (ast.Constant, ast.MatchSingleton)
# AST class -> (``Name(``, its fields as (name, ``name=``, None is the class's default))
_FORMS: dict[type[ast.AST], tuple[str, tuple[tuple[str, str, bool], ...], bool]] = {}


def _form(cls: type[ast.AST]) -> tuple[str, tuple[tuple[str, str, bool], ...], bool]:
    form = _FORMS[cls] = (
        f"{cls.__name__}(",
        tuple((name, f"{name}=", getattr(cls, name, ...) is None) for name in cls._fields),
        _SHOW_EMPTY or issubclass(cls, _NONE_IS_VALUE),
    )
    return form


def _dump(tree: ast.AST) -> str:
    """``ast.dump(tree)`` (fields annotated, no positions), the same string, built in one
    list instead of a string per node: two to three times faster, for every cell's key.
    One Python frame per level of the tree, as ast.dump: code as deeply nested as it can
    dump (a long ``a + b + ...``) does not exceed the recursion limit here either."""
    parts: list[str] = []
    add = parts.append
    forms = _FORMS

    def node(item: ast.AST) -> None:
        cls = type(item)
        head, fields, show_empty = forms.get(cls) or _form(cls)
        add(head)
        first = True
        for name, label, optional in fields:
            try:
                field = getattr(item, name)
            except AttributeError:
                continue
            if field is None:
                if optional or not show_empty:
                    continue
            elif not show_empty and field == []:
                continue
            if not first:
                add(", ")
            first = False
            add(label)
            if isinstance(field, ast.AST):
                node(field)
            elif isinstance(field, list):
                add("[")
                for i, element in enumerate(field):
                    if i:
                        add(", ")
                    if isinstance(element, ast.AST):
                        node(element)
                    else:  # None (a ``**`` in a dict display), a name (``global``)...
                        add(repr(element))
                add("]")
            else:
                add(repr(field))
        add(")")

    node(tree)
    return "".join(parts)


def source_hash(source: str) -> str:
    """Return the hex xxh3_128 digest of :func:`normalise_source` of ``source``."""
    text = normalise_source(source).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_128_hexdigest(text)


class Collected(set[int]):
    """The ids :meth:`ValueHasher.collect` gathers, holding their objects too: a temporary
    a reduction made while hashing (a state dict, an argument tuple) would otherwise be
    freed and its id reused by a new object of the cell, which would then pass for an
    object inside an input (a false "shares an object with" that made cells uncacheable
    depending on where the allocator put things)."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: list[object] = []


class ValueHasher:
    """Hashes values by content with xxh3_128; one instance per cell-key computation.

    ``_memo`` maps ``id(obj) -> (obj, digest)`` for every value passed to
    :meth:`hash` (and seeded by :meth:`remember`); the strong reference keeps
    ids from being reused while the hasher lives. Values must not be mutated
    during that time. Within the hashing of a value, only memoised digests of
    numpy arrays and pandas objects are reused (they contain no Python objects
    whose sharing with the rest of the value would matter); other values are
    re-walked so that their sharing structure is captured.

    ``packages`` collects the top-level names of the non-stdlib modules whose
    code the hashed values depend on: types of pickled objects, library
    functions and classes hashed by name, library modules, and "numpy" /
    "pandas" for arrays and frames. The engine turns them into versions in
    the key. ``definitions`` collects the notebook functions and classes met
    (see analysis.notebook_definition), which stored values may refer to by
    name. Local (non-installed) modules referenced as *module objects* are
    hashed by their file content instead, but functions and classes imported
    from them are hashed by name and their top-level module is recorded here.
    """

    def __init__(self, stand_ins: Mapping[int, StandIn] | None = None) -> None:
        self._memo: dict[int, tuple[object, bytes, frozenset[str]]] = {}
        # id -> (value, its digest, the digest that stands for it): see :meth:`hash`
        self._stand_ins: Mapping[int, StandIn] = {} if stand_ins is None else stand_ins
        self.packages: set[str] = set()
        # notebook functions/classes met, by the name the namespace binds them to
        self.definitions: dict[str, object] = {}
        self._kinds: dict[type, _Kind] = dict(_BASE_KINDS)
        # top-level module -> fingerprint, for the module objects met (local ones by source)
        self.modules: dict[str, str] = {}
        # State of the value being hashed; swapped out by _isolated().
        self._visits: dict[int, int] = {}
        self._keep: list[object] = []
        # id of the object owning an array's memory -> (it, [(visit index, data pointer,
        # byte bounds) of the arrays met viewing it]), see _pid_ndarray
        self._owners: dict[int, tuple[object, list[tuple[int, int, int, int]]]] = {}
        # Sharing between values, for the engine (see :meth:`watch` / :meth:`collect`).
        # ``_watch`` maps id() of watched objects to (name, found inside that name's
        # value); hashing a value that is, contains, or (arrays) views one adds that
        # pair to ``_met``: a stored value must then refer to that object, not copy it.
        self._watch: dict[int, tuple[str, bool]] = {}
        self._met: set[tuple[str, bool]] = set()
        self._collected: Collected | None = None
        # Set when a hashed value holds something whose pickle may not bring back what it
        # holds (see _pid_custom_pickled, closures, memos): the engine then proves a stored
        # copy reloads to the same content before trusting it.
        self.doubtful = False
        # id -> notebook name of objects to hash as if the notebook bound them under that name
        # (a round trip's copies of the definitions it stored, see ``_note_definition``)
        self.aliases: dict[int, str] = {}
        self._cells: dict[
            int, tuple[object, object]
        ] = {}  # closure cell id -> (cell, first function)
        # Hash raw numpy arrays and pandas objects by type and shape only: enough to compare
        # a value with its own pickled copy, whose buffers are faithful by construction.
        self.skim = False
        # Set when a hashed value holds an object pickled through a library's own reduction
        # (not numpy's, pandas', the stdlib's): its stored copy may hash differently (a
        # __setstate__ that drops or rebuilds state, views copied apart), which the engine
        # then measures (see :func:`restored_digest`).
        self.reduced = False
        self._reducing: set[int] = set()  # ids of the values (in _memo) that set it

    def hash(self, obj: object) -> bytes:
        """Return the 16-byte content digest of ``obj``.

        Raises :class:`Unhashable` (with a one-line ``reason``) when some part
        of the value cannot be hashed by content.
        """
        if self._watch:
            self._check_watch(obj)
        entry = self._memo.get(id(obj))
        if entry is not None:
            self.packages |= entry[2]
            if self._collected is not None and self._kind(type(obj))[1] is _pid_ndarray:
                self._collected.add(id(obj))  # what walking the array would have collected
                self._collected.objects.append(obj)
            digest = entry[1]
            self.reduced |= id(obj) in self._reducing
        else:
            outer, self.packages = self.packages, set()  # what this value alone notes
            reduced, self.reduced = self.reduced, False
            try:
                digest = self._digest(obj)
            finally:
                noted, self.packages = self.packages, outer
                outer |= noted
                if self.reduced:
                    self._reducing.add(id(obj))
                self.reduced |= reduced
            self._memo[id(obj)] = (obj, digest, frozenset(noted))
        stand_in = self._stand_ins.get(id(obj)) if self._stand_ins else None
        # A value recorded (or restored) under the digest of its stored copy keeps
        # standing for it while its content is what it was then (see StandIn).
        if (
            stand_in is not None
            and stand_in[0] is obj
            and digest != stand_in[2]
            and (digest == stand_in[1] or restored_digest(digest) == stand_in[2])
        ):
            return stand_in[2]
        return digest

    def stands_in(self, obj: object) -> bool:
        """Whether the stand-ins given to this hasher hold a reference to ``obj``."""
        stand_in = self._stand_ins.get(id(obj))
        return stand_in is not None and stand_in[0] is obj

    def _digest(self, obj: Any) -> bytes:  # Any: arrays and frames, known by their handler
        if type(obj) in _NATIVE:
            return _native_digest(obj)
        handler = self._kind(type(obj))[1]
        if self.skim and (
            handler is _pid_pandas or (handler is _pid_ndarray and _raw_dtype(obj.dtype))
        ):
            digest = hash_bytes(f"skimmed\0{type(obj)}\0{obj.shape}".encode())
        elif handler is _pid_ndarray and _raw_dtype(obj.dtype):
            self._note("numpy")
            digest = _array_digest(obj)
        elif handler is _pid_pandas:
            self._note("pandas")
            self._note("numpy")
            try:
                parts = _pandas_parts(obj)
            except Exception as exc:  # an exotic subclass: fail safe
                raise Unhashable(_reason(obj, exc)) from exc
            # pandas copies on write: objects shared inside frames are not aliases; and its
            # pickles bring back the content hashed here (pyarrow's arrays included)
            saved = self._watch, self._collected, self.reduced
            self._watch, self._collected = {}, None
            try:
                digest = hash_bytes(b"pandas\0" + self._isolated(parts, obj))
            finally:
                self._watch, self._collected, self.reduced = saved
        else:
            digest = self._isolated(obj, obj)
        return digest

    def __enter__(self) -> ValueHasher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Drop the memo's strong references as soon as the hasher's work is done.

        The hasher's internals form reference cycles, so without this the
        hashed values would stay alive until the next garbage collection
        (and look shared to a reference count).
        """
        self._memo.clear()
        self._cells.clear()

    def collect(self) -> Collected:
        """Start collecting the ids of the mutable objects inside the values hashed from now on.

        Lists, dicts, sets, bytearrays, numpy arrays and instances of other
        classes: the objects whose sharing between two names matters, because
        an in-place change through one name shows through the other.  The
        returned set fills up as values are hashed; values already memoised
        are not walked again.
        """
        self._collected = Collected()
        return self._collected

    def stop_collecting(self) -> None:
        """Stop filling the set :meth:`collect` returned."""
        self._collected = None

    def watch(self, bound: Mapping[int, str], inside: Mapping[int, str]) -> None:
        """Start noting which of these objects the values hashed from now on are, contain or
        (arrays) view: ``bound`` maps the ids of objects bound to notebook names to those
        names, ``inside`` the ids of objects found inside a name's value to that name
        (``bound`` wins for an object in both).  :meth:`stop_watching` says which were met.
        """
        self._watch = {i: (name, True) for i, name in inside.items()}
        self._watch.update({i: (name, False) for i, name in bound.items()})
        self._met = set()

    def stop_watching(self) -> tuple[set[str], bool]:
        """Stop :meth:`watch`; returns the names of the bound objects met, and whether an
        object inside a name's value was met."""
        met, self._watch, self._met = self._met, {}, set()
        return {name for name, inside in met if not inside}, any(inside for _, inside in met)

    def knows(self, obj: object) -> bool:
        """Whether ``obj`` was hashed (or remembered) by this hasher: it holds a reference."""
        return id(obj) in self._memo

    def remember(self, obj: object, digest: bytes, packages: frozenset[str]) -> None:
        """Record that ``obj`` hashes to ``digest``, noting ``packages``, so that
        :meth:`hash` does not walk it again (e.g. a value just restored from the
        cache, see :func:`is_leaf`).

        Both must come from :meth:`hash` (and :meth:`packages_of`) of an equal
        value under the same ``HASH_FORMAT``.
        """
        self._memo[id(obj)] = (obj, digest, packages)

    def remember_known(self, known: Mapping[int, tuple[object, bytes, frozenset[str]]]) -> None:
        """:meth:`remember` each ``id -> (obj, digest, packages)`` of ``known``, keeping its
        tuples as they are: sharing them adds no reference to the values (whose reference
        counts tell whether anything else holds them)."""
        self._memo.update(known)

    def digest_of(self, obj: object) -> bytes:
        """The content digest of ``obj`` itself, before any stand-in (it must have been hashed
        by this hasher)."""
        return self._memo[id(obj)][1]

    def reduces(self, obj: object) -> bool:
        """Whether hashing ``obj`` met a library's reduction (see :attr:`reduced`; ``obj``
        must have been hashed by this hasher)."""
        return id(obj) in self._reducing

    def packages_of(self, obj: object) -> frozenset[str]:
        """The packages hashing ``obj`` noted (it must have been hashed by this hasher)."""
        return self._memo[id(obj)][2]

    # -- internals ---------------------------------------------------------

    def _kind(self, cls: type) -> _Kind:
        kind = self._kinds.get(cls)
        if kind is None:
            kind = self._kinds[cls] = self._classify(cls)
        return kind

    def _classify(self, cls: type) -> _Kind:
        """Decide how instances of a type not in ``_BASE_KINDS`` are hashed."""
        if issubclass(cls, type):
            return _IDENTITY_CLASS
        if issubclass(cls, types.ModuleType):
            return (True, _pid_module)
        if issubclass(cls, (set, frozenset)):
            return (True, _pid_set)
        np = sys.modules.get("numpy")
        if np is not None:
            if cls is np.ndarray:
                return (True, _pid_ndarray)
            if issubclass(cls, np.generic):
                return (False, _pid_numpy_scalar)
            if issubclass(cls, np.dtype):
                self._note("numpy")
                return _VALUE
        pd = sys.modules.get("pandas")
        if pd is not None and str(getattr(cls, "__module__", "")).startswith("pandas"):
            if issubclass(cls, (pd.DataFrame, pd.Series, pd.Index)):
                return (True, _pid_pandas)
            if issubclass(cls, pd.api.extensions.ExtensionDtype):
                self._note("pandas")
                return _VALUE
        module = getattr(cls, "__module__", None)
        if (str(module).partition(".")[0], cls.__qualname__) in _STDLIB_VALUES:
            return _VALUE
        handler = _SIDE_EFFECTS.get((str(module), cls.__qualname__))
        if handler is not None:
            self._note(module)
            return (True, handler)
        self._note(module)
        if _customises_pickling(cls) and self._is_user_code(module):
            return (True, _pid_custom_pickled)
        return _PLAIN

    def _is_user_code(self, module: object) -> bool:
        """True for the notebook's own code and the user's local modules (not installed
        libraries, whose pickling is their authors' promise)."""
        if module == "__main__":
            return True
        # incrcell's own objects (its ABSENT marker...) are never the user's, wherever it lives
        return (
            isinstance(module, str)
            and module.partition(".")[0] != _OWN
            and self._module_fingerprint(module).startswith(LOCAL)
        )

    def _note(self, module: object) -> None:
        """Record the top-level package of ``module`` if it is non-stdlib code
        with a location (synthetic modules such as Cython's shared
        ``_cython_3_x`` have no version to look up)."""
        if isinstance(module, str):
            top = module.partition(".")[0]
            if top not in sys.stdlib_module_names and top != "__main__":
                package = sys.modules.get(top)
                if getattr(package, "__file__", None) or getattr(package, "__path__", None):
                    self.packages.add(top)

    def _isolated(self, obj: object, subject: object) -> bytes:
        """Digest ``obj`` with fresh identity state, so that the digest depends
        on nothing outside ``obj`` and may be memoised. ``subject`` is the
        value named in an Unhashable reason."""
        saved = self._visits, self._keep, self._owners
        self._visits, self._keep, self._owners = {}, [], {}
        try:
            return self._stream(obj, subject)
        finally:
            if self._collected is not None:
                kinds = self._kinds
                met = [o for o in self._keep if kinds[type(o)][1] in _MUTABLE]
                self._collected.update(map(id, met))
                self._collected.objects.extend(met)
            self._visits, self._keep, self._owners = saved

    def _stream(self, obj: object, subject: object) -> bytes:
        """Digest the pickle stream of ``obj`` within the current identity state."""
        state = xxhash.xxh3_128()
        buffers: list[pickle.PickleBuffer] = []
        try:
            _HashPickler(self, state.update, buffers).dump(obj)
            # Out-of-band buffers go after the self-delimiting stream, each
            # with its length, so that the concatenation stays unambiguous.
            for buffer in buffers:
                raw = buffer.raw()
                state.update(len(raw).to_bytes(8, "little"))
                state.update(raw)
        except Unhashable:
            raise
        except Exception as exc:  # anything pickling can raise: fail safe
            raise Unhashable(_reason(subject, exc)) from exc
        return state.digest()

    def _is_value(self, obj: Any) -> bool:
        """True when ``obj`` contains no object with identity (only atoms,
        tuples, frozensets, code, numpy scalars, ...): its digest then depends
        on nothing else, and no alias or cycle can go through it."""
        cls = type(obj)
        if cls is tuple or cls is frozenset:
            return all(map(self._is_value, obj))
        if cls in _ATOMS or not self._kind(cls)[0]:
            return True
        # Library classes and functions are hashed by name: no identity inside.
        return isinstance(obj, _BY_NAME) and _is_importable(obj)

    def _value_digest(self, obj: Any) -> bytes:
        """Standalone digest of a value-like set element; common atoms skip the
        pickler (their tags never start with the pickle PROTO byte, so the two
        domains are disjoint)."""
        cls = type(obj)
        if cls is str:
            return hash_bytes(b"s" + obj.encode("utf-8", "surrogatepass"))
        if cls is int:
            return hash_bytes(b"i" + _int_bytes(obj))
        if cls is float:
            return hash_bytes(b"f" + _DOUBLE.pack(obj))
        if cls is bytes:
            return hash_bytes(b"b" + obj)
        # Isolated: classes met on the way (e.g. frozenset) must not be
        # registered in an order that depends on the set's iteration order.
        return self._isolated(obj, obj)

    def _check_watch(self, obj: object) -> None:
        """Note ``obj`` as met if it is watched, or is an array viewing a watched one."""
        name = self._watch.get(id(obj))
        if name is None and self._kind(type(obj))[1] is _pid_ndarray:
            name = next(
                (self._watch[id(base)] for base in array_bases(obj) if id(base) in self._watch),
                None,
            )
        if name is not None:
            self._met.add(name)

    def _note_definition(self, obj: type | types.FunctionType) -> bool:
        """Note a notebook definition; True if the notebook binds it under its name."""
        name = notebook_definition(obj) or self.aliases.get(id(obj))
        if name is not None:
            self.definitions[name] = obj
        return name is not None

    def _module_fingerprint(self, name: str) -> str:
        """What the code of module ``name`` is (see packages.module_fingerprint),
        once per hasher."""
        top = name.partition(".")[0]
        if top not in self.modules:
            self.modules[top] = module_fingerprint(top)
        return self.modules[top]


class _Sink:
    """File-like object whose ``write`` feeds the hash state directly, so the
    pickle is never materialised in memory."""

    __slots__ = ("write",)

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


# The types the C pickler writes itself, whatever its hooks: persistent_id lets them be
# (see _ATOMS) and reducer_override is never asked.  A value of one of them pickles to the
# stream a plain pickler in fast mode (no memo) writes: _HashPickler's, without its setup.
# Numbers, booleans and None are not memoised at all: pickle.dumps writes the same.
_UNMEMOISED = frozenset({int, float, bool, type(None)})
_NATIVE = frozenset({*_UNMEMOISED, str, bytes})


def _native_digest(obj: object) -> bytes:
    """The digest of a value whose type is in _NATIVE: the one :meth:`ValueHasher._stream`
    gives it, without the cost of a _HashPickler (most inputs are numbers and strings)."""
    if type(obj) in _UNMEMOISED:
        return hash_bytes(pickle.dumps(obj, protocol=5))
    state = xxhash.xxh3_128()
    pickler = pickle.Pickler(_Sink(state.update), protocol=5)
    pickler.fast = True
    pickler.dump(obj)
    return state.digest()


class _HashPickler(pickle.Pickler):
    """C pickler whose output is only hashed, never loaded."""

    def __init__(
        self,
        hasher: ValueHasher,
        write: Callable[[bytes], None],
        buffers: list[pickle.PickleBuffer],
    ) -> None:
        super().__init__(_Sink(write), protocol=5, buffer_callback=buffers.append)
        # No pickle memo: persistent_id tracks identity of non-atomic objects
        # itself, and equal atoms must hash equal whether or not they are the
        # same object (string interning differs between processes).
        self.fast = True
        self._hasher = hasher
        # The identity state current at creation (hot path: no indirection).
        self._kinds = hasher._kinds
        self._visits = hasher._visits
        self._keep = hasher._keep
        self._watch = hasher._watch

    def persistent_id(self, obj: object) -> object:
        cls = type(obj)
        if cls in _ATOMS:
            return None
        register, handler = self._kinds.get(cls) or self._hasher._kind(cls)
        if register:
            if self._watch and id(obj) in self._watch:
                self._hasher._met.add(self._watch[id(obj)])
            visits = self._visits
            index = visits.get(id(obj))
            if index is not None:
                return index  # back-reference: aliasing or a cycle
            keep = self._keep
            visits[id(obj)] = len(keep)
            keep.append(obj)  # keeps temporaries alive: ids stay unique
        return None if handler is None else handler(self._hasher, obj)

    def reducer_override(self, obj: object) -> str | tuple[Any, ...]:
        if type(obj) is types.FunctionType or isinstance(obj, type):
            # Only library functions and classes get here (persistent_id
            # replaced the others); pickle saves them by verified reference.
            return NotImplemented
        cls = type(obj)
        reduce = copyreg.dispatch_table.get(cls)
        reduced = reduce(obj) if reduce is not None else obj.__reduce_ex__(5)
        if not self._hasher.reduced:
            where = str(getattr(cls, "__module__", ""))
            top = where.partition(".")[0]
            self._hasher.reduced = not (
                where in _FAITHFUL or top in _FAITHFUL_PACKAGES or top in sys.stdlib_module_names
            )
        local = _PROCESS_LOCAL.get((cls.__module__, cls.__qualname__))
        if local and isinstance(reduced, tuple) and len(reduced) > 2 and type(reduced[2]) is dict:
            state = {k: v for k, v in reduced[2].items() if k not in local}
            reduced = (*reduced[:2], state, *reduced[3:])
        if isinstance(reduced, str):  # saved by reference to a global name
            module = getattr(obj, "__module__", None)
            if module == "__main__":
                raise Unhashable(
                    f"{type(obj).__qualname__} would be hashed by its name "
                    f"__main__.{reduced}, not by its content"
                )
            self._hasher._note(module)
        return reduced


# -- persistent_id handlers: (hasher, obj) -> stand-in tuple, or None to let
# pickle serialise obj normally. Stand-ins are pickled (their items through
# the same hooks) behind a BINPERSID opcode, which plain data never produces.


def _pid_set(hasher: ValueHasher, obj: Any) -> object:
    state = getattr(obj, "__dict__", None)  # set subclasses may carry attributes
    if set(map(type, obj)) <= _NATIVE_ELEMENTS or all(map(hasher._is_value, obj)):
        # Iteration order depends on the string hash seed: sort the digests.
        digests = sorted(map(hasher._value_digest, obj))
        return ("set", type(obj), hash_bytes(b"".join(digests)), state)
    # Elements with identity (objects defining __hash__) may be shared with
    # the rest of the value or lead back to this very set, so they are hashed
    # in place, in iteration order. Different sets still never hash the same;
    # equal ones may differ between processes (a missed hit only): a canonical
    # order of such object graphs cannot be computed cheaply.
    return ("unordered set", type(obj), tuple(obj), state)


def _pid_function(hasher: ValueHasher, fn: types.FunctionType) -> object:
    if _is_importable(fn):
        hasher._note(fn.__module__)
        return None
    bound = hasher._note_definition(fn)
    for cell in fn.__closure__ or ():
        # a closure cell shared by two functions is shared no more once each is pickled
        first = hasher._cells.setdefault(id(cell), (cell, fn))[1]
        hasher.doubtful |= first is not fn
    namespace = fn.__globals__
    return (
        "function",
        bound,
        fn.__qualname__,
        fn.__code__,
        fn.__defaults__,
        fn.__kwdefaults__,
        fn.__closure__,
        fn.__dict__ or None,
        # a global that is the builtin of its name behaves as no global at all (dill's
        # private globals for a function of another module's namespace hold such copies)
        tuple(
            (name, namespace[name])
            for name in sorted(referenced_globals(fn))
            if namespace[name] is not getattr(builtins, name, _ABSENT)
        ),
    )


def _pid_code(hasher: ValueHasher, code: types.CodeType) -> object:
    # Never co_filename, co_firstlineno or the line table: they change with the
    # cell's execution count and position without changing behaviour.
    return (
        "code",
        code.co_name,
        getattr(code, "co_qualname", None),
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_code,
        code.co_consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        getattr(code, "co_exceptiontable", None),
    )


def _pid_cell(hasher: ValueHasher, cell: types.CellType) -> object:
    try:
        return ("cell", cell.cell_contents)
    except ValueError:
        return ("empty cell",)


def _pid_method(hasher: ValueHasher, method: types.MethodType) -> object:
    # Pickle would save getattr(self, name), which misses a __func__ that is
    # not the attribute of that name.
    return ("method", method.__func__, method.__self__)


def _pid_class(hasher: ValueHasher, cls: type) -> object:
    if _is_importable(cls):
        hasher._note(cls.__module__)
        return None
    if cls.__module__ == "builtins":  # e.g. NoneType, function: not importable
        return ("builtin type", cls.__qualname__)
    bound = hasher._note_definition(cls)
    items = sorted(
        ((name, value) for name, value in vars(cls).items() if name not in _CLASS_SKIP),
        key=itemgetter(0),
    )
    # ``bound``: an instance of a class since defined anew is not an instance of the class
    # its name now means (isinstance fails), however equal the two definitions
    return ("class", cls.__qualname__, type(cls), cls.__bases__, tuple(items), bound)


def _pid_module(hasher: ValueHasher, module: types.ModuleType) -> object:
    name = module.__name__
    path = getattr(module, "__file__", None)
    if path is None:
        # Builtin/frozen stdlib modules and namespace packages have no code
        # of their own; other file-less modules (e.g. a kernel's __main__)
        # cannot be hashed by content.
        if name.partition(".")[0] in sys.stdlib_module_names or hasattr(module, "__path__"):
            hasher._note(name)
            return ("module", name)
        raise Unhashable(f"module {name!r} has no __file__ to hash its content by")
    fingerprint = hasher._module_fingerprint(name)
    if fingerprint.startswith(LOCAL):  # the user's own code: its source is its identity
        return ("local module", name, fingerprint)
    hasher._note(name)
    return ("module", name)


def _pid_staticmethod(hasher: ValueHasher, obj: Any) -> object:
    return ("staticmethod", obj.__func__)


def _pid_classmethod(hasher: ValueHasher, obj: Any) -> object:
    return ("classmethod", obj.__func__)


def _pid_property(hasher: ValueHasher, obj: property) -> object:
    return ("property", obj.fget, obj.fset, obj.fdel)


def _pid_cached_property(hasher: ValueHasher, obj: Any) -> object:
    return ("cached_property", obj.func, obj.attrname)


def _pid_lru_cache(hasher: ValueHasher, obj: Any) -> object:
    # The wrapper pickles by name even when it wraps a __main__ function.
    if _is_importable(obj):
        hasher._note(obj.__module__)
        return None
    filled = obj.cache_info().currsize
    if filled:
        # The memo decides what later calls return (an impure function keeps old results),
        # but its content cannot be read, nor pickled: nothing can stand for it.
        raise Unhashable(
            f"the functools.lru_cache memo of {obj.__qualname__}() holds {filled} "
            "result(s) that cannot be read (call its cache_clear() to cache cells "
            "using it)"
        )
    return ("lru_cache", obj.__wrapped__, obj.cache_parameters())


def _pid_custom_pickled(hasher: ValueHasher, obj: Any) -> object:
    # The user's own __reduce__/__getstate__ may leave out part of what the object holds
    # (a cache, a handle, a field it calls transient): hash what it holds as well, so that
    # a loss shows as a different digest, and have a stored copy proven (hasher.doubtful).
    hasher.doubtful = True
    reduced = obj.__reduce_ex__(5)
    if isinstance(reduced, str):
        module = getattr(obj, "__module__", None)
        if module != "__main__" and isinstance(module, str):
            # a singleton of a local module, pickled by reference: its module's source keys it
            hasher._note(module)
            return ("global", module, reduced)
        raise Unhashable(
            f"{type(obj).__qualname__} would be hashed by its name {reduced}, not by its content"
        )
    parts = tuple(list(part) if isinstance(part, Iterator) else part for part in reduced)
    return ("custom pickled", parts, _held_state(obj))


def _held_state(obj: object) -> tuple[object, tuple[object, ...]]:
    """What an instance holds: its ``__dict__`` and the values of its slots (unset ones marked)."""
    try:
        attributes = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        attributes = None
    slots: list[tuple[str] | tuple[str, object]] = []
    for klass in type(obj).__mro__:
        names = klass.__dict__.get("__slots__", ())
        for name in (names,) if isinstance(names, str) else names:
            if name in ("__dict__", "__weakref__"):
                continue
            attribute = (
                f"_{klass.__name__.lstrip('_')}{name}"
                if name.startswith("__") and not name.endswith("__")
                else name
            )
            try:
                slots.append((name, object.__getattribute__(obj, attribute)))
            except AttributeError:
                slots.append((name,))
    return attributes, tuple(slots)


def _customises_pickling(cls: type) -> bool:
    """True when a class (or a non-builtin base) defines how its instances pickle."""
    return any(
        hook in vars(klass)
        for klass in cls.__mro__
        if klass.__module__ != "builtins"
        for hook in _PICKLING_HOOKS
    )


def _pid_callback_registry(hasher: ValueHasher, obj: Any) -> object:
    # matplotlib's __getstate__ draws the next connection id from the registry's counter
    # (hashing would change the value it hashes) and keeps only the callbacks marked for
    # pickling: this is that state, without the counter, which no restore brings back as
    # it was (each pickling advances it) and which only numbers later connections.
    state = dict(vars(obj))
    pickled = state.get("_pickled_cids", ())
    state["callbacks"] = {
        signal: {cid: proxy() for cid, proxy in proxies.items() if cid in pickled}
        for signal, proxies in state.get("callbacks", {}).items()
    }
    for name in ("_cid_gen", "_func_cid_map"):
        state.pop(name, None)
    return ("callback registry", type(obj), state)


def _pid_mappingproxy(hasher: ValueHasher, obj: Any) -> object:
    return ("mappingproxy", dict(obj))


def _pid_weakref(hasher: ValueHasher, ref: Any) -> object:
    # What a weak reference means is its referent (if still alive).
    referent = ref()
    return ("dead weakref",) if referent is None else ("weakref", referent)


def _pid_memoryview(hasher: ValueHasher, obj: memoryview) -> object:
    return ("memoryview", obj.format, obj.shape, obj.tobytes())


def _pid_ndarray(hasher: ValueHasher, arr: Any) -> object:
    if not _raw_dtype(arr.dtype):
        # Object (and other non-raw) dtypes: the elements themselves, so that
        # they get value semantics and identity tracking like any object.
        return ("object ndarray", arr.dtype, arr.shape, arr.reshape(-1).tolist())
    digest = hasher.hash(arr)
    # Arrays viewing the same memory are aliases too: record which earlier
    # array of this value shares the buffer, and at which byte offset.
    owner = array_owner(arr)
    foreign = owner.base  # memory another kind of object holds (bytes, mmap, a Cython object)
    holder = owner if foreign is None else foreign
    pointer = arr.__array_interface__["data"][0]
    low, high = byte_bounds(arr) if foreign is not None else (0, 0)
    group = hasher._owners.get(id(holder))
    if group is None:
        group = hasher._owners[id(holder)] = (holder, [])
    for index, start, first_low, first_high in group[1]:
        # Such an object may hold several allocations (a scikit-learn tree's node and value
        # arrays), whose distance in memory means nothing: only overlapping arrays alias.
        if foreign is None or (first_low < high and low < first_high):
            return ("ndarray", digest, index, pointer - start)
    group[1].append((len(hasher._keep) - 1, pointer, low, high))
    return ("ndarray", digest)


def byte_bounds(arr: Any) -> tuple[int, int]:
    """First and one-past-last byte addresses a numpy array's elements occupy."""
    low = high = arr.__array_interface__["data"][0]
    if arr.size:
        for extent, stride in zip(arr.shape, arr.strides):
            low += min(0, (extent - 1) * stride)
            high += max(0, (extent - 1) * stride)
        high += arr.itemsize
    return low, high


def is_leaf(obj: object) -> bool:
    """True for numpy arrays of raw dtypes, pandas DataFrames and Series: values whose
    digest says everything a cell's key needs (no Python object inside whose identity
    matters), so a known digest can stand in for walking them again."""
    np = sys.modules.get("numpy")
    if np is not None and type(obj) is np.ndarray:
        return _raw_dtype(obj.dtype)  # type: ignore[attr-defined]
    pd = sys.modules.get("pandas")
    return pd is not None and type(obj) in (pd.DataFrame, pd.Series)


def array_bases(arr: Any) -> Iterator[Any]:
    """The arrays whose memory ``arr`` views, nearest first (``arr.base``, its base...)."""
    ndarray = sys.modules["numpy"].ndarray
    while isinstance(arr.base, ndarray):
        arr = arr.base
        yield arr


def array_owner(arr: Any) -> Any:
    """The array whose memory ``arr`` views (``arr`` itself if it owns its memory)."""
    bases = list(array_bases(arr))
    return bases[-1] if bases else arr


def _pid_numpy_scalar(hasher: ValueHasher, obj: Any) -> object:
    hasher._note("numpy")
    return ("numpy scalar", _dtype_key(obj.dtype), obj.tobytes())


def _pid_pandas(hasher: ValueHasher, obj: object) -> object:
    return ("pandas", hasher.hash(obj))


_ABSENT = object()

# (register identity, handler); handler None means "pickle normally".
# A handler is only called with instances of the type it is registered for
# (hence Any: a dict cannot relate each key's type to its handler's parameter).
_Kind = tuple[bool, "Callable[[ValueHasher, Any], object] | None"]
_PLAIN: _Kind = (True, None)
_VALUE: _Kind = (False, None)
_IDENTITY_CLASS: _Kind = (True, _pid_class)

#: Immutable values without parts: keeping one is the same as binding an equal one anew.
ATOMS = (int, float, complex, str, bytes, bool, type(None))
# Immutable values hashed by value only: no identity tracking, no handler (tuples' items
# are hashed as they come).
_ATOMS = frozenset({*ATOMS, tuple})

_BASE_KINDS: dict[type, _Kind] = {
    list: _PLAIN,
    dict: _PLAIN,
    bytearray: _PLAIN,
    set: (True, _pid_set),
    frozenset: (False, _pid_set),
    types.FunctionType: (True, _pid_function),
    types.MethodType: (True, _pid_method),
    types.CodeType: (False, _pid_code),
    types.CellType: (True, _pid_cell),
    types.ModuleType: (True, _pid_module),
    types.MappingProxyType: (True, _pid_mappingproxy),
    type: _IDENTITY_CLASS,
    staticmethod: (True, _pid_staticmethod),
    classmethod: (True, _pid_classmethod),
    property: (True, _pid_property),
    functools.cached_property: (True, _pid_cached_property),
    functools._lru_cache_wrapper: (True, _pid_lru_cache),
    memoryview: (True, _pid_memoryview),
    weakref.ref: (True, _pid_weakref),
}

# Library classes whose pickling changes them (by module and qualname, so that nothing
# is imported for them): hashed by the state their pickle keeps, without the side effect.
_SIDE_EFFECTS = {("matplotlib.cbook", "CallbackRegistry"): _pid_callback_registry}

# Library classes whose pickled state holds numbers the process assigns (like an id()),
# which a restore assigns anew: left out of their digest. A pyplot figure's number is the
# lowest one free in the kernel that made, or restored, it.
_PROCESS_LOCAL = {("matplotlib.figure", "Figure"): frozenset({"_number"})}

# Kinds (by handler) whose instances can be changed in place, for ValueHasher.collect.
_MUTABLE = frozenset({None, _pid_set, _pid_ndarray, _pid_custom_pickled, _pid_callback_registry})

_PICKLING_HOOKS = (
    "__reduce_ex__",
    "__reduce__",
    "__getstate__",
    "__setstate__",
    "__getnewargs_ex__",
    "__getnewargs__",
)

# Immutable stdlib types (by top-level module and qualname, so that nothing is
# imported for them): hashed by value, like atoms, and sortable inside sets.
_STDLIB_VALUES = frozenset(
    {
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("fractions", "Fraction"),
        ("uuid", "UUID"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("builtins", "range"),
        ("builtins", "slice"),
    }
)

# Class attributes that are bookkeeping rather than behaviour (__firstlineno__
# changes with the cell position), or unpicklable caches (_abc_impl).
_CLASS_SKIP = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__firstlineno__",
        "_abc_impl",
        "__slotnames__",
    }
)

_NATIVE_ELEMENTS = frozenset({str, int, float, bytes})
# Modules (or top-level packages) whose classes' reductions bring back exactly what they
# hash (see ValueHasher.reduced): numpy's dtypes, pandas (whose objects are hashed column
# by column), incrcell's own; the notebook's own classes unless they customise pickling
# (then they are proven: ValueHasher.doubtful).
_FAITHFUL = frozenset({"builtins", "__main__", "numpy", "numpy.dtypes"})
_FAITHFUL_PACKAGES = frozenset({"pandas", _OWN})
_BY_NAME = (type, types.FunctionType, types.BuiltinFunctionType)
_DOUBLE = struct.Struct("<d")
_RAW_KINDS = frozenset("biufcmMSUV")
_CHUNK_BYTES = 1 << 24


def _is_importable(obj: object) -> bool:
    """True when ``obj`` is reachable as ``sys.modules[obj.__module__]`` plus
    its qualname, outside ``__main__``: library code identified by name."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__":
        return False
    target = sys.modules.get(module)
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:  # AttributeError, or a failing lazy module attribute
        return False
    return target is obj


def _reason(obj: object, exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    return f"{type(obj).__qualname__} cannot be pickled: {detail}"


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)


def _raw_dtype(dtype: Any) -> bool:
    """True when an array's bytes are its values (no pointers inside)."""
    return not dtype.hasobject and dtype.kind in _RAW_KINDS


def _dtype_key(dtype: Any) -> str:
    if dtype.fields is None:
        return dtype.str
    return f"{dtype.str}{dtype.descr}"


def _array_digest(arr: Any) -> bytes:
    """Digest of a raw-dtype array: dtype, shape and C-order bytes, read in
    place when C-contiguous and in bounded chunks otherwise."""
    state = xxhash.xxh3_128(f"ndarray\0{_dtype_key(arr.dtype)}\0{arr.shape}\0".encode())
    if arr.flags.c_contiguous:
        state.update(arr.reshape(-1).view("u1"))
    else:
        np = sys.modules["numpy"]
        rows = max(1, _CHUNK_BYTES // max(1, arr[0].nbytes))
        for start in range(0, len(arr), rows):
            chunk = np.ascontiguousarray(arr[start : start + rows])
            state.update(chunk.reshape(-1).view("u1"))
    return state.digest()


def _pandas_values(obj: Any) -> object:
    """Values of a Series or Index: a digest for raw numpy dtypes (independent
    of the frame's block layout), else the array itself to be pickled."""
    dtype = obj.dtype
    if isinstance(dtype, sys.modules["numpy"].dtype):
        values = obj.to_numpy()
        return _array_digest(values) if _raw_dtype(dtype) else values
    return obj.array


def _pandas_parts(obj: Any) -> tuple[object, ...]:
    """The content of a pandas object, column by column, as a plain tuple
    (hashed behind a "pandas" tag, so no plain tuple can collide with it)."""
    pd = sys.modules["pandas"]
    if isinstance(obj, pd.DataFrame):
        columns = tuple((col.dtype, _pandas_values(col)) for _, col in obj.items())
        return (
            type(obj),
            obj.index,
            obj.columns,
            columns,
            obj.attrs,
            obj.flags.allows_duplicate_labels,
        )
    if isinstance(obj, pd.Series):
        return (
            type(obj),
            obj.index,
            obj.name,
            obj.dtype,
            _pandas_values(obj),
            obj.attrs,
            obj.flags.allows_duplicate_labels,
        )
    if isinstance(obj, pd.RangeIndex):
        return (type(obj), obj.name, obj.start, obj.stop, obj.step)
    if isinstance(obj, pd.MultiIndex):
        codes = tuple(_array_digest(code) for code in obj.codes)
        return (type(obj), tuple(obj.names), tuple(obj.levels), codes)
    return (type(obj), tuple(obj.names), obj.dtype, _pandas_values(obj))
