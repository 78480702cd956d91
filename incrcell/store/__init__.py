"""The cache of cell executions, in layers (as joblib's and marimo's stores are split):

* :mod:`.codec`: the file format (framing, checksums, signatures), pure functions of bytes;
* :mod:`.signing`: the signing key and HMAC signatures;
* :mod:`.backend`: the interface at the bytes line, with :mod:`.file` (``file://``, the
  default) and :mod:`.memory` (``memory://``) implementing it;
* :mod:`.cache`: the one :class:`Store` holding every policy above the bytes (verify before
  parse, deduplication, notes, size cap and eviction) for every backend;
* :mod:`.entry`: the :class:`Entry` record.

:func:`open_store` opens a store from a URL (a plain path is ``file://``).  The store
returns verified bytes, never objects: it imports nothing that deserialises.
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
from .signing import KEY_ENV, KeyRefused, Signer, signing_key

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


def open_store(
    url: str | os.PathLike,
    *,
    signer: Signer | None = None,
    max_size: int | None = None,
    max_age: float | None = None,
    housekeeping: bool = True,
) -> Store:
    """The store at ``url`` (``file:///path``, ``memory://name``, or a plain path).

    Raises StoreError, in one line, when it cannot be used: a directory that
    cannot be created or written, a signing key refused or missing.
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
    try:
        return Store(backend, signer, max_size=max_size, max_age=max_age, housekeeping=housekeeping)
    except KeyRefused as exc:
        raise StoreError(f"{exc}; nothing is cached until then") from None
    except OSError as exc:
        raise StoreError(
            f"no signing key ({exc.strerror or exc}); nothing is cached until "
            f"one can be created, or {KEY_ENV} is set"
        ) from None
