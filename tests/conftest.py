"""Shared fixtures: the real corpora beside the project and a real S3 endpoint on loopback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

SHARED_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def shared_corpora() -> Path:
    """The real EMOVO and RAVDESS copies in ``../shared/corpora``.

    CI always has them; elsewhere the tests that need them are skipped, saying why.
    """
    if not (SHARED_CORPORA / "emovo").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the real corpora at {SHARED_CORPORA}")
        pytest.skip(f"real corpora not found at {SHARED_CORPORA} (they sit beside the project in ../shared)")
    return SHARED_CORPORA


@pytest.fixture
def local_ray():
    """Ray in this process with two CPUs, shut down afterwards (modules that keep Ray for all their tests define their own)."""
    import ray

    assert not ray.is_initialized(), "another test left Ray running"
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real HTTP S3 endpoint on loopback (moto's threaded server), for unit tests."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A fresh bucket on the moto endpoint.

    Returns a dict with ``bucket``, ``endpoint`` and the ``storage_options``
    that s3fs needs to reach it. Credentials are fake and only in the environment.
    """
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"crossemo-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return {"bucket": bucket, "endpoint": moto_endpoint, "storage_options": {"endpoint_url": moto_endpoint, "key": "testing-key", "secret": "testing-secret"}}
