"""Authenticity of cache files.

Unpickling runs code, so a cache file may only be deserialised if it was
written by someone holding our key: every file carries an HMAC-SHA256 over
its contents, verified before anything in it is parsed. A file from anyone
else (another user, another key, an attacker with write access to the cache
directory) fails verification and is treated as a cache miss.
"""

from __future__ import annotations

import functools
import hmac
import os
import secrets
import tempfile
from contextlib import suppress
from pathlib import Path

KEY_ENV = "INCRCELL_SIGNING_KEY"
_KEY_BYTES = 32


@functools.lru_cache(maxsize=1)
def signing_key() -> bytes:
    """The key that signs and verifies cache files.

    ``$INCRCELL_SIGNING_KEY`` if set and non-empty (any string: a team that
    shares a cache shares this), else a random 32-byte key kept in
    ``$XDG_CONFIG_HOME/incrcell/signing.key`` (default
    ``~/.config/incrcell/signing.key``), created 0600 on first use. Cached per
    process (``signing_key.cache_clear()`` forgets it).

    Raises OSError if the key file can neither be read nor created: without a
    key, nothing can be cached safely.
    """
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return from_env.encode()
    path = _key_path()
    key = _read_key(path)
    if key is None:
        _create_key(path)
        key = _read_key(path)
        if key is None:  # only if someone damaged it again in the last microseconds
            raise OSError(f"incrcell: cannot create a signing key at {path}")
    return key


def _key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):  # the XDG spec says to ignore relative paths
        config = os.path.join(os.path.expanduser("~"), ".config")
    return Path(config, "incrcell", "signing.key")


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``, or None if there is none or it is too short to be one."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    return key if len(key) >= _KEY_BYTES else None


def _create_key(path: Path) -> None:
    """Install a fresh random key at ``path``, unless another process got there first.

    The key is written to a private temp file and hard-linked into place:
    linking fails if the name exists, so of several processes racing on first
    use exactly one key wins and every process then reads that one. (A plain
    os.replace would let a later writer overwrite a key an earlier process has
    already started signing with.)
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(_KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())  # a key lost to a power cut would orphan the whole cache
        try:
            os.link(tmp, path)
        except FileExistsError:
            if _read_key(path) is None:  # a damaged key file: replace it
                os.replace(tmp, path)
        except OSError:  # a filesystem without hard links: last writer wins
            os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


class Signer:
    """HMAC-SHA256 over a sequence of byte strings.

    The parts are fed to the MAC one after another, without concatenating
    them, so callers must make the boundaries unambiguous themselves (the
    store signs a header that holds every part's length).
    """

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key must not be empty")
        self._key = bytes(key)

    def mac(self) -> hmac.HMAC:
        """A fresh MAC to feed the parts to, for callers that have them one at a time."""
        return hmac.new(self._key, digestmod="sha256")

    def sign(self, *parts: bytes | bytearray | memoryview) -> bytes:
        """The 32-byte tag of the concatenated parts."""
        mac = self.mac()
        for part in parts:
            mac.update(part)
        return mac.digest()

    def verify(self, tag: bytes | bytearray | memoryview, *parts: bytes | bytearray | memoryview) -> bool:
        """Whether ``tag`` is the tag of the parts, compared in constant time."""
        return hmac.compare_digest(bytes(tag), self.sign(*parts))
