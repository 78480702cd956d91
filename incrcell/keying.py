"""What goes into a cell's cache key: the one rule, for the engine and the sidebar alike.

A key is the hash of a cell's *components*: the key format, the Python
version, the digest of its source, its *inputs* and the versions of the
packages its code and values depend on.  The inputs are, by name:

- each variable it reads: the digest of its value, or ``UNBOUND`` when
  unbound (an unbound builtin is no input: the builtin is what it reads);
- each variable it deletes without reading it: only whether it exists
  (``BOUND`` / ``UNBOUND``: ``del x`` raises unless ``x`` exists);
- each environment variable it reads by literal name: the digest of its
  value or ``UNBOUND``;
- each interpreter item (interpreter.py) it may reach: its value's digest.

The engine computes them from the live namespace before a cell runs
(engine.py); the predictor recomputes them from the cache to foresee what Run
All would restore (predict.py).  Both go through :class:`KeyInputs`, so that
the key the sidebar predicts is the key the engine will look up.
"""

from __future__ import annotations

import builtins
import json
import sys
from typing import Any

import xxhash

from . import fingerprint
from . import store as store_module

#: Bumped whenever what goes into a key changes; old entries then simply miss.
KEY_FORMAT = f"key1-hash{fingerprint.HASH_FORMAT}-store{store_module.FORMAT_VERSION}"

UNBOUND = "<unbound>"
BOUND = "<bound>"  # a name whose existence, not content, is an input (``del x``)

#: What precedes an interpreter item (interpreter.py) among a key's inputs.
STATE_INPUT = "state: "


def environment_input(variable: str) -> str:
    """The input name of the environment variable ``variable``."""
    return f"os.environ[{variable!r}]"


def is_variable_input(name: str) -> bool:
    """Whether the input ``name`` is a notebook variable (not the environment, not state)."""
    return name.isidentifier()


def recorded_variables(components: dict[str, Any]) -> set[str]:
    """The variables (and environment variables) a cell read when these components were made."""
    return {name for name in components.get("inputs", {}) if not name.startswith(STATE_INPUT)}


class KeyInputs:
    """A cell's inputs, added one by one by the rules above; :meth:`key` makes its key."""

    def __init__(self) -> None:
        self.inputs: dict[str, str] = {}

    def read(self, name: str, digest: str | None) -> None:
        """The variable ``name`` the cell reads holds a value of ``digest`` (None: unbound)."""
        if digest is not None:
            self.inputs[name] = digest
        elif not hasattr(builtins, name):
            self.inputs[name] = UNBOUND

    def existence(self, name: str, bound: bool) -> None:
        """The variable ``name`` the cell deletes without reading it is ``bound`` or not."""
        self.inputs[name] = BOUND if bound else UNBOUND

    def environment(self, variable: str, value: str | None) -> None:
        """The environment variable the cell reads holds ``value`` (None: unset)."""
        self.inputs[environment_input(variable)] = (
            UNBOUND if value is None else fingerprint.hash_bytes(value.encode()).hex()
        )

    def state(self, item: str, digest: str) -> None:
        """The interpreter item the cell may reach holds a value of ``digest``."""
        self.inputs[STATE_INPUT + item] = digest

    def recorded(self, name: str, value: str) -> None:
        """An input only its recorder knows how to read, assumed as recorded (the predictor)."""
        self.inputs[name] = value

    def components(self, source_digest: str, packages: dict[str, str]) -> dict[str, Any]:
        """What the key is made of; kept as the cell's lineage to explain misses."""
        return key_components(source_digest, self.inputs, packages)


def key_components(
    source_digest: str, inputs: dict[str, str], packages: dict[str, str]
) -> dict[str, Any]:
    """What a cell's key is made of; kept as the cell's lineage to explain misses."""
    return {
        "format": KEY_FORMAT,
        "python": sys.version,
        "source": source_digest,
        "inputs": inputs,
        "packages": packages,
    }


# json.dumps(..., sort_keys=True)'s encoder, made once rather than for every key
_ENCODER = json.JSONEncoder(sort_keys=True)


def cell_key(components: dict[str, Any]) -> str:
    """The cache key of the cell with these :func:`key_components`."""
    return xxhash.xxh3_128_hexdigest(_ENCODER.encode(components).encode())
