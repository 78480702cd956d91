"""Authenticity of cache files.

Unpickling runs code, so a cache file may only be deserialised if it was
written by someone holding our key: every file carries an HMAC-SHA256 over
its contents, verified before anything in it is parsed. A file from anyone
else (another user, another key, an attacker with write access to the cache
directory) fails verification and is treated as a cache miss.
"""

from __future__ import annotations

import errno
import functools
import hmac
import os
import secrets
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

KEY_ENV = "INCRCELL_SIGNING_KEY"
_KEY_BYTES = 32


class KeyRefused(Exception):
    """The signing key file is unsafe or damaged; the message says so in one line, with the fix.

    Nothing is cached while it stands: the key is never replaced silently
    (a new key would orphan every entry signed with the old one), and a key
    others could have written or redirected protects nothing.
    """


@functools.lru_cache(maxsize=1)
def signing_key() -> bytes:
    """The key that signs and verifies cache files.

    ``$INCRCELL_SIGNING_KEY`` if set and non-empty (any string: a team that
    shares a cache shares this), else a random 32-byte key kept in
    ``$XDG_CONFIG_HOME/incrcell/signing.key`` (default
    ``~/.config/incrcell/signing.key``), created 0600 on first use. Cached per
    process (``signing_key.cache_clear()`` forgets it).

    Raises KeyRefused if the key file is a symbolic link, writable by group
    or others, not the user's, or too short (like ssh refusing a private key
    with loose permissions); OSError if it can neither be read nor created.
    """
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return from_env.encode()
    path = _key_path()
    key = _read_key(path)
    if key is None:
        _create_key(path)
        key = _read_key(path)
        if key is None:  # only if someone removed it again in the last microseconds
            raise OSError(f"cannot create a signing key at {path}")
    return key


def _key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):  # the XDG spec says to ignore relative paths
        config = os.path.join(os.path.expanduser("~"), ".config")
    return Path(config, "incrcell", "signing.key")


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``, or None if there is none; raises KeyRefused if it is unsafe or damaged.

    Opened without following a symbolic link and without blocking, then
    checked on the open file itself, so that what is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if os.path.islink(path):
            raise KeyRefused(
                f"the signing key {path} is a symbolic link to nothing: replace it "
                f"with the key file itself ({KEY_ENV} can hold a shared key)"
            ) from None
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyRefused(
                f"the signing key {path} is a symbolic link: replace it with the "
                f"key file itself ({KEY_ENV} can hold a shared key)"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyRefused(
                f"the signing key {path} is not a regular file: remove it to create a new key"
            )
        if info.st_mode & 0o022:
            raise KeyRefused(
                f"the signing key {path} is writable by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): run chmod 600 {path}"
            )
        if info.st_uid != os.getuid():
            raise KeyRefused(
                f"the signing key {path} belongs to another user: remove it to create a new key"
            )
        key = os.read(fd, 4096)
    finally:
        os.close(fd)
    if len(key) < _KEY_BYTES:
        raise KeyRefused(
            f"the signing key {path} is damaged ({len(key)} bytes, expected "
            f"{_KEY_BYTES}): remove it to create a new one (entries signed "
            "with the old key will then run again)"
        )
    return key


def _create_key(path: Path) -> None:
    """Install a fresh random key at ``path``, unless another process got there first.

    The key is written to a private temp file and hard-linked into place:
    linking fails if the name exists, so of several processes racing on first
    use exactly one key wins and every process then reads that one. (A plain
    os.replace would let a later writer overwrite a key an earlier process has
    already started signing with.)  An existing name is never replaced.
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
            pass  # another process won: _read_key reads (or refuses) its key
        except OSError:  # a filesystem without hard links: rename without replacing
            if not os.path.lexists(path):
                os.rename(tmp, path)
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

    def verify(
        self, tag: bytes | bytearray | memoryview, *parts: bytes | bytearray | memoryview
    ) -> bool:
        """Whether ``tag`` is the tag of the parts, compared in constant time."""
        return hmac.compare_digest(bytes(tag), self.sign(*parts))
