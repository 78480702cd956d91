"""The cache file format: framing, digests, signatures (pure functions of bytes).

Every cache file, whatever backend holds it, is one frame (little endian);
parts start at 64-byte-aligned offsets so that numpy arrays restored from
them are aligned::

    0   8s  MAGIC b"INCRCELL"
    8   u16 format version
    10  u8  kind        1 entry, 2 value, 3 note
    11  u8  method      values: 1 pickle (protocol 5, notebook code nested by value); else 0
    12  u32 part count  n
    16  u64 file size
    24  32s SHA-256 of bytes [184:] (the part table and the parts)
    56  32s the signer's Ed25519 public key
    88  64s Ed25519 signature of bytes [0:88]
    152 32s local seal: HMAC of bytes [0:152] under the reader's own secret; zeros in transit
    184 n * (u64 length, u64 flags)   flags bit 0: read-only buffer
    ... parts: the file's own name (UTF-8), then the body: JSON for entries
        and notes (an entry's small values follow its JSON, each as its
        pickle stream and buffers); the pickle stream and its out-of-band
        buffers for values.

One SHA-256 pass over the file is both its checksum and what the signature
covers (a non-cryptographic hash such as xxh3 would let anyone make other
bytes with the same digest); the signature itself covers only the header.
SHA-256 rather than BLAKE3: measured on the benchmark's values (2-core VM,
SHA-NI), BLAKE3 hashed 1.2-1.3 times faster on one thread and no faster on
two busy cores; not worth a dependency and a format of our own.  A manifest
of per-part digests would only pay if a restore could skip parts: it cannot
(unpickling a value uses all its buffers).

How it fails safe: :func:`unframe` looks at nothing but the fixed-size
header until the signer is trusted, the digest matches and the signature
(or our own seal) verifies, and then checks that the file is of the kind and
name asked for; anything else raises :class:`Unusable`.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from collections.abc import Sequence

from .signing import Signer, fingerprint

FORMAT_VERSION = 5

MAGIC = b"INCRCELL"
_PREFIX = struct.Struct("<8sHBBIQ")  # magic, version, kind, method, part count, file size
PREFIX_SIZE = _PREFIX.size
_DIGEST = slice(24, 56)
_PUBLIC = slice(56, 88)
_SIGNED = slice(0, 88)
_SIGNATURE = slice(88, 152)
_SEALED = slice(0, 152)
_SEAL = slice(152, 184)
HEADER_SIZE = 184
_NO_SEAL = bytes(32)
_PART = struct.Struct("<QQ")  # length, flags
_READONLY = 1
_ALIGN = 64
_PADDING = bytes(_ALIGN)

ENTRY, VALUE, NOTE = 1, 2, 3
KINDS = {ENTRY: "entries", VALUE: "values", NOTE: "notes"}


class Unusable(Exception):
    """Not a valid, authentic cache file of the kind and name asked for; says why."""


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def frame(
    kind: int, method: int, name: str, body: Sequence[bytes | memoryview], signer: Signer
) -> tuple[list[bytes | memoryview], int]:
    """The chunks of a cache file, in write order, and its size; signed and sealed by ``signer``."""
    parts = [memoryview(part).cast("B") for part in (name.encode(), *body)]
    table = b"".join([_PART.pack(part.nbytes, _READONLY if part.readonly else 0) for part in parts])
    chunks: list[bytes | memoryview] = [table]
    digest = Digest()  # fed as the chunks are made
    digest.update(table)
    end = HEADER_SIZE + len(table)
    for part in parts:
        start = _aligned(end)
        if start > end:
            chunks.append(_PADDING[: start - end])
            digest.update(_PADDING[: start - end])
        chunks.append(part)
        digest.update(part)
        end = start + part.nbytes
    signed = (
        _PREFIX.pack(MAGIC, FORMAT_VERSION, kind, method, len(parts), end)
        + digest.digest()
        + signer.public
    )
    header = signed + signer.sign(signed)
    return [header + signer.seal(header), *chunks], end


def check_header(header: memoryview | bytes, file_size: int) -> tuple[int, int, int]:
    """The (kind, method, part count) of a file whose first bytes are ``header``.

    Only checks what the fixed-size prefix says about the file as a whole.
    """
    if len(header) < HEADER_SIZE:
        raise Unusable("is corrupt (truncated)")
    magic, version, kind, method, count, size = _PREFIX.unpack_from(header)
    if magic != MAGIC:
        raise Unusable("is corrupt (not an incrcell cache file)")
    if version != FORMAT_VERSION:
        raise Unusable(f"is corrupt (format version {version}, expected {FORMAT_VERSION})")
    if size != file_size:
        raise Unusable(
            "is corrupt (truncated)" if size > file_size else "is corrupt (trailing bytes)"
        )
    return kind, method, count


def signer_of(header: memoryview | bytes) -> bytes:
    """The public key a file whose first bytes are ``header`` claims as its signer."""
    return bytes(header[_PUBLIC])


def check_signer(header: memoryview | bytes, signer: Signer) -> None:
    """Raise Unusable, naming the key, unless ``signer`` trusts the key the header claims.

    Cheap, and done first: a file from an untrusted signer is not even hashed.
    """
    public = signer_of(header)
    if not signer.trusts(public):
        raise Unusable(f"is signed by an untrusted key {fingerprint(public)}")


class Digest:
    """The SHA-256 of a file's bytes after its header, fed in order (chunks of any size)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, chunk: memoryview | bytes) -> None:
        self._hash.update(chunk)

    def digest(self) -> bytes:
        return self._hash.digest()

    def check(self, header: memoryview | bytes, signer: Signer) -> None:
        """Raise Unusable unless the header is a trusted signer's, for exactly these bytes.

        Our own seal stands for a signature we checked (or made) before; without
        it, the Ed25519 signature is verified.
        """
        check_signer(header, signer)
        if self.digest() != header[_DIGEST]:
            raise Unusable("is corrupt (checksum mismatch)")
        if not signer.sealed(header[_SEALED], header[_SEAL]) and not signer.verify(
            signer_of(header), bytes(header[_SIGNATURE]), bytes(header[_SIGNED])
        ):
            raise Unusable(
                f"signature does not verify (forged or damaged; it claims to be signed by "
                f"{fingerprint(signer_of(header))})"
            )


def digest_of(header: memoryview | bytes) -> str:
    """The hex SHA-256 a header holds of its file's contents (what makes a version's name)."""
    return bytes(header[_DIGEST]).hex()


def resealed(header: memoryview | bytes, signer: Signer | None) -> bytes:
    """``header`` with our seal (after we verified it), or with none (``signer`` None: for
    an upload, where a seal means nothing to anyone else)."""
    head = bytes(header[:HEADER_SIZE])
    seal = _NO_SEAL if signer is None else signer.seal(head[_SEALED])
    return head[: _SEAL.start] + seal


def parts(
    data: memoryview, kind: int, signer: Signer, digest: Digest | None = None
) -> tuple[int, list[memoryview]]:
    """Check a whole file's integrity, authenticity and kind; returns (method, parts), the
    file's own name first.

    ``digest``: that of ``data``'s bytes after the header if the caller computed
    it already (while reading it).  Only the fixed-size header is looked at
    before the signer is trusted and the digest and signature have verified;
    nothing else is interpreted until then.
    """
    file_kind, method, count = check_header(data, len(data))
    if digest is None:
        check_signer(data, signer)
        digest = Digest()
        digest.update(data[HEADER_SIZE:])
    digest.check(data, signer)
    if file_kind != kind:
        raise Unusable("is corrupt (a different kind of cache file)")
    end = HEADER_SIZE + count * _PART.size
    if end > len(data):
        raise Unusable("is corrupt (inconsistent part table)")
    found = []
    for index in range(count):
        length, flags = _PART.unpack_from(data, HEADER_SIZE + index * _PART.size)
        start = _aligned(end)
        end = start + length
        part = data[start:end]
        found.append(part.toreadonly() if flags & _READONLY else part)
    if count == 0 or end != len(data):
        raise Unusable("is corrupt (inconsistent part table)")
    return method, found


def unframe(
    data: memoryview, kind: int, name: str, signer: Signer, digest: Digest | None = None
) -> tuple[int, list[memoryview]]:
    """:func:`parts`, and the file must be the one stored under ``name``; returns (method, body)."""
    method, found = parts(data, kind, signer, digest)
    if found[0] != name.encode():
        raise Unusable("is corrupt (stored under the wrong name)")
    return method, found[1:]


def name_in(head: bytes | memoryview) -> bytes | None:
    """The name a file whose first bytes are ``head`` carries; None if it lies beyond ``head``.

    Only for a file whose digest and signature have verified.
    """
    count = _PREFIX.unpack_from(head)[4]
    table = HEADER_SIZE + count * _PART.size
    if count == 0 or table > len(head):
        return None
    length = _PART.unpack_from(head, HEADER_SIZE)[0]
    start = _aligned(table)
    return bytes(head[start : start + length]) if start + length <= len(head) else None


def aligned_buffer(size: int) -> memoryview:
    """A writeable buffer of ``size`` bytes whose start is 64-byte aligned in memory.

    Raises MemoryError for a size the machine cannot hold.
    """
    raw = bytearray(size + _ALIGN)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % _ALIGN
    return memoryview(raw)[start : start + size]
