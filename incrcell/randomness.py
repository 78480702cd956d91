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

A cell that seeds a generator before drawing from it (``np.random.seed(0)``
first) does not depend on the state before: while the cell records, the
seeding functions are wrapped (:class:`SeedWatch`) to see whether the
generator was still untouched when it was seeded.  Seeding through a
reference taken earlier (``from random import seed``) is not seen; the cell
is then keyed on the state before, which fails safe (it reruns after a
kernel restart).
"""

from __future__ import annotations

import functools
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xxhash


@dataclass(frozen=True)
class Generator:
    """One global generator: how to read and set its state, and how it is seeded."""

    name: str  # as shown to the user
    module: str  # present in sys.modules when the generator can have been used
    get: Callable[[], Any]
    set: Callable[[Any], None]
    seeders: tuple[tuple[str, str], ...]  # (module, attribute) of its seeding functions


def _numpy() -> Any:
    return sys.modules["numpy"].random


def _torch() -> Any:
    return sys.modules["torch"]


GENERATORS = (
    Generator("random", "random", lambda: sys.modules["random"].getstate(),
              lambda state: sys.modules["random"].setstate(state), (("random", "seed"),)),
    Generator("numpy", "numpy", lambda: _numpy().get_state(),
              lambda state: _numpy().set_state(state), (("numpy.random", "seed"),)),
    Generator("torch", "torch", lambda: _torch().random.get_rng_state(),
              lambda state: _torch().random.set_rng_state(state),
              (("torch", "manual_seed"), ("torch", "seed"), ("torch.random", "manual_seed"),
               ("torch.random", "seed"))),
)


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
    return [name for name, state in after.items()
            if name not in before or not _same(state, before[name])]


def _same(a: Any, b: Any) -> bool:
    """Whether two generator states are equal: tuples of ints compare directly (fast);
    states holding arrays or tensors, whose ``==`` is element-wise, by digest."""
    try:
        return bool(a == b)
    except (ValueError, TypeError, RuntimeError):
        return state_digest(a) == state_digest(b)


def restore(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`snapshot`)."""
    by_name = {generator.name: generator for generator in GENERATORS}
    for name, state in states.items():
        by_name[name].set(state)


class SeedWatch:
    """While active, notes the generators seeded before anything drew from them."""

    def __init__(self, before: dict[str, Any]) -> None:
        self.before = before
        self.seeded_first: set[str] = set()
        self.seeded: set[str] = set()  # generators seeded at least once
        self._saved: list[tuple[Any, str, Any]] = []

    def start(self) -> SeedWatch:
        for generator in GENERATORS:
            for module_name, attribute in generator.seeders:
                module = sys.modules.get(module_name)
                original = getattr(module, attribute, None)
                if original is None or generator.name not in self.before:
                    continue
                self._saved.append((module, attribute, original))
                setattr(module, attribute, self._wrap(generator, original))
        return self

    def stop(self) -> SeedWatch:
        for module, attribute, original in reversed(self._saved):
            setattr(module, attribute, original)
        self._saved.clear()
        return self

    def _wrap(self, generator: Generator, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def seed(*args: Any, **kwargs: Any) -> Any:
            name = generator.name
            try:
                if name not in self.seeded and (
                        state_digest(generator.get()) == state_digest(self.before[name])):
                    self.seeded_first.add(name)
            except Exception:  # noting must never break the user's call
                pass
            self.seeded.add(name)
            return original(*args, **kwargs)
        return seed
