"""The ``memory://NAME`` backend: objects in this process's memory.

Every store opened on the same NAME in one process shares the objects, so a
"kernel restart" in an in-process test is a new store on the same name.
Nothing survives the process.  Reads return copies, as a file would.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Hashable, Iterator, Sequence

from .backend import Backend, Listing
from .codec import aligned_buffer

_SPACES: dict[str, dict[str, list]] = {}  # NAME -> object name -> [bytes, used, version]
_LOCK = threading.Lock()
_VERSIONS = itertools.count()


class MemoryBackend(Backend):
    """Objects in a dict shared by every MemoryBackend of the same ``name``."""

    def __init__(self, name: str = "") -> None:
        self.url = f"memory://{name}"
        with _LOCK:
            self._objects = _SPACES.setdefault(name, {})

    def read(self, name: str) -> tuple[memoryview, Hashable]:
        with _LOCK:
            found = self._objects.get(name)
        if found is None:
            raise FileNotFoundError(name)
        data, _, version = found
        buffer = aligned_buffer(len(data))
        buffer[:] = data
        return buffer, version

    def write(self, name: str, chunks: Sequence[bytes | memoryview]) -> int:
        data = b"".join(chunks)
        with _LOCK:
            self._objects[name] = [data, time.time(), next(_VERSIONS)]
        return len(data)

    def exists(self, name: str) -> bool:
        return name in self._objects

    def touch(self, name: str) -> bool:
        with _LOCK:
            found = self._objects.get(name)
            if found is not None:
                found[1] = time.time()
        return found is not None

    def delete(self, name: str, version: Hashable | None = None) -> bool:
        with _LOCK:
            found = self._objects.get(name)
            if found is None or (version is not None and found[2] != version):
                return False
            del self._objects[name]
        return True

    def list(self, prefix: str) -> Iterator[Listing]:
        with _LOCK:
            found = [
                Listing(name, len(data), used)
                for name, (data, used, _) in self._objects.items()
                if name.startswith(prefix + "/")
            ]
        return iter(found)

    def clear(self) -> None:
        with _LOCK:
            self._objects.clear()
