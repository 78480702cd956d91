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

import ast
import contextlib
import csv
import functools
import importlib.metadata
import importlib.util
import inspect
import json
import os
import site
import stat
import sys
import sysconfig
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import xxhash

from .config import default_cache_dir

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


def is_local_code(path: str) -> bool:
    """:func:`is_local_path` for the file of an imported module: the real path of its
    directory is resolved once per directory (hundreds of modules share a few dozen
    directories, and resolving costs a ``stat`` per path component); only a file that is
    itself a symlink is resolved whole.  Module directories do not move while a process
    runs; data paths, which may, go through :func:`is_local_path`."""
    directory, name = os.path.split(os.path.abspath(path))
    if os.path.islink(path):
        return is_local_path(path)
    return not os.path.join(_real_directory(directory), name).startswith(_install_prefixes())


@functools.lru_cache(maxsize=4096)
def _real_directory(directory: str) -> str:
    return os.path.realpath(directory)


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    """Top-level module -> the distributions that install it.

    Reading every distribution's file list takes 0.3 s with JupyterLab's dependencies
    installed: the first cell of every kernel paid it.  So the map is kept on disk, one file
    per environment, with the directories distributions are found in and their mtimes
    (installing, removing or upgrading one adds or removes a ``.dist-info`` entry there):
    a restarted kernel reads it back while they are unchanged.  An unreadable, malformed or
    outdated file is computed anew.
    """
    path, installed = _distributions_file()
    try:
        with open(path, encoding="utf-8") as file:
            kept = json.load(file)
        found = kept["map"] if kept.get("installed") == installed else None
        if isinstance(found, dict) and all(
            isinstance(dists, list) and all(isinstance(d, str) for d in dists)
            for dists in found.values()
        ):
            return found
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    mapping = top_level_map(importlib.metadata.distributions())
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps({"installed": installed, "map": mapping}), encoding="utf-8")
        os.replace(temp, path)
    return mapping


def top_level_map(
    distributions: Iterable[importlib.metadata.Distribution],
) -> dict[str, list[str]]:
    """Top-level module -> the names of the ``distributions`` that install it.

    What Python 3.13's ``importlib.metadata.packages_distributions`` answers, on every
    version: the names a distribution declares (``top_level.txt``), else the first part of
    each path its file list holds (``RECORD``; ``SOURCES.txt`` for an egg), or a single
    file's module name, keeping those without a dot.  3.10 reads declarations only (the
    modules of wheels built by hatchling or flit were then fingerprinted by their path on
    this machine, which no other machine shares), 3.11 infers from ``.py`` files only.
    Parsed from the text rather than through a ``PackagePath`` per file: reading the
    distributions of a JupyterLab environment (21,000 files) took 0.33 s, now 0.05 s.
    """
    mapping: dict[str, list[str]] = {}
    for dist in distributions:
        tops = (dist.read_text("top_level.txt") or "").split() or _inferred_tops(dist)
        if tops:
            name = _declared_name(dist)
            for top in tops:
                mapping.setdefault(top, []).append(name)
    return mapping


def _inferred_tops(dist: importlib.metadata.Distribution) -> list[str]:
    """The top-level names a distribution without ``top_level.txt`` installs (sorted)."""
    record = dist.read_text("RECORD")
    if record:  # CSV: a path with a comma or a quote is quoted
        names = (
            next(csv.reader([line]))[0] if line.startswith('"') else line.partition(",")[0]
            for line in record.splitlines()
        )
    else:
        names = (line for line in (dist.read_text("SOURCES.txt") or "").splitlines())
    tops = {_top_of(name) for name in names if name}
    return sorted(top for top in tops if "." not in top)


def _top_of(path: str) -> str:
    """The first part of ``path`` if it has more than one (as ``PurePosixPath.parts``), else
    its module name (``inspect.getmodulename``), else itself."""
    head, slash, rest = path.partition("/")
    if slash and head and head != "." and rest and rest[0] not in "./":
        return head  # the common case: "numpy/core/x.py"
    parts = [part for part in path.split("/") if part and part != "."]
    if path.startswith("/"):
        parts.insert(0, "/")
    if len(parts) > 1:
        return parts[0]
    single = parts[0] if parts else ""
    return inspect.getmodulename(single) or single


def _declared_name(dist: importlib.metadata.Distribution) -> str:
    """The ``Name`` field of a distribution's metadata, read from the header's lines (the
    email parser behind ``dist.metadata`` reads and parses the whole file)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    for line in text.splitlines():
        if not line.strip():
            break
        field, colon, value = line.partition(":")
        if colon and field.strip().lower() == "name":
            return value.strip()
    return dist.metadata["Name"]


def _distributions_file() -> tuple[Path, str]:
    """Where :func:`_distributions` keeps this environment's map, and what identifies the
    distributions installed now (the directories they are found in, with their mtimes)."""
    environment = xxhash.xxh3_64_hexdigest(f"{sys.version}\0{sys.prefix}".encode())
    state = xxhash.xxh3_128()
    prefixes = _install_prefixes()
    for entry in sys.path:
        try:
            info = os.stat(entry or ".")
        except OSError:
            continue
        # installed code's directories (a local one's modules are fingerprinted by source)
        inside = os.path.join(os.path.realpath(entry or "."), "")
        if stat.S_ISDIR(info.st_mode) and inside.startswith(prefixes):
            state.update(f"{entry}\0{info.st_mtime_ns}\0".encode())
    path = default_cache_dir() / "python" / f"top-levels-{environment}.json"
    return path, state.hexdigest()


@functools.cache
def _distribution_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


#: What in a module's source reads the module's own location (over-approximate: a mention
#: in a comment counts too, which only costs sharing the entry with another checkout).
_OWN_LOCATION = (b"__file__", b"__path__", b"__spec__", b"importlib.resources", b"getfile")


def _local_source_hash(origin: str, search_locations: list[str] | None) -> str:
    """Hash of a local module's source (the file, or every ``.py`` file of a package),
    and of the sources of the other local modules it imports, transitively: editing
    ``utils.py`` must rerun the cells that use ``helpers``, which imports it.  The path
    of a source that reads its own location is hashed too (see :func:`_source_files`)."""
    hasher = xxhash.xxh3_128()
    seen: set[str] = set()
    todo = [_source_files(origin, search_locations)]
    while todo:
        for file, name in todo.pop():
            if str(file) in seen:
                continue
            seen.add(str(file))
            hasher.update(name.encode("utf-8", "surrogatepass"))
            try:
                source = file.read_bytes()
            except OSError:
                hasher.update(b"<unreadable>")
                continue
            hasher.update(source)
            if any(token in source for token in _OWN_LOCATION):
                # code that reads where it is (``Path(__file__).parent / "data"``) leaves
                # this checkout's path in what it makes: another place is another module
                hasher.update(os.fsencode(os.path.abspath(file)))
            for name in sorted(_imported_tops(source)):  # parsed once per content
                spec = _find_spec(name)
                location = spec and (
                    spec.origin or next(iter(spec.submodule_search_locations or []), None)
                )
                if location and location not in ("built-in", "frozen") and is_local_code(location):
                    todo.append(
                        _source_files(
                            spec.origin, list(spec.submodule_search_locations or []) or None
                        )
                    )
    return LOCAL + hasher.hexdigest()


def _source_files(origin: str | None, search_locations: list[str] | None) -> list[tuple[Path, str]]:
    """The source files of a module or package, each with its name as the import system
    sees it (``helpers.py``, ``pkg/sub/x.py``): what the fingerprint covers besides their
    content, so that the same checkout at another path (a colleague's, CI's) has the same
    fingerprint, while moving code between files changes it."""
    if search_locations:
        return sorted(
            (p, p.relative_to(Path(location).parent).as_posix())
            for location in search_locations
            for p in Path(location).rglob("*.py")
        )
    return [(Path(origin), Path(origin).name)] if origin else []


@functools.lru_cache(maxsize=4096)
def _imported_tops(source: bytes) -> frozenset[str]:
    """Top-level names of the absolute imports in ``source`` (none if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return frozenset()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.partition(".")[0])
    return frozenset(
        name
        for name in found
        if name not in sys.builtin_module_names and name not in sys.stdlib_module_names
    )


def _find_spec(top: str) -> Any:
    """The spec of top-level module ``top`` (loaded or not), without importing it;
    None if absent."""
    module = sys.modules.get(top)
    if module is not None and getattr(module, "__spec__", None) is not None:
        return module.__spec__
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None


def module_fingerprint(name: str) -> str:
    """A string that changes when the code behind top-level module ``name`` changes."""
    top = name.partition(".")[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return STDLIB
    spec = _find_spec(top)
    if spec is None:
        return MISSING
    origin = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
    locations = list(spec.submodule_search_locations or [])
    location = origin or (locations[0] if locations else None)
    if location is None:
        return STDLIB
    if is_local_code(location):
        fingerprint = _local_source_hash(location, locations or None)
        module = sys.modules.get(top)
        if module is not None:  # the source it was (re)loaded from, as first seen
            loaded = _load_signature(module)
            if _imported.get(top, (None,))[0] != loaded:
                _imported[top] = (loaded, fingerprint)
        return fingerprint
    dists = _distributions().get(top)
    if not dists:
        return "unpackaged:" + os.path.realpath(location)
    return ",".join(f"{d}=={_distribution_version(d)}" for d in sorted(set(dists)))


# top-level local module -> (its _load_signature, fingerprint of its source when first seen
# so): the code that runs is the code that was loaded, whatever the disk says now
_imported: dict[str, tuple[tuple[int, ...], str]] = {}


def _load_signature(module: Any) -> tuple[int, ...]:
    """Identifies one loading of ``module``'s code.

    A reload (``importlib.reload``, %autoreload's superreload) executes the
    module again and creates new functions and classes; %autoreload's
    deduperreload patches the code objects of the existing ones.  Either way
    some id below changes.  Changes to module-level data alone are not seen:
    such a module stays "changed" until the kernel restarts, which fails safe.
    """
    name = module.__name__
    ids = [id(module)]
    for value in list(vars(module).values()):
        if (
            isinstance(value, (type, types.FunctionType))
            and getattr(value, "__module__", None) == name
        ):
            members = vars(value).values() if isinstance(value, type) else [value]
            ids.append(id(value))
            ids.extend(id(m.__code__) for m in members if isinstance(m, types.FunctionType))
    return tuple(ids)


def note_loaded(names: Iterable[str]) -> None:
    """Remember the source the local modules among ``names`` were just loaded from.

    Called right after a cell that imports them ran, before anyone can edit
    them: a later edit is then seen as a change since the import.
    """
    for name in names:
        top = name.partition(".")[0]
        if top in sys.modules:
            module_fingerprint(top)


def changed_since_import(versions: dict[str, str]) -> str:
    """A local module among ``versions`` (from :func:`package_versions`) whose source
    changed on disk after it was imported ('' if none).

    The code in memory is then not the code on disk, so no key can say what
    runs: cells using it run until the module is reloaded (%autoreload) or the
    kernel restarts.
    """
    for top, fingerprint in sorted(versions.items()):
        seen = _imported.get(top)
        if fingerprint.startswith(LOCAL) and seen is not None and seen[1] != fingerprint:
            return top
    return ""


def package_versions(names: set[str] | frozenset[str]) -> dict[str, str]:
    """``{top_level_name: fingerprint}`` for the non-stdlib modules among ``names``."""
    result = {}
    for top in sorted({n.partition(".")[0] for n in names if n}):
        fingerprint = module_fingerprint(top)
        if fingerprint != STDLIB:
            result[top] = fingerprint
    return result
