"""The cache file format: framing, checksums, signatures (pure functions of bytes).

Every cache file, whatever backend holds it, is one frame (little endian);
parts start at 64-byte-aligned offsets so that numpy arrays restored from
them are aligned::

    0   8s  MAGIC b"INCRCELL"
    8   u16 format version
    10  u8  kind        1 entry, 2 value, 3 note
    11  u8  method      values: 1 pickle (protocol 5, notebook code nested by value); else 0
    12  u32 part count  n
    16  u64 file size
    24  16s xxh3-128 of bytes [0:24] and [72:]
    40  32s HMAC-SHA256 of bytes [0:24] and [72:]
    72  n * (u64 length, u64 flags)   flags bit 0: read-only buffer
    ... parts: the file's own name (UTF-8), then the body: JSON for entries
        and notes; the pickle stream and its out-of-band buffers for values.

How it fails safe: :func:`unframe` looks at nothing but the fixed-size
prefix before the checksum (truncation, bit rot) and the signature (anyone
without our key) verify, and then checks that the file is of the kind and
name asked for; anything else raises :class:`Unusable`.
"""

from __future__ import annotations

import ctypes
import hmac
import struct
from collections.abc import Sequence

import xxhash

from .signing import Signer

FORMAT_VERSION = 3

MAGIC = b"INCRCELL"
_PREFIX = struct.Struct("<8sHBBIQ")  # magic, version, kind, method, part count, file size
PREFIX_SIZE = _PREFIX.size
_CHECKSUM = slice(24, 40)
_SIGNATURE = slice(40, 72)
HEADER_SIZE = 72
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
    """The chunks of a cache file, in write order, and its size."""
    parts = [memoryview(part).cast("B") for part in (name.encode(), *body)]
    table = b"".join(_PART.pack(part.nbytes, _READONLY if part.readonly else 0) for part in parts)
    chunks: list[bytes | memoryview] = [table]
    end = HEADER_SIZE + len(table)
    for part in parts:
        start = _aligned(end)
        if start > end:
            chunks.append(_PADDING[: start - end])
        chunks.append(part)
        end = start + part.nbytes
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, kind, method, len(parts), end)
    checksum = xxhash.xxh3_128(prefix)
    for chunk in chunks:
        checksum.update(chunk)
    header = prefix + checksum.digest() + signer.sign(prefix, *chunks)
    return [header, *chunks], end


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


class Digests:
    """The checksum and the signature of a file's signed bytes, fed in order.

    The signed bytes are the prefix and everything after the header (the
    checksum and signature fields themselves are skipped).
    """

    def __init__(self, signer: Signer) -> None:
        self.checksum = xxhash.xxh3_128()
        self.mac = signer.mac()

    def update(self, chunk: memoryview | bytes) -> None:
        self.checksum.update(chunk)
        self.mac.update(chunk)

    def check(self, header: memoryview | bytes) -> None:
        """Raise Unusable unless these are the checksum and signature ``header`` carries."""
        if self.checksum.digest() != header[_CHECKSUM]:
            raise Unusable("is corrupt (checksum mismatch)")
        if not hmac.compare_digest(self.mac.digest(), bytes(header[_SIGNATURE])):
            raise Unusable("signature does not verify (written with another signing key)")


def parts(
    data: memoryview, kind: int, signer: Signer, digests: Digests | None = None
) -> tuple[int, list[memoryview]]:
    """Check a whole file's integrity, authenticity and kind; returns (method, parts), the
    file's own name first.

    ``digests``: those of ``data``'s signed bytes if the caller computed them
    already (while reading it).  Only the fixed-size prefix is looked at
    before the checksum and the signature have verified; nothing else is
    interpreted until then.
    """
    file_kind, method, count = check_header(data, len(data))
    if digests is None:
        digests = Digests(signer)
        digests.update(data[:PREFIX_SIZE])
        digests.update(data[HEADER_SIZE:])
    digests.check(data)
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
    data: memoryview, kind: int, name: str, signer: Signer, digests: Digests | None = None
) -> tuple[int, list[memoryview]]:
    """:func:`parts`, and the file must be the one stored under ``name``; returns (method, body)."""
    method, found = parts(data, kind, signer, digests)
    if found[0] != name.encode():
        raise Unusable("is corrupt (stored under the wrong name)")
    return method, found[1:]


def name_in(head: bytes | memoryview) -> bytes | None:
    """The name a file whose first bytes are ``head`` carries; None if it lies beyond ``head``.

    Only for a file whose checksum and signature have verified.
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
