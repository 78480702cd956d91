"""The cache of cell executions, in layers (as joblib's and marimo's stores are split):

* :mod:`.codec`: the file format (framing, digests, signatures), pure functions of bytes;
* :mod:`.signing`: our Ed25519 key pair, the keys we trust, signatures;
* :mod:`.backend`: the interface at the bytes line, with :mod:`.file` (``file://``, the
  default), :mod:`.memory` (``memory://``) and :mod:`.s3` (``s3://``, a remote) implementing it;
* :mod:`.cache`: the one :class:`Store` holding every policy above the bytes (verify before
  parse, deduplication, notes, size cap and eviction, the remote tier) for every backend;
* :mod:`.remote`: the remote tier's own policy (circuit breaker, listing, background uploads);
* :mod:`.entry`: the :class:`Entry` record.

:func:`open_store` opens a store from a URL (a plain path is ``file://``), with a remote
behind it if one is configured.  The store returns verified bytes, never objects: it
imports nothing that deserialises.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from .backend import Backend, Listing
from .cache import (
    DEFAULT_MAX_SIZE,
    CacheWarning,
    Collection,
    EntryInfo,
    Inventory,
    Payload,
    Store,
    Stored,
    StoreError,
    Usage,
)
from .codec import FORMAT_VERSION
from .entry import Entry
from .file import FileBackend
from .memory import MemoryBackend
from .remote import MODES, READ, Remote, RemoteStatus
from .signing import (
    KEY_ENV,
    TRUSTED_ENV,
    KeyRefused,
    Signer,
    parse_trusted,
    signing_key,
    trusted_from_env,
)

REMOTE_ENV = "INCRCELL_REMOTE"
REMOTE_MODE_ENV = "INCRCELL_REMOTE_MODE"

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "KEY_ENV",
    "Backend",
    "CacheWarning",
    "Collection",
    "Entry",
    "EntryInfo",
    "Inventory",
    "KeyRefused",
    "Listing",
    "Payload",
    "RemoteStatus",
    "Signer",
    "Store",
    "StoreError",
    "Stored",
    "Usage",
    "open_store",
    "signing_key",
]


def _file(location: str) -> Backend:
    """The cache directory ``location``; its files live in ``v<FORMAT_VERSION>/`` inside it,
    so that a format change starts afresh and clearing never touches anything else there."""
    directory = os.path.expanduser(location)
    root = os.path.join(directory, f"v{FORMAT_VERSION}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.makedirs(root, mode=0o700, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied")
    return FileBackend(root)


#: scheme -> a function of the rest of the URL making the backend (raises OSError if unusable).
BACKENDS: dict[str, Callable[[str], Backend]] = {"file": _file, "memory": MemoryBackend}


def _s3(location: str) -> Backend:
    from .s3 import S3Backend  # obstore is only loaded when a remote is configured

    return S3Backend(location)


#: The same, for remotes (write-once backends; see :mod:`.remote`).
REMOTES: dict[str, Callable[[str], Backend]] = {"s3": _s3}


def open_remote(url: str, mode: str) -> Remote:
    """The remote tier at ``url`` (``s3://BUCKET/PREFIX``); raises StoreError in one line."""
    parts = urlsplit(url)
    if parts.scheme not in REMOTES or "://" not in url:
        raise StoreError(
            f"unknown remote cache {url!r}: use "
            + " or ".join(f"{scheme}://BUCKET/PREFIX" for scheme in REMOTES)
        )
    if mode not in MODES:
        raise StoreError(f"the remote mode is {' or '.join(MODES)}, not {mode!r}")
    try:
        return Remote(REMOTES[parts.scheme](unquote(parts.netloc + parts.path)), mode)
    except Exception as exc:
        raise StoreError(f"the remote cache {url} cannot be used ({exc})") from None


def open_store(
    url: str | os.PathLike,
    *,
    signer: Signer | None = None,
    max_size: int | None = None,
    max_age: float | None = None,
    housekeeping: bool = True,
    remote: str | None = None,
    remote_mode: str | None = None,
    trusted_keys: str | None = None,
    fallback: Callable[[str, str], None] | None = None,
    write_behind: bool = False,
) -> Store:
    """The store at ``url`` (``file:///path``, ``memory://name``, or a plain path).

    ``remote``: a shared cache behind it (``s3://BUCKET/PREFIX``; None:
    ``$INCRCELL_REMOTE``; "": none), read from (``remote_mode`` "read", the
    default: ``$INCRCELL_REMOTE_MODE``) or also written to ("readwrite").
    ``trusted_keys``: public keys trusted besides ours and ``$INCRCELL_TRUSTED_KEYS``
    (see :func:`~incrcell.store.signing.parse_trusted`); ignored with an explicit ``signer``.

    Raises StoreError, in one line, when it cannot be used: a directory that
    cannot be created or written, a signing key refused or missing, a trusted
    key that is not one, a remote that cannot be configured.  With ``fallback``, a
    sharing setting that cannot be used (the remote, its mode, a trusted key) is told
    to ``fallback(why, what is done instead)`` instead, and left out: the local cache
    keeps working (without the remote; trusting only the keys that could be read),
    never a cache that stops caching because of a typo in a setting about sharing.
    ``write_behind``: see :class:`Store`.
    """
    text = os.fspath(url)
    parts = urlsplit(text)
    if len(parts.scheme) > 1 and "://" in text:
        if parts.scheme not in BACKENDS:
            raise StoreError(
                f"unknown cache location {text!r}: use one of "
                + ", ".join(f"{scheme}://" for scheme in BACKENDS)
            )
        scheme, location = parts.scheme, unquote(parts.netloc + parts.path)
    else:
        scheme, location = "file", text
    try:
        backend = BACKENDS[scheme](location)
    except OSError as exc:
        raise StoreError(
            f"the cache directory {location} cannot be used ({exc.strerror or exc})"
        ) from None
    if remote is None:
        remote = os.environ.get(REMOTE_ENV, "")
    if remote_mode is None:
        remote_mode = os.environ.get(REMOTE_MODE_ENV, "").strip().lower() or READ
    tier = None
    if remote.strip():
        try:
            tier = open_remote(remote.strip(), remote_mode)
        except StoreError as exc:
            if fallback is None:
                raise
            fallback(exc.reason, "using the local cache only")
    try:
        if signer is None:
            trusted: set[bytes | str] = set()
            sources = (
                (f"${TRUSTED_ENV}: ", trusted_from_env),
                ("", lambda: parse_trusted(trusted_keys or "")),
            )
            for source, parse in sources:
                try:
                    trusted |= parse()
                except ValueError as exc:
                    if fallback is None:
                        raise StoreError(f"{source}{exc}; nothing is cached until then") from None
                    fallback(f"{source}{exc}", "those keys are not trusted")
            signer = Signer(signing_key(), trusted)
        return Store(
            backend,
            signer,
            max_size=max_size,
            max_age=max_age,
            housekeeping=housekeeping,
            remote=tier,
            write_behind=write_behind,
        )
    except KeyRefused as exc:
        raise StoreError(f"{exc}; nothing is cached until then") from None
    except OSError as exc:
        raise StoreError(
            f"no signing key ({exc.strerror or exc}); nothing is cached until "
            f"one can be created, or {KEY_ENV} is set"
        ) from None
