"""The interface every storage backend implements: named immutable byte objects.

A backend knows nothing of entries, values, checksums or signatures: it
holds byte objects under '/'-separated names (``entries/ab/<key>``) and
answers read, atomic write, exists, touch, delete, list (with sizes and
last-use times) and clear.  Everything above that line (verify before
parse, deduplication, notes, eviction) is :class:`incrcell.store.cache.Store`'s,
the same for every backend, so a backend cannot hand unverified bytes to
anyone.

A backend may offer a fast local read path (:meth:`Backend.open`): a file
the store reads in chunks while it verifies the part already read, or maps
(:meth:`Backend.map`) and verifies in place, without copying it.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Listing:
    """One stored object as :meth:`Backend.list` sees it."""

    name: str
    size: int  # bytes
    used: float  # last use (write or :meth:`Backend.touch`), seconds since the epoch


class Backend(ABC):
    """Named byte objects, each written atomically and never modified in place."""

    url: str  # where it is, as open_store() takes it

    @abstractmethod
    def read(self, name: str) -> tuple[memoryview, Hashable]:
        """The whole object, in a fresh writeable 64-byte-aligned buffer, and its version.

        The version identifies this copy of the object (see :meth:`delete`).
        Raises FileNotFoundError if absent, another OSError if unreadable.
        """

    def open(self, name: str) -> tuple[io.RawIOBase, int, Hashable] | None:
        """Optional fast local read path: (an unbuffered file, its size, its version).

        None when the backend has none (then :meth:`read` is used).  Raises as :meth:`read`.
        """
        return None

    def map(self, file: io.RawIOBase, size: int) -> memoryview | None:
        """Optional: the file :meth:`open` gave, mapped private and copy-on-write, as a
        writeable buffer that stays valid after ``file`` is closed; None when this backend
        cannot promise that nobody changes the file in place while it is mapped.

        Writes to the buffer stay in this process; pages are read from the file when
        first touched, so a large value costs no copy.
        """
        return None

    @abstractmethod
    def write(self, name: str, chunks: Sequence[bytes | memoryview]) -> int:
        """Create or replace ``name`` atomically: readers see the old object, the new one, or none.

        Returns the bytes written; raises OSError and leaves nothing behind.
        """

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether ``name`` is stored (cheap: no read)."""

    @abstractmethod
    def touch(self, name: str) -> bool:
        """Mark ``name`` as used now (for least-recently-used eviction); False if absent."""

    @abstractmethod
    def delete(self, name: str, version: Hashable | None = None) -> bool:
        """Remove ``name`` (only if it is still ``version``, when given); True if removed."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[Listing]:
        """Every object whose name starts with ``prefix + '/'``, in no particular order."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every object (best effort under concurrent writers)."""

    def free_space(self) -> int | None:
        """Bytes free on the medium the objects live on; None if that means nothing here."""
        return None

    def sweep(self) -> int:
        """Remove what writers that are gone left behind; returns bytes freed."""
        return 0
