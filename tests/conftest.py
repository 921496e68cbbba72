"""Shared fixtures: an S3 server on loopback (moto) that tests reach with the real minio client."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def s3_server():
    """Start moto's S3 server in-process on 127.0.0.1 (free port); yield ``"host:port"``.

    Moto accepts any credentials unless IAM auth is switched on (``POST /moto-api/reset-auth``);
    tests that need auth enforced do that themselves and switch it back off.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point the S3 variables KServe reads at the moto server; create and yield a fresh bucket name."""
    from minio import Minio

    for var in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE", "S3_VERIFY_SSL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("S3_ENDPOINT", s3_server)
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    Minio(
        s3_server,
        access_key="testing-access-key",
        secret_key="testing-secret-key",
        secure=False,
        region="us-east-1",
    ).make_bucket(bucket)
    yield bucket
