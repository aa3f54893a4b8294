"""`dultra runs` / list_runs against a real S3-compatible server (moto_server on loopback).

    pytest tests/integration/test_storage_listing.py
"""

from __future__ import annotations

import importlib
import json
import re

import pytest

from dultra.cli import main
from dultra.storage import list_runs, publish
from dultra.storage.listing import COMPLETE, INVALID, MISSING, UNFINISHED
from dultra.storage.manifest import utc_now

pytestmark = pytest.mark.integration


def test_lists_complete_unfinished_and_invalid_runs(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client,
                                                    monkeypatch):
    uri = f"s3://{s3_bucket}/m"
    stamps = iter(["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"])
    # Publish times one day apart; the module, not the function `dultra.storage.publish` shadows it with.
    monkeypatch.setattr(importlib.import_module("dultra.storage.publish"), "utc_now", lambda: next(stamps))
    publish(tiny_checkpoint_dir, uri, run_id="old", metrics={"accuracy": 0.5}, base_model="tiny", options=s3_options)
    publish(tiny_checkpoint_dir, uri, run_id="new", options=s3_options)
    # A publish killed before its manifest, one whose manifest is garbage, and one that is not a run id.
    s3_client.put_object(Bucket=s3_bucket, Key="m/runs/killed/config.json", Body=b"{}")
    s3_client.put_object(Bucket=s3_bucket, Key="m/runs/broken/manifest.json", Body=b"not json")
    s3_client.put_object(Bucket=s3_bucket, Key="m/runs/.hidden/x", Body=b"")
    # Another prefix's runs are not listed.
    s3_client.put_object(Bucket=s3_bucket, Key="m2/runs/other/manifest.json", Body=b"{}")

    runs = list_runs(uri, options=s3_options)
    by_id = {r.run_id: r for r in runs}
    assert [r.run_id for r in runs][-2:] == ["new", "old"]  # complete runs, newest first, after the rest
    assert set(by_id) == {"old", "new", "killed", "broken", ".hidden"}
    assert (by_id["new"].status, by_id["new"].latest) == (COMPLETE, True)
    assert (by_id["old"].status, by_id["old"].latest) == (COMPLETE, False)
    assert by_id["old"].manifest.metrics == {"accuracy": 0.5} and by_id["old"].manifest.base_model == "tiny"
    assert by_id["old"].uri == f"s3://{s3_bucket}/m/runs/old/"
    assert by_id["killed"].status == UNFINISHED and by_id["killed"].manifest is None
    assert by_id["broken"].status == INVALID and "not a valid manifest" in by_id["broken"].problem
    assert by_id[".hidden"].status == INVALID and "run id" in by_id[".hidden"].problem


def test_latest_naming_a_deleted_run_is_reported(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client):
    uri = f"s3://{s3_bucket}/m"
    result = publish(tiny_checkpoint_dir, uri, run_id="gone", options=s3_options)
    for path in [f.path for f in result.manifest.files] + ["manifest.json"]:
        s3_client.delete_object(Bucket=s3_bucket, Key=f"m/runs/gone/{path}")
    [run] = list_runs(uri, options=s3_options)
    assert (run.run_id, run.status, run.latest) == ("gone", MISSING, True)


def test_unreadable_latest_is_reported_and_the_runs_still_listed(tiny_checkpoint_dir, s3_bucket, s3_options,
                                                                 s3_client):
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, run_id="kept", options=s3_options)
    s3_client.put_object(Bucket=s3_bucket, Key="m/latest", Body=b"garbage")
    pointer, run = list_runs(uri, options=s3_options)
    assert (run.run_id, run.status, run.latest) == ("kept", COMPLETE, False)
    assert (pointer.run_id, pointer.status, pointer.uri) == ("latest", INVALID, f"s3://{s3_bucket}/m/latest")
    assert "not a valid pointer" in pointer.problem


def test_cli_table_and_json(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, capsys):
    uri = f"s3://{s3_bucket}/cli"
    publish(tiny_checkpoint_dir, uri, run_id="r1", metrics={"accuracy": 0.123456, "nfe": 4}, base_model="tiny",
            options=s3_options)
    s3_client.put_object(Bucket=s3_bucket, Key="cli/runs/r0/config.json", Body=b"{}")
    endpoint = ["--endpoint-url", s3_options.endpoint_url]

    assert main(["runs", uri, *endpoint]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "STATUS", "PUBLISHED", "SIZE", "BASE", "MODEL", "DETAILS"]
    assert rows[0].split()[:2] == ["r0", "unfinished"] and "no manifest.json" in rows[0]
    assert rows[1].split()[:3] == ["r1", "complete,", "latest"]
    assert re.search(r" 4\.\d MiB +tiny +accuracy=0\.1235 nfe=4$", rows[1])
    # Columns line up: every row's STATUS starts where the header's does.
    assert {row.index(row.split()[1]) for row in rows} == {header.index("STATUS")}

    assert main(["runs", uri + "/", "--json", *endpoint]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"], r["status"], r["latest"]) for r in records] == [("r0", UNFINISHED, False),
                                                                          ("r1", COMPLETE, True)]
    total = sum(p.stat().st_size for p in tiny_checkpoint_dir.rglob("*") if p.is_file())
    assert records[1]["total_bytes"] == total and records[1]["metrics"] == {"accuracy": 0.123456, "nfe": 4}
    assert records[1]["created"] <= utc_now() and records[0]["created"] is None


def test_cli_empty_prefix_and_bad_uri(s3_bucket, s3_options, capsys):
    endpoint = ["--endpoint-url", s3_options.endpoint_url]
    assert main(["runs", f"s3://{s3_bucket}/nothing", *endpoint]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"no runs published under s3://{s3_bucket}/nothing/runs/" in captured.err
    assert main(["runs", f"s3://{s3_bucket}/m/runs/r1", *endpoint]) == 2
    assert "runs takes the base prefix" in capsys.readouterr().err
    assert main(["runs", "s3://no-such-bucket-here/m", *endpoint]) == 2
    assert "bucket 'no-such-bucket-here' does not exist" in capsys.readouterr().err
