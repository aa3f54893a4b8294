"""Fixtures for integration tests against real local servers.

S3: one `moto_server` subprocess per session on a free loopback port; boto3 talks to it
over HTTP exactly as to AWS. Each test gets its own bucket, and an environment scrubbed of
the machine's AWS settings so nothing can reach a real account.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dultra.storage import S3Options, make_client
from tests.helpers import free_port

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="session")
def moto_endpoint():
    """URL of a running moto_server (S3-compatible) on loopback."""
    exe = str(MOTO_SERVER) if MOTO_SERVER.exists() else shutil.which("moto_server")
    assert exe, "moto_server not found: pip install -e '.[dev]'"
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_env(monkeypatch, tmp_path):
    """Dummy credentials and no endpoint, profile or config from this machine."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_options(moto_endpoint, s3_env) -> S3Options:
    return S3Options(endpoint_url=moto_endpoint, progress=False)


@pytest.fixture
def s3_client(s3_options):
    return make_client(s3_options)


@pytest.fixture
def s3_bucket(s3_client) -> str:
    """A fresh, empty bucket for this test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> Path:
    """A tiny dultra checkpoint (config.json, model.safetensors, tokenizer). Read-only: copy to modify."""
    from dultra.model.tiny import build_tiny

    path = tmp_path_factory.mktemp("tiny-checkpoint")
    model, tokenizer = build_tiny(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
