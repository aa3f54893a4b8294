"""URI parsing and run ids: pytest tests/unit/test_storage_uri.py"""

from datetime import UTC, datetime

import pytest

from dultra.storage.errors import InvalidURI
from dultra.storage.uri import (
    PullSource,
    S3Location,
    check_run_id,
    new_run_id,
    parse_base_uri,
    parse_pull_uri,
    parse_s3_uri,
)


@pytest.mark.parametrize("text, bucket, prefix", [
    ("s3://bkt", "bkt", ""),
    ("s3://bkt/", "bkt", ""),
    ("s3://bkt/a/b", "bkt", "a/b"),
    ("s3://bkt/a/b/", "bkt", "a/b"),
    ("s3://my.bucket-1/x", "my.bucket-1", "x"),
])
def test_parse_s3_uri(text, bucket, prefix):
    assert parse_s3_uri(text) == S3Location(bucket, prefix)


@pytest.mark.parametrize("text", ["bkt/a", "https://bkt/a", "s3://", "s3:///a", "s3://b/a//c", "s3://bkt/a/../c",
                                  "s3://bkt/./a"])
def test_parse_s3_uri_refuses(text):
    with pytest.raises(InvalidURI):
        parse_s3_uri(text)


def test_keys_and_uris():
    base = S3Location("bkt", "models/tiny")
    assert base.key("latest") == "models/tiny/latest"
    assert base.run("r1").key("config.json") == "models/tiny/runs/r1/config.json"
    assert base.run("r1").uri() == "s3://bkt/models/tiny/runs/r1"
    root = S3Location("bkt", "")
    assert root.key("latest") == "latest"
    assert root.run("r1").key("a/b.bin") == "runs/r1/a/b.bin"


@pytest.mark.parametrize("text, expected", [
    ("s3://bkt/m", PullSource(S3Location("bkt", "m"), None)),
    ("s3://bkt/m/latest", PullSource(S3Location("bkt", "m"), None)),
    ("s3://bkt/m/latest/", PullSource(S3Location("bkt", "m"), None)),
    ("s3://bkt/latest", PullSource(S3Location("bkt", ""), None)),
    ("s3://bkt/m/runs/r-1", PullSource(S3Location("bkt", "m"), "r-1")),
    ("s3://bkt/a/b/runs/20250101T000000Z-abc123/", PullSource(S3Location("bkt", "a/b"), "20250101T000000Z-abc123")),
    ("s3://bkt/runs/r1", PullSource(S3Location("bkt", ""), "r1")),
])
def test_parse_pull_uri(text, expected):
    assert parse_pull_uri(text) == expected


def test_publish_uri_must_be_a_base():
    assert parse_base_uri("s3://bkt/m/") == S3Location("bkt", "m")
    for text in ("s3://bkt/m/latest", "s3://bkt/m/runs/r1"):
        with pytest.raises(InvalidURI, match="base prefix"):
            parse_base_uri(text)


@pytest.mark.parametrize("run_id", ["", "a/b", "..", ".hidden", "-x", "a b", "x" * 129, "é"])
def test_bad_run_ids(run_id):
    with pytest.raises(InvalidURI):
        check_run_id(run_id)
    with pytest.raises(InvalidURI):
        S3Location("bkt", "m").run(run_id)


def test_new_run_id_sorts_by_time_and_is_unique():
    early = new_run_id(datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC))
    late = new_run_id(datetime(2025, 1, 31, 12, 0, 1, tzinfo=UTC))
    assert early.startswith("20250131T120000Z-") and len(early) == len("20250131T120000Z-") + 6
    assert early < late
    assert check_run_id(early) == early
    assert len({new_run_id() for _ in range(100)}) == 100
