"""Persist: store what a recorded cell left, or say why it cannot be stored.

After a miss ran successfully (engine.py's finish), the names it wrote are
found (its static writes, the names rebound while it ran, the inputs it
changed in place and every name sharing an object with them, sharing.py);
the files it read, wrote and probed are checked (files.py, nativeio.py);
the random generators it drew from are judged (randomness.py); then its
values, Out value and interpreter changes are hashed and pickled together
(so that objects shared between them stay shared) and stored as one entry.

Fails safe: a value that cannot be hashed, pickled, or loaded back as it was,
a file it cannot store or replay, an object it shares with a name it did not
write: the cell stays uncacheable, and the reason (reasons.py) says why.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, MutableMapping
from typing import Any

import xxhash

from . import interpreter, nativeio, randomness
from .analysis import notebook_definition
from .files import EXISTS, MISSING, SPECIAL, file_digest
from .fingerprint import (
    ATOMS,
    StandIn,
    Unhashable,
    ValueHasher,
    array_owner,
    restored_digest,
)
from .plans import Record, Recording
from .reasons import Code, Reason
from .serialise import Shared, Unpicklable, dumps, loads, one_line
from .sharing import UserName, identities, keepers, sharers
from .sources import code_sources
from .store import CacheWarning, Entry, Store, StoreError


def _type_name(value: object) -> str:
    return type(value).__qualname__


class Persister:
    """Stores recorded cells into one engine's cache.

    ``store()`` gives the cache (it may raise StoreError: the cell is then not
    saved, and says so); ``user`` / ``session`` tell the user's names and the
    session's objects apart (sharing.py); ``remember(value, digest, packages)``
    keeps the digest of a value just stored while no user code runs; ``stand_ins``
    receives the values recorded under their stored copy's digest (see
    :meth:`_round_trip`), and keys the hashing here as it keys the engine's.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        user: UserName,
        session: UserName,
        remember: Callable[[object, bytes, frozenset[str]], None],
        stand_ins: dict[int, StandIn],
    ) -> None:
        self._store = store
        self.user = user
        self.session = session
        self.remember = remember
        self.stand_ins = stand_ins

    @property
    def store(self) -> Store:
        return self._store()

    def save(
        self,
        plan: Record,
        namespace: MutableMapping[str, Any],
        rebound: set[str],
        outputs: list[dict[str, Any]],
        result: Any,
        duration: float,
        recording: Recording,
        changes: dict[str, tuple[Any, Any]],
    ) -> tuple[set[str], Reason | None]:
        """Store what a successful miss wrote; returns (names written, why it could not be).

        ``rebound``: the names whose binding changed while it ran; ``changes``: the
        interpreter items it changed (item -> (before, after)).
        """
        files, seeds = recording.files, recording.seeds
        names = set(plan.writes) | rebound
        mutated = self._mutated(plan, namespace, known=names)
        # inputs the cell writes in place (``del xs[0]``, ``df["c"] = ...``): the same object
        # as before, so whatever holds it changed too (``pair = (xs, ...)``)
        mutated |= {
            name
            for name in plan.writes & plan.digests.keys()
            if name in namespace and plan.bindings.get(name) == id(namespace[name])
        }
        names |= mutated
        holders = sharers(namespace, mutated, plan.inner, names, self.user, self.session)
        if holders is None:
            return names, Code.TOO_MANY_HOLDERS(name=sorted(mutated)[0])
        names |= holders
        # inputs rebound to values holding their old objects (``xs = [xs, xs]``)
        renewed = {
            name
            for name in plan.digests.keys() & names
            if name in namespace and plan.bindings.get(name) != id(namespace[name])
        }
        holders = keepers(namespace, renewed, names, self.user, self.session)
        if holders is None:
            return names, Code.TOO_MANY_HOLDERS(name=sorted(renewed)[0])
        names |= holders
        nativeio.literal_reads(files, plan.source, plan.codes)
        if files.bypassed:
            return names, Code.FILE_BYPASSED(path=os.path.relpath(files.bypassed[0]))
        if files.unseen is not None:
            return names, files.unseen
        both = sorted(files.updates | (files.reads & files.writes))
        if both:
            return names, Code.READS_AND_WRITES_FILE(path=os.path.relpath(both[0]))
        if refused := nativeio.refusal(files):
            return names, refused
        read = {path: file_digest(path) for path in sorted(files.reads)}
        special = sorted(path for path, digest in read.items() if digest == SPECIAL)
        if special:
            return names, Code.SPECIAL_FILE(path=os.path.relpath(special[0]))
        read.update(
            {path: EXISTS if existed else MISSING for path, existed in files.existed.items()}
        )
        try:
            produced = files.outputs()
        except (OSError, ValueError) as exc:
            return names, Code.UNREADABLE_OUTPUT_FILE(
                detail=str(getattr(exc, "strerror", None) or exc)
            )
        after = randomness.snapshot()
        changed = randomness.changed(seeds.before, after)
        fresh = sorted(seeds.fresh_draws(after, changed))
        if fresh and not plan.cache_anyway:
            return names, Code.FRESH_RANDOM(name=fresh[0])
        # A seeded generator is an output even if seeding left it as it was; one holding
        # fresh entropy is not (setting its state again would replay what should be fresh).
        drawn = sorted((set(changed) | seeds.seeded & set(after)) - seeds.fresh)
        # The state before is an input, unless the cell seeded the generator before drawing,
        # or imported its module (torch's, which starts from a fixed seed).
        random = {
            name: None
            if name in seeds.seeded_first or name not in plan.random_before
            else randomness.state_digest(plan.random_before[name])
            for name in drawn
        }
        # a hasher of its own: its ``definitions`` are exactly those the stored values meet
        with ValueHasher(self.stand_ins) as hasher:
            failure = self._store_entry(
                plan,
                namespace,
                names,
                outputs,
                result,
                duration,
                {name: after[name] for name in drawn},
                random,
                read,
                produced,
                files.probes,
                hasher,
                changes,
            )
        return names, failure

    def _mutated(
        self, plan: Record, namespace: MutableMapping[str, Any], known: set[str]
    ) -> set[str]:
        """Inputs whose content changed while the cell ran (``f(df)``), in ``known`` too when
        still bound to the same object (``col *= 3`` changes ``col`` in place): what shares
        their objects changed with them."""
        changed = set()
        with ValueHasher(self.stand_ins) as hasher:
            for name, before in plan.digests.items():
                if name in namespace and (
                    name not in known or plan.bindings.get(name) == id(namespace[name])
                ):
                    try:
                        if hasher.hash(namespace[name]) != before:
                            changed.add(name)
                    except Unhashable:
                        changed.add(name)
        return changed

    def _store_entry(
        self,
        plan: Record,
        namespace: MutableMapping[str, Any],
        names: set[str],
        outputs: list[dict[str, Any]],
        result: Any,
        duration: float,
        states: dict[str, Any],
        random: dict[str, str | None],
        read: dict[str, str],
        produced: dict[str, bytes | str | None],
        probes: dict[str, str],
        hasher: ValueHasher,
        changes: dict[str, tuple[Any, Any]],
    ) -> Reason | None:
        """Store the values and the entry; returns why the cell is uncacheable (None if stored).

        All written values (and the Out value) are pickled together, so objects
        shared between them stay shared.  An object the cell did not write but
        that a written value is or contains (``b = a``, ``pair = [a, a2]``, a
        view of ``arr``) is stored as a reference to its name, keyed like a
        notebook definition in ``requires``.  An object found *inside* another
        value the cell did not write (``x = lst[0]``) has no name to refer to:
        the cell is then not cached.  ``read``: the files it read -> their digests.
        """
        values = {name: namespace[name] for name in sorted(names) if name in namespace}
        deleted = sorted(n for n in names if n not in namespace)
        try:
            through = self._written_through(plan, values)
        except _Uncacheable as exc:
            return exc.reason
        except StoreError as exc:
            return Code.NOT_SAVED(detail=exc.reason)
        left = {item: new for item, (_, new) in sorted(changes.items())}
        # The objects bound to other names, which hashing what the cell left may meet. Plain
        # atoms hold nothing and are none of those live objects: for them, the namespace is
        # not walked.
        bound: dict[int, str] = {}
        if not all(type(value) in ATOMS for value in (*values.values(), result, *left.values())):
            bound = identities(namespace, names, self.user)
            np = sys.modules.get("numpy")
            if np is not None:  # a view of a bound array has that array's owner as its base
                for name in list(bound.values()):
                    value = namespace[name]
                    if isinstance(value, np.ndarray) and value.base is not None:
                        bound.setdefault(id(array_owner(value)), name)
        inside = {i: name for name, ids in plan.inner.items() if name not in names for i in ids}
        hasher.watch(bound, inside)
        try:
            variables = {
                name: self._digest(value, hasher, f"`{name}`").hex()
                for name, value in values.items()
            }
            packages = {name: sorted(hasher.packages_of(value)) for name, value in values.items()}
            result_digest = (
                None if result is None else self._digest(result, hasher, "its result").hex()
            )
            doubtful = hasher.doubtful
            # the values holding library objects, whose stored copy may hash otherwise
            measured = {n: hasher.digest_of(v) for n, v in values.items() if hasher.reduces(v)}
            left_digests = [self._digest(new, hasher, item).hex() for item, new in left.items()]
            named, met_inside = hasher.stop_watching()
            refs = {name: namespace[name] for name in named}
            inner = {i: n for i, n in inside.items() if i not in bound} if met_inside else None
            needed = {**hasher.definitions, **{name: namespace[name] for name in named}}
            requires = {
                name: self._digest(obj, hasher, f"`{name}`").hex()
                for name, obj in needed.items()
                if name not in values or values[name] is not obj
            }
            before = {
                item: self._digest(old, hasher, f"{item} (before it)").hex()
                for item, (old, _) in sorted(changes.items())
            }
            bundle = None
            copies: dict[str, bytes] = {}  # name -> digest of its stored copy, where it differs
            if values or result is not None or states or left:
                after = {name: randomness.state_digest(state) for name, state in states.items()}
                bundle = xxhash.xxh3_128(
                    json.dumps(
                        [plan.key, variables, result_digest, requires, after, left_digests]
                    ).encode()
                ).hexdigest()
                stored = self.store.has_value(bundle)
                if not stored or measured:
                    try:
                        serialised = dumps(
                            (values, result, states, left),
                            own=[*values.values(), result, *left.values()],
                            refs=refs,
                            inside=inner,
                        )
                    except Shared as exc:
                        raise _Uncacheable(Code.SHARES_UNWRITTEN(name=exc.name)) from None
                    except Unpicklable as exc:
                        raise _Uncacheable(self._unpicklable(values, result, refs, exc)) from None
                    if doubtful or measured:
                        copies = self._round_trip(
                            serialised, values, result, namespace, doubtful, measured
                        )
                    if not stored:
                        self.store.put_value(bundle, serialised)
                # the names whose stored copy hashes otherwise: keyed by that copy's digest
                variables.update({name: restored_digest(d).hex() for name, d in copies.items()})
            written = {path: self._put_file(data) for path, data in produced.items()}
            self.store.put(
                Entry(
                    key=plan.key,
                    source=plan.source,
                    variables=variables,
                    deleted=deleted,
                    outputs=outputs,
                    result=result_digest,
                    bundle=bundle,
                    random=random,
                    packages=packages,
                    duration=duration,
                    created=time.time(),
                    components=plan.components,
                    requires=requires,
                    files=read,
                    cwd=self._started_in(plan),
                    written=written,
                    through=through,
                    probes=probes,
                    sources=code_sources([*values.values(), result]),
                    interpreter=before,
                )
            )
            self.store.put_note(
                f"lineage:{plan.identity}", {"key": plan.key, "components": plan.components}
            )
            for name, value in values.items():
                self.remember(value, bytes.fromhex(variables[name]), frozenset(packages[name]))
                if name in copies:
                    raw = hasher.digest_of(value)
                    self.stand_ins[id(value)] = StandIn(value, raw, bytes.fromhex(variables[name]))
        except _Uncacheable as exc:
            return exc.reason
        except StoreError as exc:
            warnings.warn(
                f"incrcell: could not save the cell to the cache ({exc.reason}); "
                "it will run again next time.",
                CacheWarning,
                stacklevel=2,
            )
            return Code.NOT_SAVED(detail=exc.reason)
        return None

    def _written_through(self, plan: Record, values: dict[str, Any]) -> dict[str, str]:
        """The names among ``values`` the cell changed through objects they share with what
        it changed (not inputs, not bound anew), with their content before it ran.

        Raises :class:`_Uncacheable` when that content is unknown: the name is then
        noted for the cell's source, and hashed before its next run (see :meth:`_through`).
        An alias of an input (the same object) had the input's content.
        """
        inputs = {
            plan.bindings[name]: digest.hex()
            for name, digest in plan.digests.items()
            if name in plan.bindings
        }
        through: dict[str, str] = {}
        unknown = []
        for name, value in values.items():
            if name in plan.digests or name in plan.writes or plan.bindings.get(name) != id(value):
                continue
            if name in plan.through:
                before = plan.through[name]
            elif id(value) in inputs:
                before = inputs[id(value)]
            else:
                unknown.append(name)
                continue
            if before is None:
                raise _Uncacheable(Code.THROUGH_UNHASHABLE(name=name))
            through[name] = before
        if unknown:
            self.store.put_note(
                f"through:{plan.source_digest}",
                {"names": sorted({*plan.through, *through, *unknown})},
            )
            raise _Uncacheable(Code.THROUGH_UNKNOWN(name=unknown[0]))
        return through

    @staticmethod
    def _round_trip(
        serialised: Any,
        values: dict[str, Any],
        result: Any,
        namespace: MutableMapping[str, Any],
        doubtful: bool,
        measured: dict[str, bytes],
    ) -> dict[str, bytes]:
        """Load what was just pickled and hash it: the names of ``measured`` (name -> the
        digest of its value) whose copy hashes otherwise, with the digest of their copy.

        For values whose pickle may leave out what they hold (``doubtful``, see
        ``ValueHasher.doubtful``: a ``__getstate__`` of the user's dropping a field,
        closures sharing a cell, which pickling copies apart), any difference raises
        :class:`_Uncacheable`: the copy must be what was stored, sharing included.
        For values holding objects pickled by a library's own reduction (see
        ``ValueHasher.reduced``), whose pickling is trusted, a difference (state a
        ``__setstate__`` drops or rebuilds, array views copied apart) is returned: those
        names are then keyed by their copy's digest (fingerprint.restored_digest), as
        every restore of them will be. For the proof both sides are hashed skimming numpy
        arrays and pandas objects (``ValueHasher.skim``): their pickles are faithful, and
        a large one is never read again for it.
        """
        try:
            unpickled: Any = loads(
                serialised.method, serialised.stream, serialised.buffers, namespace.__getitem__
            )
            loaded, loaded_result = unpickled[0], unpickled[1]
        except Exception as exc:  # user __setstate__ & co.: any failure means not cacheable
            if doubtful:
                raise _Uncacheable(Code.UNLOADABLE(detail=one_line(exc))) from None
            return {}  # a failing library load: the engine's restore will say so
        aliases = {
            id(loaded[name]): name
            for name, value in values.items()
            if notebook_definition(value) == name
        }
        pairs = [
            *(
                (
                    Code.LOSSY(what=f"`{name}`", type=_type_name(values[name])),
                    values[name],
                    loaded[name],
                )
                for name in values
            ),
            (Code.LOSSY(what="its result", type=_type_name(result)), result, loaded_result),
            (Code.SHARING_LOST(), (values, result), (loaded, loaded_result)),
        ]
        if doubtful:
            with ValueHasher() as original, ValueHasher() as copied:
                original.skim = copied.skim = True  # arrays and frames come back as they were
                copied.aliases = aliases
                for reason, value, copy in pairs:
                    try:
                        same = original.hash(value) == copied.hash(copy)
                    except Unhashable:
                        same = False
                    if not same:
                        raise _Uncacheable(reason)
        copies = {}
        with ValueHasher() as full:
            full.aliases = aliases
            for name, digest in measured.items():
                try:
                    copy_digest = full.hash(loaded[name])
                except Unhashable:
                    continue  # its own digest keys it: a miss after a restore at worst
                if copy_digest != digest:
                    copies[name] = copy_digest
        return copies

    @staticmethod
    def _started_in(plan: Record) -> str:
        """The working directory the cell started in: the one its key and files hold for
        (it may change directory itself: interpreter.py replays that)."""
        started = plan.state_before.groups.get(interpreter.CWD)
        return started if isinstance(started, str) else os.getcwd()

    def _put_file(self, data: bytes | str | None) -> str:
        """Store the bytes of a file the cell wrote; returns the blob's name (MISSING: deleted;
        a directory's or symlink's state is kept as is, see files.FileWatch.outputs)."""
        if data is None:
            return MISSING
        if isinstance(data, str):
            return data
        blob = xxhash.xxh3_128_hexdigest(b"file\0" + data)
        if not self.store.has_value(blob):
            self.store.put_value(blob, dumps(data))
        return blob

    @staticmethod
    def _unpicklable(
        values: dict[str, Any], result: Any, refs: dict[str, Any], exc: Unpicklable
    ) -> Reason:
        """Which written value could not be pickled, as a reason."""
        for what, value in [*((f"`{n}`", v) for n, v in values.items()), ("its result", result)]:
            try:
                dumps(value, refs=refs)
            except Unpicklable as inner:
                return Code.UNPICKLABLE(what=what, type=_type_name(value), detail=inner.reason)
        return Code.UNPICKLABLE_TOGETHER(detail=exc.reason)

    @staticmethod
    def _digest(value: Any, hasher: ValueHasher, what: str) -> bytes:
        try:
            return hasher.hash(value)
        except Unhashable as exc:
            raise _Uncacheable(
                Code.UNHASHABLE_OUTPUT(what=what, type=_type_name(value), detail=exc.reason)
            ) from None


class _Uncacheable(Exception):
    """A value the cell wrote cannot be stored: the cell stays uncacheable, for ``reason``."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(str(reason))
        self.reason = reason
