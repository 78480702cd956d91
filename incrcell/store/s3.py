"""The ``s3://BUCKET/PREFIX`` backend: objects in an S3-compatible bucket, through obstore.

obstore (Python bindings of the Rust ``object_store`` crate, maintained by
the developmentseed/Arrow community) because it does what this backend needs
in one small, dependency-free wheel: conditional PUT (``mode="create"``, sent
as ``If-None-Match: *``) for write-once objects, connect and request timeouts
and a bounded retry policy per client, the standard ``AWS_*`` variables, and
calls that release the GIL, so background uploads never slow the notebook.
(s3fs/fsspec bring aiobotocore and an event loop thread, and expose neither
conditional writes nor per-call timeouts as simply.)

Write-once: :meth:`S3Backend.write` never replaces an object (a second writer
of a name gets FileExistsError and loses), and nothing here deletes: the
remote is pruned by the bucket's own lifecycle rules.  Errors come out as
OSError: FileNotFoundError (absent), FileExistsError (already written),
PermissionError (credentials), :class:`RemoteError` (anything else: network,
timeouts, the server), which the store's circuit breaker counts.

Endpoint and credentials: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_PROFILE`` (read from ``~/.aws/credentials`` and ``~/.aws/config``),
``AWS_ALLOW_HTTP=true`` for a plain-http endpoint.
"""

from __future__ import annotations

import configparser
import errno
import os
import re
from collections.abc import Hashable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from .backend import Backend, Listing
from .codec import aligned_buffer

if TYPE_CHECKING:
    from obstore.store import S3Config

#: Bounds on every request: a dead or silent server costs at most about this long.
CONNECT_TIMEOUT = timedelta(seconds=2)
READ_TIMEOUT = timedelta(seconds=10)  # no byte for this long: the transfer has stalled
REQUEST_TIMEOUT = timedelta(minutes=10)  # a whole transfer (large values take a while)
RETRIES = {"max_retries": 2, "retry_timeout": timedelta(seconds=5)}


class RemoteError(OSError):
    """The remote could not answer (network, timeout, server error); says why in one line."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _profile() -> dict[str, str]:
    """Credentials and region of ``$AWS_PROFILE`` from the AWS shared files (as every AWS
    client reads them); empty when explicit keys are set or there is no such profile."""
    profile = os.environ.get("AWS_PROFILE", "").strip()
    if not profile or os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    found: dict[str, str] = {}
    home = os.path.expanduser("~")
    files = [
        (os.environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config"), True),
        (
            os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
            or os.path.join(home, ".aws", "credentials"),
            False,
        ),
    ]
    for path, is_config in files:
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        section = f"profile {profile}" if is_config and profile != "default" else profile
        if parser.has_section(section):
            found.update(parser[section])
    config = {
        "aws_access_key_id": "access_key_id",
        "aws_secret_access_key": "secret_access_key",
        "aws_session_token": "session_token",
        "region": "region",
        "endpoint_url": "endpoint",
    }
    return {ours: found[theirs] for theirs, ours in config.items() if found.get(theirs)}


class S3Backend(Backend):
    """Objects under ``PREFIX/`` in ``BUCKET``; write-once, never deleted by incrcell."""

    def __init__(self, location: str) -> None:
        """``location``: ``BUCKET/PREFIX`` (the part of the URL after ``s3://``)."""
        bucket, _, prefix = location.strip("/").partition("/")
        if not bucket:
            raise ValueError("an s3:// location needs a bucket: s3://BUCKET/PREFIX")
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        config: dict[str, Any] = _profile()
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            config["endpoint"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            config["region"] = region
        self._store = S3Store(
            bucket,
            prefix=prefix.strip("/") or None,
            config=cast("S3Config", config),
            client_options={
                "allow_http": _flag("AWS_ALLOW_HTTP"),
                "connect_timeout": CONNECT_TIMEOUT,
                "read_timeout": READ_TIMEOUT,
                "timeout": REQUEST_TIMEOUT,
            },
            retry_config=RETRIES,  # type: ignore[arg-type]
        )

    def read(self, name: str) -> tuple[memoryview, Hashable]:
        try:
            result = obstore.get(self._store, name)
            data = result.bytes()
        except Exception as exc:
            raise _error(exc, name) from None
        view = memoryview(data)
        try:
            buffer = aligned_buffer(view.nbytes)
        except MemoryError:
            raise OSError(errno.ENOMEM, "too large for the memory available") from None
        buffer[:] = view
        return buffer, result.meta.get("e_tag")

    def write(self, name: str, chunks: Sequence[bytes | memoryview]) -> int:
        """Create ``name`` only if absent (If-None-Match: *); FileExistsError if it is there."""
        data = b"".join(chunks)
        try:
            obstore.put(self._store, name, data, mode="create", use_multipart=False)
        except Exception as exc:
            raise _error(exc, name) from None
        return len(data)

    def exists(self, name: str) -> bool:
        try:
            obstore.head(self._store, name)
        except Exception as exc:
            error = _error(exc, name)
            if isinstance(error, FileNotFoundError):
                return False
            raise error from None
        return True

    def touch(self, name: str) -> bool:
        """The remote keeps no last use of ours: its lifecycle rules decide what stays."""
        return self.exists(name)

    def delete(self, name: str, version: Hashable | None = None) -> bool:
        """Never: the remote is write-once."""
        return False

    def list(self, prefix: str) -> Iterator[Listing]:
        try:
            for batch in obstore.list(self._store, prefix + "/", chunk_size=1000):
                for meta in batch:
                    yield Listing(meta["path"], meta["size"], meta["last_modified"].timestamp())
        except Exception as exc:
            raise _error(exc, prefix) from None

    def clear(self) -> None:
        raise PermissionError(
            errno.EPERM, "the remote cache is write-once: incrcell never clears it"
        )


def _error(exc: Exception, name: str) -> OSError:
    """An obstore error as the OSError the store understands, in one line."""
    if isinstance(exc, NotFoundError):
        return FileNotFoundError(errno.ENOENT, "not in the remote", name)
    if isinstance(exc, (AlreadyExistsError, PreconditionError)):
        return FileExistsError(errno.EEXIST, "already in the remote", name)
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
        return PermissionError(errno.EACCES, f"access denied ({_first_line(exc)})")
    if isinstance(exc, OSError):
        return exc
    return RemoteError(errno.EIO, _first_line(exc))


def _first_line(exc: Exception) -> str:
    """obstore's message in one line: its first line without the request's URL and timing,
    and the operating system's reason when its debug dump names one."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if " - " in first and "Error performing" in first:
        first = first.split(" - ", 1)[1]
    cause = re.search(r'message: "([^"]+)"', text)
    if cause and cause[1] not in first:
        first = f"{first}: {cause[1]}"
    return first[:200]
