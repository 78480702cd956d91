"""The global random states a cell draws from: inputs it reads, outputs it leaves.

``random.random()``, ``np.random.rand()`` and ``torch.rand()`` draw from a
generator hidden in a module, not from any variable, yet their results
depend on its state, and they advance it for the cells that follow.  So for
each global generator (``random``; numpy's legacy one when numpy is
imported; torch's CPU one when torch is imported) the engine snapshots the
state before a recording cell and after it:

* unchanged: the cell did not draw; nothing to record;
* changed: the state *before* is an input (a restore needs exactly that
  state, else the cell runs: "the global random state of numpy differs") and
  the state *after* is an output, set again on a restore so that the next
  cells draw exactly the numbers they would in a plain run.

Fresh entropy.  ``random`` and numpy seed their generator from the operating
system's entropy when imported (torch starts from a fixed seed), and
``random.seed()``, ``np.random.seed()`` without a seed and ``torch.seed()``
reseed from entropy.  Until the notebook seeds such a generator with a value,
every draw is different in every run: a cell that draws from it is
nondeterministic (it runs every time and says so), and a cell that merely
imports the module leaves no state to restore (restoring the recording
kernel's state would turn every later fresh draw into a replay).

While a cell records, :class:`SeedWatch` wraps the seeding functions to see
when, and how, each generator was seeded, and whether it was drawn from
while it held fresh entropy; a module imported during the cell is caught on
import (a finder on ``sys.meta_path``, in place only while a recording cell
runs and only until every generator's module is imported).  Seeding through
a reference taken earlier (``from random import seed``) is not seen; the
generator then still counts as fresh or is keyed on its state before, which
fails safe (the cell reruns).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import pickle
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import xxhash

from .imports import AfterImport


@dataclass(frozen=True)
class Generator:
    """One global generator: how to read and set its state, and how it is seeded."""

    name: str  # as shown to the user
    module: str  # present in sys.modules when the generator can have been used
    get: Callable[[], Any]
    set: Callable[[Any], None]
    seeders: tuple[tuple[str, str], ...]  # (module, attribute) of its seeding functions
    entropy_on_import: bool  # seeded from the operating system's entropy when imported
    # whether a call of a seeding function (attribute, args, kwargs) seeds from entropy
    fresh: Callable[[str, tuple, dict], bool]


def _numpy() -> Any:
    # numpy imports numpy.random lazily: a restore may set its state before anything used it
    return importlib.import_module("numpy.random")


def _torch() -> Any:
    return sys.modules["torch"]


def _no_seed(keyword: str) -> Callable[[str, tuple, dict], bool]:
    """``seed()`` / ``seed(None)``: reseeds from entropy."""
    return lambda attribute, args, kwargs: (args[0] if args else kwargs.get(keyword)) is None


GENERATORS = (
    Generator(
        "random",
        "random",
        lambda: sys.modules["random"].getstate(),
        lambda state: sys.modules["random"].setstate(state),
        (("random", "seed"),),
        True,
        _no_seed("a"),
    ),
    Generator(
        "numpy",
        "numpy.random",
        lambda: _numpy().get_state(),
        lambda state: _numpy().set_state(state),
        (("numpy.random", "seed"),),
        True,
        _no_seed("seed"),
    ),
    Generator(
        "torch",
        "torch",
        lambda: _torch().random.get_rng_state(),
        lambda state: _torch().random.set_rng_state(state),
        (
            ("torch", "manual_seed"),
            ("torch", "seed"),
            ("torch.random", "manual_seed"),
            ("torch.random", "seed"),
        ),
        False,
        lambda attribute, args, kwargs: attribute == "seed",
    ),
)
_BY_NAME = {generator.name: generator for generator in GENERATORS}


def entropy_on_import(name: str) -> bool:
    """Whether generator ``name`` holds fresh entropy when nothing seeded it yet."""
    return _BY_NAME[name].entropy_on_import


def snapshot() -> dict[str, Any]:
    """The current state of every global generator whose module is imported."""
    states = {}
    for generator in GENERATORS:
        if generator.module in sys.modules:
            try:
                states[generator.name] = generator.get()
            except Exception:  # a half-imported or unusual module: nothing to track
                continue
    return states


def state_digest(state: Any) -> str:
    """A content digest of a generator state (tuples of ints, arrays, tensors)."""
    if type(state).__module__.startswith("torch"):
        state = bytes(state.numpy())
    return xxhash.xxh3_128_hexdigest(pickle.dumps(state, protocol=5))


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of the generators whose state differs between two snapshots."""
    return [
        name
        for name, state in after.items()
        if name not in before or not _same(state, before[name])
    ]


def _same(a: Any, b: Any) -> bool:
    """Whether two generator states are equal: tuples of ints compare directly (fast);
    states holding arrays, whose ``==`` is element-wise, part by part; anything else
    (tensors) by digest."""
    try:
        return bool(a == b)
    except (ValueError, TypeError, RuntimeError):
        pass
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool((a == b).all())
    except Exception:
        return state_digest(a) == state_digest(b)


def restore(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`snapshot`)."""
    for name, state in states.items():
        _BY_NAME[name].set(state)


class SeedWatch:
    """While active, follows how the global generators are seeded and drawn from.

    ``before``: the states when the cell started (:func:`snapshot`); ``fresh``:
    the generators that held fresh entropy then.  Afterwards:

    * ``before`` also holds the state of each generator whose module the cell
      imported, as it was right after the import;
    * ``seeded_first``: generators seeded before anything drew from them;
    * ``seeded``: generators seeded at least once;
    * ``fresh``: the generators that hold fresh entropy now;
    * :meth:`fresh_draws`: the generators drawn from while they held fresh entropy.

    Reading a generator's state costs (numpy's: tens of microseconds), so the
    watch reads states only when a seeding function is called; the end of the
    cell is judged from the states the engine reads anyway.
    """

    def __init__(self, before: dict[str, Any], fresh: frozenset[str] = frozenset()) -> None:
        self.before = dict(before)
        self.fresh = {name for name in fresh if name in before}
        self.seeded_first: set[str] = set()
        self.seeded: set[str] = set()
        self._drew_fresh: set[str] = set()  # seen when a seeding function was called
        self._reference: dict[str, Any] = {}  # state right after the cell last seeded it
        self._saved: list[tuple[Any, str, Any]] = []
        self._finder: AfterImport | None = None

    def start(self) -> SeedWatch:
        for generator in GENERATORS:
            if generator.name in self.before:
                self._wrap_seeders(generator)
        missing = {
            generator.module: generator
            for generator in GENERATORS
            if generator.name not in self.before
        }
        if missing:
            self._finder = AfterImport(
                missing.__contains__, lambda name, module: self._imported(missing.pop(name))
            )
            sys.meta_path.insert(0, self._finder)
        return self

    def stop(self) -> SeedWatch:
        if self._finder is not None:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self._finder)
            self._finder = None
        for module, attribute, original in reversed(self._saved):
            setattr(module, attribute, original)
        self._saved.clear()
        return self

    def fresh_draws(self, after: dict[str, Any], changed: Iterable[str]) -> set[str]:
        """The generators drawn from while they held fresh entropy, given the states
        ``after`` the cell and the generators whose state ``changed`` from ``before``."""
        drew = set(self._drew_fresh)
        changed = set(changed)
        for name in self.fresh & after.keys():
            reference = self._reference.get(name)
            if name in changed if reference is None else not _same(after[name], reference):
                drew.add(name)
        return drew

    def _imported(self, generator: Generator) -> None:
        """Right after the import of ``generator``'s module, before the cell can draw."""
        try:
            state = generator.get()
        except Exception:  # an unusual module: untracked, its draws key on nothing
            return
        self.before[generator.name] = state
        if generator.entropy_on_import:
            self.fresh.add(generator.name)
        self._wrap_seeders(generator)

    def _wrap_seeders(self, generator: Generator) -> None:
        for module_name, attribute in generator.seeders:
            module = sys.modules.get(module_name)
            original = getattr(module, attribute, None)
            if original is None:
                continue
            self._saved.append((module, attribute, original))
            setattr(module, attribute, self._wrap(generator, attribute, original))

    def _check_drawn(self, generator: Generator) -> None:
        """Note a draw from fresh entropy since the last seeding (or the start)."""
        name = generator.name
        if name in self.fresh and name not in self._drew_fresh:
            try:
                if not _same(generator.get(), self._reference.get(name, self.before[name])):
                    self._drew_fresh.add(name)
            except Exception:  # cannot tell: count it as drawn, which reruns the cell
                self._drew_fresh.add(name)

    def _wrap(
        self, generator: Generator, attribute: str, original: Callable[..., Any]
    ) -> Callable[..., Any]:
        @functools.wraps(original)
        def seed(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            name = generator.name
            try:
                if name not in self.seeded and (
                    state_digest(generator.get()) == state_digest(self.before[name])
                ):
                    self.seeded_first.add(name)
                self._check_drawn(generator)
                fresh = generator.fresh(attribute, args, kwargs)
            except Exception:  # noting must never break the user's call
                fresh = True
            result = original(*args, **kwargs)
            if fresh:
                self.fresh.add(name)
            else:
                self.fresh.discard(name)
                self.seeded.add(name)
            try:
                self._reference[name] = generator.get()
            except Exception:  # cannot follow it: count it as drawn while fresh
                self.fresh.add(name)
                self._drew_fresh.add(name)
            return result

        return seed
