"""Who wrote a cache file, and whether we trust them: Ed25519 signatures per signer.

Unpickling runs code, so a cache file may only be deserialised if someone we
trust wrote it.  Each user and each CI job signs with its own Ed25519 key
pair (as marimo signs its cache manifests): the private key never leaves the
machine (or the CI secret), and readers trust public keys.  Every file
carries its signer's public key and a signature over its header, which holds
a SHA-256 of everything else (see :mod:`.codec`); a file whose signer is not
trusted is never parsed, whatever it says.  Anyone who can merely read or
write the cache cannot forge an entry, unlike with one shared secret.

Trusted: your own key, always; ``$INCRCELL_TRUSTED_KEYS`` and the
``trusted_keys`` setting, each a comma-separated list of public keys (as
``incrcell key show`` prints them; an ssh-style fingerprint ``SHA256:...``
also pins a key) or the path of a file with one per line and ``#`` comments.

Ed25519 verification costs ~0.1 ms a file; re-reading our own cache must stay
cheap, so each local file also carries a *seal*: an HMAC under a secret
derived from the private key, which only this signer can make and check
(:meth:`Signer.sealed`).  A file whose seal checks was verified (or written)
by us before; anything else gets the full Ed25519 verification.  The seal is
an internal detail of the local cache: it is zeroed before an upload.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ENV = "INCRCELL_SIGNING_KEY"  # a private key, for CI: `incrcell key generate` makes one
TRUSTED_ENV = "INCRCELL_TRUSTED_KEYS"
_KEY_BYTES = 32
_PUBLIC = "ed25519:"  # the text form of a public key: ed25519:<base64 of its 32 bytes>
_PRIVATE = "incrcell-private-ed25519:"  # the text form of a private key (its 32-byte seed)
_FINGERPRINT = "SHA256:"


class KeyRefused(Exception):
    """The signing key file is unsafe or damaged; the message says so in one line, with the fix.

    Nothing is cached while it stands: the key is never replaced silently
    (a new key would orphan every entry signed with the old one), and a key
    others could have read, written or redirected protects nothing.
    """


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    text = text.strip()
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def public_text(public: bytes) -> str:
    """``ed25519:<base64>``: how a public key is shown and pasted into the trusted keys."""
    return _PUBLIC + _b64(public)


def private_text(seed: bytes) -> str:
    """The text form of a private key (for ``$INCRCELL_SIGNING_KEY``, a CI secret)."""
    return _PRIVATE + _b64(seed)


@functools.lru_cache(maxsize=64)
def fingerprint(public: bytes) -> str:
    """``SHA256:<base64>`` of a public key, as ssh shows keys: what a refusal names."""
    return _FINGERPRINT + _b64(hashlib.sha256(public).digest())


def new_private_key() -> bytes:
    """A fresh private key (its 32-byte seed)."""
    return secrets.token_bytes(_KEY_BYTES)


@functools.lru_cache(maxsize=1)
def signing_key() -> bytes:
    """Our private key (its 32-byte seed).

    ``$INCRCELL_SIGNING_KEY`` if set (a private key in its text form: a CI
    job keeps one as a secret, so that its public key stays the one readers
    trust), else the one kept in ``$XDG_CONFIG_HOME/incrcell/signing.key``
    (default ``~/.config/incrcell/signing.key``), created 0600 on first use.
    Cached per process (``signing_key.cache_clear()`` forgets it).

    Raises KeyRefused if the variable is not a private key, or the key file
    is a symbolic link, readable or writable by group or others, not the
    user's, or damaged (like ssh refusing a private key with loose
    permissions); OSError if it can neither be read nor created.
    """
    from_env = os.environ.get(KEY_ENV, "").strip()
    if from_env:
        return parse_private(from_env)
    path = key_path()
    key = _read_key(path)
    if key is None:
        _create_key(path)
        key = _read_key(path)
        if key is None:  # only if someone removed it again in the last microseconds
            raise OSError(f"cannot create a signing key at {path}")
    return key


def parse_private(text: str) -> bytes:
    """The seed of a private key in its text form; raises KeyRefused (one line) if it is not one."""
    try:
        seed = _unb64(text[len(_PRIVATE) :]) if text.startswith(_PRIVATE) else b""
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != _KEY_BYTES:
        raise KeyRefused(
            f"${KEY_ENV} is not an incrcell private key (it starts with {_PRIVATE!r}; "
            "make one with `incrcell key generate`)"
        )
    return seed


def key_path() -> Path:
    """Where our private key is kept."""
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
                f"with the key file itself ({KEY_ENV} can hold a CI job's key)"
            ) from None
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyRefused(
                f"the signing key {path} is a symbolic link: replace it with the "
                f"key file itself ({KEY_ENV} can hold a CI job's key)"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyRefused(
                f"the signing key {path} is not a regular file: remove it to create a new key"
            )
        if info.st_mode & 0o077:
            what = "writable" if info.st_mode & 0o022 else "readable"
            raise KeyRefused(
                f"the signing key {path} is {what} by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): run chmod 600 {path}"
            )
        if info.st_uid != os.getuid():
            raise KeyRefused(
                f"the signing key {path} belongs to another user: remove it to create a new key"
            )
        key = os.read(fd, 4096)
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise KeyRefused(
            f"the signing key {path} is damaged ({len(key)} bytes, expected "
            f"{_KEY_BYTES}): remove it to create a new one (readers who trusted the old "
            "key must then trust the new one)"
        )
    return key


def _create_key(path: Path) -> None:
    """Install a fresh private key at ``path``, unless another process got there first.

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
            file.write(new_private_key())
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


def parse_trusted(text: str) -> set[bytes | str]:
    """The keys ``text`` trusts: public keys (32 bytes) and fingerprints (``SHA256:...``).

    ``text``: comma-separated keys, or the path of a file with one per line
    (``#`` starts a comment; words after a key are a label).  Raises
    ValueError (one line) for anything that is not a key, so that a typo is
    an error now rather than a silent miss forever.
    """
    text = text.strip()
    if not text:
        return set()
    if not text.startswith((_PUBLIC, _FINGERPRINT)) and "," not in text:
        path = Path(text).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(
                f"trusted keys: {text!r} is neither a public key nor a readable file "
                f"({exc.strerror or exc})"
            ) from None
        items = [line.split("#", 1)[0] for line in lines]
    else:
        items = text.split(",")
    found: set[bytes | str] = set()
    for item in items:
        words = item.split()
        if not words:
            continue
        word = words[0]
        try:
            raw = _unb64(word.split(":", 1)[1]) if ":" in word else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != _KEY_BYTES or not word.startswith((_PUBLIC, _FINGERPRINT)):
            raise ValueError(
                f"trusted keys: {word[:60]!r} is not a public key (ed25519:..., as "
                "`incrcell key show` prints it) or a fingerprint (SHA256:...)"
            )
        found.add(raw if word.startswith(_PUBLIC) else _FINGERPRINT + _b64(raw))
    return found


def trusted_from_env() -> set[bytes | str]:
    """``$INCRCELL_TRUSTED_KEYS``, parsed (raises ValueError as :func:`parse_trusted`)."""
    return parse_trusted(os.environ.get(TRUSTED_ENV, ""))


class Signer:
    """Our key pair and the keys we trust: signs headers, checks others' signatures.

    ``private``: the 32-byte seed of our private key.  ``trusted``: public
    keys (32 bytes) and fingerprints (``SHA256:...``) besides our own.
    """

    def __init__(self, private: bytes, trusted: Iterable[bytes | str] = ()) -> None:
        if len(private) != _KEY_BYTES:
            raise ValueError(f"a private key is {_KEY_BYTES} bytes, not {len(private)}")
        self._private = Ed25519PrivateKey.from_private_bytes(bytes(private))
        self.public = self._private.public_key().public_bytes_raw()
        self._seal_key = hmac.new(bytes(private), b"incrcell local seal", "sha256").digest()
        trusted = set(trusted)
        self._keys = {key for key in trusted if isinstance(key, bytes)} | {self.public}
        self._fingerprints = {key for key in trusted if isinstance(key, str)}
        self._verifiers: dict[bytes, Ed25519PublicKey] = {}

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def trusts(self, public: bytes) -> bool:
        """Whether files signed by ``public`` may be used (our own key always may)."""
        return public in self._keys or (
            bool(self._fingerprints) and fingerprint(public) in self._fingerprints
        )

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def seal(self, message: bytes | memoryview) -> bytes:
        """The 32-byte local seal of ``message`` (only we can make or check it)."""
        return hmac.new(self._seal_key, message, "sha256").digest()

    def sealed(self, message: bytes | memoryview, seal: bytes | memoryview) -> bool:
        """Whether ``seal`` is our seal of ``message``, compared in constant time."""
        return hmac.compare_digest(self.seal(message), bytes(seal))

    def verify(self, public: bytes, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is ``public``'s signature of ``message`` (trust aside)."""
        verifier = self._verifiers.get(public)
        if verifier is None:
            try:
                verifier = Ed25519PublicKey.from_public_bytes(public)
            except ValueError:
                return False
            self._verifiers[public] = verifier
        try:
            verifier.verify(signature, message)
        except InvalidSignature:
            return False
        return True
