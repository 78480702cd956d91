"""The ``incrcell`` command: look after the cache and the signing key from a shell.

``incrcell cache info|ls|gc|clear|verify|push`` and ``incrcell key show|generate``,
each with ``--help`` and ``--json`` (for scripts); sizes are human-readable
(``1.4 GB``).  The cache is the one notebooks use: ``$INCRCELL_CACHE_DIR`` (or
the default), its cap ``$INCRCELL_MAX_SIZE``, its age limit ``$INCRCELL_MAX_AGE``,
the remote behind it ``$INCRCELL_REMOTE`` (``$INCRCELL_REMOTE_MODE``);
``--cache-dir`` points elsewhere.  Safe while kernels use the cache: every
change is a removal of whole files, and a kernel that finds one gone runs the
cell; the remote is only ever added to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import run
from .config import Config, format_age, format_size, parse_age, parse_size
from .store import Collection, EntryInfo, Store, StoreError, open_store
from .store.signing import (
    KEY_ENV,
    TRUSTED_ENV,
    KeyRefused,
    Signer,
    fingerprint,
    key_path,
    new_private_key,
    parse_trusted,
    private_text,
    public_text,
    signing_key,
)

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
    groups = top.add_subparsers(dest="group", required=True, metavar="{cache,key,run}")
    run.add_parser(groups)
    cache = groups.add_parser(
        "cache",
        help="inspect and manage the cache",
        description="Inspect and manage the cache of cell executions.",
    )
    commands = cache.add_subparsers(
        dest="command", required=True, metavar="{info,ls,gc,clear,verify,push}"
    )
    commands.add_parser(
        "info",
        parents=[common],
        help="location, size against the cap, counts, the remote",
        description="Where the cache is, its size against its cap, how many "
        "entries and values it holds, the oldest and newest use; the remote "
        "cache behind it ($INCRCELL_REMOTE), its mode and how many entries it holds.",
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
    commands.add_parser(
        "push",
        parents=[common],
        help="upload what the remote lacks",
        description="Upload every value, entry and note of the local cache that the "
        "remote ($INCRCELL_REMOTE, with INCRCELL_REMOTE_MODE=readwrite) lacks. Nothing "
        "in the remote is replaced: an object another writer made first stays theirs.",
    )
    key = groups.add_parser(
        "key",
        help="your signing key",
        description="Your Ed25519 signing key: every cache file you write is signed with it.",
    )
    keys = key.add_subparsers(dest="command", required=True, metavar="{show,generate}")
    show = keys.add_parser(
        "show",
        help="your public key (the last line, to paste into INCRCELL_TRUSTED_KEYS)",
        description="Where your key is, its fingerprint, the keys you trust; the last "
        f"line is your public key, as others paste it into ${TRUSTED_ENV}. The key is "
        "created on first use.",
    )
    show.add_argument("--json", action="store_true", help="print JSON, for scripts")
    generate = keys.add_parser(
        "generate",
        help="a new key pair for a CI job",
        description=f"Print a new private key, for a CI secret named {KEY_ENV}, and its "
        "public key (the last line), for the readers' trusted keys. Your own key is "
        "not changed.",
    )
    generate.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.group == "run":
        return run.main(args)
    config = Config()
    try:
        if args.group == "key":
            return _KEYS[args.command](args)
        if args.cache_dir is not None:
            config.cache_dir = args.cache_dir.expanduser()
        store = open_store(
            config.cache_dir,
            max_size=config.max_size,
            max_age=config.max_age,
            housekeeping=False,
            remote=config.remote,
            remote_mode=config.remote_mode,
            trusted_keys=config.trusted_keys,
        )
        return _COMMANDS[args.command](store, args)
    except StoreError as exc:
        print(f"incrcell: {exc.reason}", file=sys.stderr)
        return 2
    except KeyRefused as exc:
        print(f"incrcell: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _emit(args: argparse.Namespace, data: dict[str, Any], text: list[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(text))


def _info(store: Store, args: argparse.Namespace) -> int:
    usage = store.usage()
    data: dict[str, Any] = {
        "location": store.url,
        **dataclasses.asdict(usage),
        "max_age": store.max_age,
        "remote": None,
    }
    age = f", entries unused for {format_age(store.max_age)} are evicted" if store.max_age else ""
    text = [
        f"location   {store.url}",
        f"size       {format_size(usage.size)} of {format_size(usage.cap)} "
        f"({100 * usage.size / usage.cap if usage.cap else 0:.0f}%){age}",
        f"entries    {usage.entries}",
        f"values     {usage.values}",
        f"oldest use {_when(usage.oldest_use)}",
        f"newest use {_when(usage.newest_use)}",
    ]
    remote = store.remote
    if remote is not None:
        listed = remote.listing("entries")
        status = remote.status()
        data["remote"] = {
            **dataclasses.asdict(status),
            "entries": None if listed is None else len(listed),
        }
        state = f"{len(listed)} entries" if listed is not None else f"unreachable: {status.error}"
        text.append(f"remote     {remote.url} ({remote.mode}): {state}")
    else:
        text.append("remote     none (set INCRCELL_REMOTE=s3://BUCKET/PREFIX to share a cache)")
    _emit(args, data, text)
    return 0


def _push(store: Store, args: argparse.Namespace) -> int:
    done = store.push()
    status = store.remote_status()
    assert status is not None
    text = [
        f"uploaded {done.get('uploaded', 0)} objects ({format_size(status.uploaded_bytes)}) "
        f"to {status.url}; {done.get('already', 0)} were there already"
    ]
    if done.get("failed") or done.get("waiting"):
        text.append(
            f"  {done.get('failed', 0)} could not be uploaded, "
            f"{done.get('waiting', 0)} entries wait for their values"
            + (f" ({status.error})" if status.error else "")
        )
    _emit(args, {"remote": status.url, **done, "bytes": status.uploaded_bytes}, text)
    return 1 if done.get("failed") or done.get("waiting") else 0


def _key_show(args: argparse.Namespace) -> int:
    """Your key (created on first use); the public key last, to paste into the trusted keys."""
    signer = Signer(signing_key())
    try:
        trusted = parse_trusted(os.environ.get(TRUSTED_ENV, ""))
    except ValueError as exc:
        trusted, problem = set(), str(exc)
    else:
        problem = ""
    where = f"${KEY_ENV}" if os.environ.get(KEY_ENV, "").strip() else str(key_path())
    pins = sorted(
        (public_text(key), fingerprint(key)) if isinstance(key, bytes) else (key, key)
        for key in trusted
    )
    data = {
        "key": where,
        "fingerprint": signer.fingerprint,
        "trusted": [pin for pin, _ in pins],
        "public_key": public_text(signer.public),
    }
    text = [f"key          {where}", f"fingerprint  {signer.fingerprint}"]
    text += [f"trusts       {print_}" for _, print_ in pins]
    if problem:
        text.append(f"trusts       (${TRUSTED_ENV} ignored here: {problem})")
    text.append(public_text(signer.public))
    _emit(args, data, text)
    return 0


def _key_generate(args: argparse.Namespace) -> int:
    seed = new_private_key()
    public = Signer(seed).public
    data = {"private_key": private_text(seed), "public_key": public_text(public)}
    _emit(
        args,
        data,
        [
            f"# the private key: keep it secret, e.g. as the CI secret {KEY_ENV}",
            private_text(seed),
            f"# the public key ({fingerprint(public)}): add it to the readers' {TRUSTED_ENV}",
            public_text(public),
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


_COMMANDS = {
    "info": _info,
    "ls": _ls,
    "gc": _gc,
    "clear": _clear,
    "verify": _verify,
    "push": _push,
}
_KEYS = {"show": _key_show, "generate": _key_generate}


if __name__ == "__main__":
    sys.exit(main())
