"""The ``incrcell`` command: look after the cache from a shell.

``incrcell cache info|ls|gc|clear|verify``, each with ``--help`` and
``--json`` (for scripts); sizes are human-readable (``1.4 GB``).  The cache
is the one notebooks use: ``$INCRCELL_CACHE_DIR`` (or the default), its cap
``$INCRCELL_MAX_SIZE``, its age limit ``$INCRCELL_MAX_AGE``; ``--cache-dir``
points elsewhere.  Safe while kernels use the cache: every change is a
removal of whole files, and a kernel that finds one gone runs the cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import run
from .config import Config, format_age, format_size, parse_age, parse_size
from .store import Collection, EntryInfo, Store, StoreError, open_store

_SORTS = {
    "used": lambda info: -info.used,
    "created": lambda info: -info.created,
    "size": lambda info: -info.size,
    "source": lambda info: _first_line(info.source),
}


def _first_line(source: str) -> str:
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _age_arg(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        type=Path,
        metavar="PATH",
        help="the cache directory (default: $INCRCELL_CACHE_DIR, else "
        "$XDG_CACHE_HOME/incrcell, else ~/.cache/incrcell)",
    )
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    top = argparse.ArgumentParser(
        prog="incrcell",
        description="incrcell: incremental cell execution for Jupyter. Look after its cache.",
    )
    groups = top.add_subparsers(dest="group", required=True, metavar="{cache,run}")
    run.add_parser(groups)
    cache = groups.add_parser(
        "cache",
        help="inspect and manage the cache",
        description="Inspect and manage the cache of cell executions.",
    )
    commands = cache.add_subparsers(
        dest="command", required=True, metavar="{info,ls,gc,clear,verify}"
    )
    commands.add_parser(
        "info",
        parents=[common],
        help="location, size against the cap, counts",
        description="Where the cache is, its size against its cap, how many "
        "entries and values it holds, the oldest and newest use.",
    )
    ls = commands.add_parser(
        "ls",
        parents=[common],
        help="list entries",
        description="One line per entry: the first line of the cell's "
        "source, its size (with its values), when it was "
        "created and last used.",
    )
    ls.add_argument(
        "--sort",
        choices=sorted(_SORTS),
        default="used",
        help="order (default: most recently used first)",
    )
    ls.add_argument("--reverse", action="store_true", help="reverse the order")
    gc = commands.add_parser(
        "gc",
        parents=[common],
        help="evict least recently used entries",
        description="Evict the least recently used entries until the "
        "cache fits its cap, and entries unused for longer "
        "than the age limit; then the values no entry needs.",
    )
    gc.add_argument(
        "--max-size",
        type=_size_arg,
        metavar="S",
        help="the size to fit in, e.g. 5GB (default: the cap, $INCRCELL_MAX_SIZE)",
    )
    gc.add_argument(
        "--max-age",
        type=_age_arg,
        metavar="D",
        help="evict entries unused for longer, e.g. 30d (default: $INCRCELL_MAX_AGE)",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    clear = commands.add_parser(
        "clear",
        parents=[common],
        help="delete the whole cache",
        description="Delete every entry, value and note.",
    )
    clear.add_argument("--yes", action="store_true", help="do not ask")
    commands.add_parser(
        "verify",
        parents=[common],
        help="check every file; remove what fails",
        description="Check every cache file's checksum and signature; remove "
        "and report what fails (and entries whose values are gone).",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.group == "run":
        return run.main(args)
    config = Config()
    if args.cache_dir is not None:
        config.cache_dir = args.cache_dir.expanduser()
    try:
        store = open_store(
            config.cache_dir, max_size=config.max_size, max_age=config.max_age, housekeeping=False
        )
        return _COMMANDS[args.command](store, args)
    except StoreError as exc:
        print(f"incrcell: {exc.reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _emit(args: argparse.Namespace, data: dict[str, Any], text: list[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(text))


def _info(store: Store, args: argparse.Namespace) -> int:
    usage = store.usage()
    data = {"location": store.url, **dataclasses.asdict(usage), "max_age": store.max_age}
    age = f", entries unused for {format_age(store.max_age)} are evicted" if store.max_age else ""
    _emit(
        args,
        data,
        [
            f"location   {store.url}",
            f"size       {format_size(usage.size)} of {format_size(usage.cap)} "
            f"({100 * usage.size / usage.cap if usage.cap else 0:.0f}%){age}",
            f"entries    {usage.entries}",
            f"values     {usage.values}",
            f"oldest use {_when(usage.oldest_use)}",
            f"newest use {_when(usage.newest_use)}",
        ],
    )
    return 0


def _ls(store: Store, args: argparse.Namespace) -> int:
    entries: list[EntryInfo] = sorted(
        store.inventory().entries, key=_SORTS[args.sort], reverse=args.reverse
    )
    data = {
        "location": store.url,
        "entries": [
            {
                "key": info.key,
                "source": info.source,
                "size": info.size,
                "created": info.created,
                "used": info.used,
                "values": sorted(info.values),
            }
            for info in entries
        ],
    }
    text = [f"{'size':>9}  {'created':<16}  {'last used':<16}  source"]
    text += [
        f"{format_size(info.size):>9}  {_when(info.created):<16}  {_when(info.used):<16}  "
        f"{_first_line(info.source)[:60]}"
        for info in entries
    ]
    text.append(f"{len(entries)} entries in {store.url}")
    _emit(args, data, text)
    return 0


def _report(store: Store, done: Collection, dry_run: bool = False) -> dict[str, Any]:
    return {
        "location": store.url,
        "dry_run": dry_run,
        **dataclasses.asdict(done),
        "removed": [{"file": name, "why": why} for name, why in done.removed],
        "unreadable": [{"file": name, "why": why} for name, why in done.unreadable],
    }


def _gc(store: Store, args: argparse.Namespace) -> int:
    done = store.gc(args.max_size, args.max_age, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    limit = args.max_size if args.max_size is not None else store.cap
    text = [
        f"{verb} {done.entries} entries, {done.values} values, {done.notes} notes: "
        f"{format_size(done.freed)}; the cache {'would be' if args.dry_run else 'is'} "
        f"{format_size(done.size_after)} of {format_size(limit)}"
    ]
    text += [f"  could not read {name}: {why}" for name, why in done.unreadable]
    _emit(args, _report(store, done, args.dry_run), text)
    return 0


def _clear(store: Store, args: argparse.Namespace) -> int:
    size = store.usage().size
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"incrcell: not clearing {store.url} without --yes", file=sys.stderr)
            return 1
        answer = input(f"Delete the whole cache in {store.url} ({format_size(size)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 1
    store.clear()
    _emit(
        args,
        {"location": store.url, "freed": size},
        [f"cleared {store.url}: {format_size(size)} freed"],
    )
    return 0


def _verify(store: Store, args: argparse.Namespace) -> int:
    done = store.verify()
    text = [f"removed {name}: {why}" for name, why in done.removed]
    text += [f"could not read {name}: {why}" for name, why in done.unreadable]
    text.append(
        f"{len(done.removed)} files failed verification and were removed "
        f"({format_size(done.freed)}); {len(done.unreadable)} could not be read"
        if done.removed or done.unreadable
        else f"every file in {store.url} verifies"
    )
    _emit(args, _report(store, done), text)
    return 1 if done.removed or done.unreadable else 0


_COMMANDS = {"info": _info, "ls": _ls, "gc": _gc, "clear": _clear, "verify": _verify}


if __name__ == "__main__":
    sys.exit(main())
