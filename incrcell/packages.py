"""What a module *is*, as far as a cache key is concerned.

A cell that imports or uses ``numpy`` must miss when numpy is upgraded, and a
cell that uses the user's own ``helpers.py`` must miss when that file is
edited.  This module turns a top-level module name into a short, stable
string that changes exactly when the code behind the name changes:

- an installed distribution: ``"numpy==2.4.6"`` (from ``importlib.metadata``);
- the standard library or a built-in module: ``"stdlib"`` (the Python version
  is part of every key already);
- a *local* module (a file of the user's, outside every install prefix): a
  hash of its source, so an edit invalidates the cells that use it;
- a module that cannot be found: ``"missing"`` (the cell will fail anyway).

The lookup never imports the module (``importlib.util.find_spec`` on a
top-level name only locates it), because importing runs user code.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
from pathlib import Path

import xxhash

STDLIB = "stdlib"
MISSING = "missing"
LOCAL = "local:"  # prefix of a local module's fingerprint


@functools.cache
def _install_prefixes() -> tuple[str, ...]:
    """Directories whose modules are installed code, not the user's own."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(sysconfig.get_paths().values())
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # some embedded interpreters lack it
        pass
    user_site = site.getusersitepackages()
    if user_site:
        paths.add(user_site)
    return tuple(sorted({os.path.realpath(p) + os.sep for p in paths if p}))


def is_local_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is the user's own code rather than an installed or stdlib file."""
    real = os.path.realpath(path)
    return not real.startswith(_install_prefixes())


@functools.cache
def _distributions() -> dict[str, list[str]]:
    # About 0.1 s on a typical environment: computed once per process.
    return importlib.metadata.packages_distributions()


@functools.cache
def _distribution_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _local_source_hash(origin: str, search_locations: list[str] | None) -> str:
    """Hash of a local module's source: the file, or every ``.py`` file of a package."""
    hasher = xxhash.xxh3_128()
    if search_locations:
        files = sorted(
            p for location in search_locations for p in Path(location).rglob("*.py")
        )
    else:
        files = [Path(origin)]
    for file in files:
        hasher.update(str(file).encode("utf-8", "surrogatepass"))
        try:
            hasher.update(file.read_bytes())
        except OSError:
            hasher.update(b"<unreadable>")
    return LOCAL + hasher.hexdigest()


def module_fingerprint(name: str) -> str:
    """A string that changes when the code behind top-level module ``name`` changes."""
    top = name.partition(".")[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return STDLIB
    module = sys.modules.get(top)
    if module is not None and getattr(module, "__spec__", None) is not None:
        spec = module.__spec__
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
    if spec is None:
        return MISSING
    origin = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
    locations = list(spec.submodule_search_locations or [])
    location = origin or (locations[0] if locations else None)
    if location is None:
        return STDLIB
    if is_local_path(location):
        return _local_source_hash(location, locations or None)
    dists = _distributions().get(top)
    if not dists:
        return "unpackaged:" + os.path.realpath(location)
    return ",".join(f"{d}=={_distribution_version(d)}" for d in sorted(set(dists)))


def package_versions(names: set[str] | frozenset[str]) -> dict[str, str]:
    """``{top_level_name: fingerprint}`` for the non-stdlib modules among ``names``."""
    result = {}
    for top in sorted({n.partition(".")[0] for n in names if n}):
        fingerprint = module_fingerprint(top)
        if fingerprint != STDLIB:
            result[top] = fingerprint
    return result
