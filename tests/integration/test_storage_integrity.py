"""pull refuses tampered, partial and foreign runs; errors are typed and one line.

    pytest tests/integration/test_storage_integrity.py
"""

from __future__ import annotations

import hashlib
import json

import pytest

from dultra.cli import main
from dultra.storage import (
    BucketNotFound,
    ChecksumMismatch,
    IncompleteRun,
    IntegrityError,
    PointerNotFound,
    RunExists,
    RunNotFound,
    publish,
    pull,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def published(tiny_checkpoint_dir, s3_bucket, s3_options):
    """A run `r1` under s3://<bucket>/m, named by `latest`. Returns (bucket, run key prefix)."""
    publish(tiny_checkpoint_dir, f"s3://{s3_bucket}/m", run_id="r1", options=s3_options)
    return s3_bucket, "m/runs/r1/"


def assert_refused(uri, dest, options, error, match):
    with pytest.raises(error, match=match):
        pull(uri, dest, options=options)
    assert not dest.exists(), "a refused pull must leave nothing at DIR"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")], "staging directory left behind"


def test_tampered_bytes_same_size_refused(published, s3_client, s3_options, tmp_path):
    bucket, run = published
    key = run + "model.safetensors"
    body = bytearray(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # one flipped byte deep inside the weights, same size
    s3_client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    assert_refused(f"s3://{bucket}/m", tmp_path / "out", s3_options, ChecksumMismatch, "model.safetensors.*sha256")


def test_tampered_size_refused_before_download(published, s3_client, s3_options, tmp_path):
    bucket, run = published
    s3_client.put_object(Bucket=bucket, Key=run + "config.json", Body=b"{}")
    assert_refused(f"s3://{bucket}/m/runs/r1", tmp_path / "out", s3_options, ChecksumMismatch,
                   "config.json is 2 bytes")


def test_manifest_rewritten_to_match_tampering_refused_via_latest(published, s3_client, s3_options, tmp_path):
    """Whoever edits a file and its manifest entry still cannot fool a pull of `latest`,
    which records the manifest's sha256."""
    bucket, run = published
    s3_client.put_object(Bucket=bucket, Key=run + "config.json", Body=b"{}")
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=run + "manifest.json")["Body"].read())
    for entry in manifest["files"]:
        if entry["path"] == "config.json":
            entry.update(size=2, sha256=hashlib.sha256(b"{}").hexdigest())
    s3_client.put_object(Bucket=bucket, Key=run + "manifest.json", Body=json.dumps(manifest).encode())
    assert_refused(f"s3://{bucket}/m", tmp_path / "out", s3_options, IntegrityError, "not the manifest `latest`")


def test_missing_object_refused(published, s3_client, s3_options, tmp_path):
    bucket, run = published
    s3_client.delete_object(Bucket=bucket, Key=run + "tokenizer.json")
    assert_refused(f"s3://{bucket}/m", tmp_path / "out", s3_options, IncompleteRun, "lacks 1 file.*tokenizer.json")


def test_extra_object_refused(published, s3_client, s3_options, tmp_path):
    bucket, run = published
    s3_client.put_object(Bucket=bucket, Key=run + "backdoor.py", Body=b"import os")
    assert_refused(f"s3://{bucket}/m", tmp_path / "out", s3_options, IntegrityError, "does not list: backdoor.py")


def test_a_run_copied_under_another_id_refused(published, s3_client, s3_options, tmp_path):
    """Its manifest names the run it was published as: a copy elsewhere is not that run."""
    bucket, run = published
    for obj in s3_client.list_objects_v2(Bucket=bucket, Prefix=run)["Contents"]:
        s3_client.copy_object(Bucket=bucket, Key=obj["Key"].replace("/r1/", "/r2/"),
                              CopySource={"Bucket": bucket, "Key": obj["Key"]})
    assert_refused(f"s3://{bucket}/m/runs/r2", tmp_path / "out", s3_options, IntegrityError, "belongs to run 'r1'")


def test_partial_run_without_manifest_refused(tiny_checkpoint_dir, s3_bucket, s3_client, s3_options, tmp_path):
    # What a publish killed before its manifest leaves: some files, no manifest.json.
    for name in ("config.json", "model.safetensors"):
        s3_client.upload_file(str(tiny_checkpoint_dir / name), s3_bucket, f"m/runs/partial/{name}")
    assert_refused(f"s3://{s3_bucket}/m/runs/partial", tmp_path / "out", s3_options, IncompleteRun,
                   "no manifest.json")


def test_missing_things_are_named(published, s3_options, tmp_path):
    bucket, _ = published
    with pytest.raises(RunNotFound, match="runs/nope"):
        pull(f"s3://{bucket}/m/runs/nope", tmp_path / "a", options=s3_options)
    with pytest.raises(PointerNotFound, match="other/latest"):
        pull(f"s3://{bucket}/other", tmp_path / "a", options=s3_options)
    with pytest.raises(BucketNotFound, match="no-such-bucket-here"):
        pull("s3://no-such-bucket-here/m", tmp_path / "a", options=s3_options)


def test_publish_refuses_existing_run_and_missing_bucket(published, tiny_checkpoint_dir, s3_options, s3_client):
    bucket, run = published
    before = s3_client.get_object(Bucket=bucket, Key="m/latest")["ETag"]
    with pytest.raises(RunExists, match="immutable"):
        publish(tiny_checkpoint_dir, f"s3://{bucket}/m", run_id="r1", options=s3_options)
    assert s3_client.get_object(Bucket=bucket, Key="m/latest")["ETag"] == before
    with pytest.raises(BucketNotFound):
        publish(tiny_checkpoint_dir, "s3://no-such-bucket-here/m", options=s3_options)


def test_cli_prints_one_line_errors(tiny_checkpoint_dir, s3_bucket, moto_endpoint, s3_env, monkeypatch, tmp_path,
                                    capsys):
    uri = f"s3://{s3_bucket}/m"
    assert main(["pull", uri, str(tmp_path / "out"), "--endpoint-url", moto_endpoint]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dultra: error: no `latest` pointer") and err.count("\n") == 1

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["publish", str(tiny_checkpoint_dir), uri, "--endpoint-url", moto_endpoint]) == 2
    err = capsys.readouterr().err
    assert "no AWS credentials" in err and err.count("\n") == 1


class RivalCommitsSameRun:
    """A real client; during its first upload another publisher with the same run id
    commits that run's manifest (the listing check passed for both of them)."""

    def __init__(self, client, bucket: str, manifest_key: str):
        self._client, self._bucket, self._key, self._fired = client, bucket, manifest_key, False

    def upload_file(self, *args, **kwargs):
        if not self._fired:
            self._fired = True
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=b"{}", IfNoneMatch="*")
        return self._client.upload_file(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_run_is_committed_once(published, tiny_checkpoint_dir, s3_options, s3_client):
    bucket, _ = published
    before = s3_client.get_object(Bucket=bucket, Key="m/latest")["ETag"]
    racing = RivalCommitsSameRun(s3_client, bucket, "m/runs/same/manifest.json")
    with pytest.raises(RunExists, match="another publisher with the same run id"):
        publish(tiny_checkpoint_dir, f"s3://{bucket}/m", run_id="same", options=s3_options, client=racing)
    assert s3_client.get_object(Bucket=bucket, Key="m/runs/same/manifest.json")["Body"].read() == b"{}"
    assert s3_client.get_object(Bucket=bucket, Key="m/latest")["ETag"] == before


def test_an_unreadable_latest_fails_a_publish_before_its_upload(published, tiny_checkpoint_dir, s3_options,
                                                                s3_client):
    bucket, _ = published
    s3_client.put_object(Bucket=bucket, Key="m/latest", Body=b"r1\n")  # hand-edited: not the JSON pointer
    with pytest.raises(IntegrityError, match="latest is not a valid pointer"):
        publish(tiny_checkpoint_dir, f"s3://{bucket}/m", run_id="r2", options=s3_options)
    assert s3_client.list_objects_v2(Bucket=bucket, Prefix="m/runs/r2/")["KeyCount"] == 0  # nothing uploaded
