"""Publish -> pull -> load against a real S3-compatible server (moto_server on loopback).

    pytest tests/integration/test_storage_roundtrip.py
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import torch

from dultra.cli import main
from dultra.model import LLaDAModelLM
from dultra.storage import (
    AccessDenied,
    DestinationNotEmpty,
    EndpointUnreachable,
    NotACheckpoint,
    RunExists,
    S3Options,
    StorageError,
    publish,
    pull,
    read_pointer,
)
from dultra.storage.s3 import MiB
from dultra.storage.uri import S3Location
from tests.helpers import free_port

pytestmark = pytest.mark.integration


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_publish_pull_from_pretrained(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, tmp_path):
    uri = f"s3://{s3_bucket}/dultra/tiny"
    result = publish(tiny_checkpoint_dir, uri, metrics={"accuracy": 0.25, "tpf": 3.1}, config={"lr": 1e-6},
                     base_model="tiny", options=s3_options)
    assert result.run_uri == f"s3://{s3_bucket}/dultra/tiny/runs/{result.run_id}/"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", result.run_id)
    assert (result.pointer.run_id, result.pointer.generation, result.pointer.previous_run_id) == (
        result.run_id, 1, None)

    pulled = pull(uri, tmp_path / "ckpt", options=s3_options)
    assert pulled.run_id == result.run_id
    assert pulled.manifest == result.manifest
    assert pulled.manifest.metrics == {"accuracy": 0.25, "tpf": 3.1}
    assert pulled.manifest.base_model == "tiny" and pulled.manifest.config == {"lr": 1e-6}
    assert pulled.manifest.git_commit is None or re.fullmatch(r"[0-9a-f]{40}", pulled.manifest.git_commit)
    assert same_files(tiny_checkpoint_dir, tmp_path / "ckpt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directory left behind"
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755  # not mkdtemp's 0700: others may read it

    original = LLaDAModelLM.from_pretrained(tiny_checkpoint_dir).state_dict()
    loaded = LLaDAModelLM.from_pretrained(tmp_path / "ckpt").state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)

    # The manifest is the last object of the run and lists every other one.
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="dultra/tiny/")["Contents"]}
    run_prefix = f"dultra/tiny/runs/{result.run_id}/"
    assert keys == {"dultra/tiny/latest", run_prefix + "manifest.json"} | {
        run_prefix + f.path for f in result.manifest.files}


def test_latest_moves_and_runs_stay_addressable(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, tmp_path):
    uri = f"s3://{s3_bucket}/m"
    first = publish(tiny_checkpoint_dir, uri, run_id="first", options=s3_options)
    second_dir = tmp_path / "second"
    shutil.copytree(tiny_checkpoint_dir, second_dir)
    (second_dir / "extra" / "notes.txt").parent.mkdir()
    (second_dir / "extra" / "notes.txt").write_text("second run")
    second = publish(second_dir, uri, run_id="second", options=s3_options)
    assert (second.pointer.generation, second.pointer.previous_run_id) == (2, "first")
    assert read_pointer(s3_client, S3Location(s3_bucket, "m"))[0] == second.pointer

    assert pull(uri, tmp_path / "a", options=s3_options).run_id == "second"
    assert pull(f"{uri}/latest", tmp_path / "b", options=s3_options).run_id == "second"
    assert same_files(second_dir, tmp_path / "b")
    assert pull(f"{uri}/runs/first", tmp_path / "c", options=s3_options).manifest == first.manifest
    assert same_files(tiny_checkpoint_dir, tmp_path / "c")


def test_pull_refuses_non_empty_dir_unless_forced(tiny_checkpoint_dir, s3_bucket, s3_options, tmp_path):
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, options=s3_options)
    dest = tmp_path / "ckpt"
    dest.mkdir()
    pull(uri, dest, options=s3_options)  # an empty directory is fine
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(DestinationNotEmpty):
        pull(uri, dest, options=s3_options)
    with pytest.raises(DestinationNotEmpty):  # refused before any S3 call, even to a missing bucket
        pull("s3://no-such-bucket-here/m", dest, options=s3_options)
    assert (dest / "mine.txt").read_text() == "keep me"
    pull(uri, dest, force=True, options=s3_options)
    assert same_files(tiny_checkpoint_dir, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_pull_force_replaces_only_a_checkpoint(tiny_checkpoint_dir, s3_bucket, s3_options, tmp_path):
    """A mistyped --force destination (a home directory, a source tree) is refused, not deleted."""
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, options=s3_options)
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for dest, message in ((home, "holds files but no checkpoint .* is not replaced, --force or not"),
                          (tmp_path / "file", "is a file, not a directory")):
        for force in (True, False):  # the message never suggests a --force that would be refused
            with pytest.raises(DestinationNotEmpty, match=message):
                pull(uri, dest, force=force, options=s3_options)
    assert (home / "notes" / "todo.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "home"]  # no staging debris


def test_pull_through_a_symlink_fills_its_target_and_keeps_the_link(tiny_checkpoint_dir, s3_bucket, s3_options,
                                                                     tmp_path):
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, options=s3_options)
    (tmp_path / "volume").mkdir()
    (tmp_path / "ckpt").symlink_to(tmp_path / "volume")
    for force in (False, True):  # into the empty target, then replacing the checkpoint there
        pull(uri, tmp_path / "ckpt", force=force, options=s3_options)
        assert (tmp_path / "ckpt").is_symlink() and same_files(tiny_checkpoint_dir, tmp_path / "volume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "volume"]


def test_pull_force_replaces_a_mount_point_s_contents(tiny_checkpoint_dir, s3_bucket, s3_options, tmp_path):
    """A volume's mount point cannot be renamed: its checkpoint is replaced in place (a pod's PVC)."""
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, options=s3_options)
    volume = tmp_path / "volume"
    volume.mkdir()
    busy = volume / "busy"
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume)], check=True)  # CI runs as root, as dockerd does
    try:
        (volume / "lost+found").mkdir()  # what mkfs.ext4 leaves: the volume's, not the checkpoint's
        pull(uri, volume, options=s3_options)
        (volume / "stale.safetensors").write_bytes(b"from an older run")
        pull(uri, volume, force=True, options=s3_options)
        assert os.path.ismount(volume) and (volume / "lost+found").is_dir()
        shutil.rmtree(volume / "lost+found")
        assert same_files(tiny_checkpoint_dir, volume)  # the stale file and the staging dir are gone
        busy.mkdir()  # something that cannot be moved aside: the replacement stops and undoes itself
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(busy)], check=True)
        with pytest.raises(DestinationNotEmpty, match=f"cannot replace {volume}: Device or resource busy: .*; it "
                                                      "is unchanged"):
            pull(uri, volume, force=True, options=s3_options)
        kept = sorted(p.name for p in volume.iterdir())
        assert kept == sorted(["busy", *(p.name for p in tiny_checkpoint_dir.iterdir())])
    finally:
        subprocess.run(["umount", str(busy)], check=False)
        subprocess.run(["umount", str(volume)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]


def test_publish_refuses_what_the_manifest_cannot_hold_before_uploading(tiny_checkpoint_dir, s3_bucket, s3_options,
                                                                         s3_client, tmp_path, capsys):
    with pytest.raises(StorageError, match="the metrics cannot be written to the manifest as JSON: Object of type ndarray"):
        publish(tiny_checkpoint_dir, f"s3://{s3_bucket}/m", metrics={"loss": torch.tensor(0.5).numpy()},
                options=s3_options)
    with pytest.raises(StorageError, match="the config cannot be written to the manifest as JSON: '<' not supported"):
        publish(tiny_checkpoint_dir, f"s3://{s3_bucket}/m", config={1: "a", "b": 2}, options=s3_options)
    with pytest.raises(StorageError, match="the metrics cannot be written .* Out of range float values"):
        publish(tiny_checkpoint_dir, f"s3://{s3_bucket}/m", metrics={"loss": float("nan")}, options=s3_options)
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="m/").get("KeyCount") == 0  # nothing uploaded
    config = tmp_path / "train.yaml"
    for text, message in (("key: !!binary aGk=\n", "bytes b'hi'"), ("lr: .nan\n", "Out of range float values")):
        config.write_text(text)  # YAML's NaN would be a bare NaN in the manifest: not JSON
        assert main(["publish", str(tiny_checkpoint_dir), f"s3://{s3_bucket}/m", "--config", str(config),
                     "--endpoint-url", s3_options.endpoint_url]) == 2
        assert f"--config file {config} holds a value JSON cannot: {message}" in capsys.readouterr().err


def test_publish_refuses_what_is_not_a_checkpoint(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, tmp_path):
    """`latest` must never name a run no one can load: a training output dir, weights without config."""
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, run_id="good", options=s3_options)
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_checkpoint_dir, run_dir / "final")
    (run_dir / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(NotACheckpoint, match=f"did you mean {run_dir / 'final'}"):
        publish(run_dir, uri, options=s3_options)
    (run_dir / "final" / "config.json").unlink()
    with pytest.raises(NotACheckpoint, match="needs config.json and \\*.safetensors weights \\(every shard"):
        publish(run_dir / "final", uri, options=s3_options)
    sharded = tmp_path / "sharded"  # an index naming a shard that is not there: nothing could load it
    sharded.mkdir()
    shutil.copy(tiny_checkpoint_dir / "config.json", sharded)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    shutil.copy(tiny_checkpoint_dir / "model.safetensors", sharded / "model-00001-of-00002.safetensors")
    with pytest.raises(NotACheckpoint):
        publish(sharded, uri, options=s3_options)
    with pytest.raises(NotACheckpoint, match="no checkpoint directory"):
        publish(tmp_path / "missing", uri, options=s3_options)
    assert read_pointer(s3_client, S3Location(s3_bucket, "m"))[0].run_id == "good"
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="m/runs/")["Contents"]}
    assert {k.split("/")[2] for k in keys} == {"good"}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _set_config(text: str):
    return lambda ckpt: (ckpt / "config.json").write_text(text)


@pytest.mark.parametrize("corrupt, message", [
    (lambda ckpt: (ckpt / "model.safetensors").write_bytes(b""), r"model.safetensors is 0 bytes: too short"),
    (lambda ckpt: _truncate(ckpt / "model.safetensors"), r"model.safetensors is \d+ bytes; its header says \d+ \(truncated\)"),
    (lambda ckpt: (ckpt / "model.safetensors").write_bytes(b"\xff" * 64), r"model.safetensors is 64 bytes but its header"),
    (_set_config("{"), r"config.json is not valid JSON"),
    (_set_config("[]"), r"config.json holds a JSON list, not a model config object"),
    (_set_config('{"model_type": "llama"}'), r"config.json has model_type 'llama'; a LLaDA or dUltra checkpoint's is 'llada'"),
], ids=["empty-weights", "truncated-weights", "not-safetensors", "config-not-json", "config-a-list",
        "other-model-type"])
def test_publish_refuses_a_checkpoint_that_cannot_load(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client,
                                                       tmp_path, capsys, corrupt, message):
    """A copy cut short or a broken config.json passes a files-exist check; `latest` must not move to it."""
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, run_id="good", options=s3_options)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint_dir, broken)
    corrupt(broken)
    assert main(["publish", str(broken), uri, "--endpoint-url", s3_options.endpoint_url, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith(f"dultra: error: {broken}/") and err.count("\n") == 1, err
    assert read_pointer(s3_client, S3Location(s3_bucket, "m"))[0].run_id == "good"
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="m/runs/")["Contents"]}
    assert {k.split("/")[2] for k in keys} == {"good"}  # nothing of the broken one uploaded


def test_publish_checks_every_shard_an_index_names(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, tmp_path):
    uri = f"s3://{s3_bucket}/m"
    sharded = tmp_path / "sharded"
    LLaDAModelLM.from_pretrained(tiny_checkpoint_dir).save_pretrained(sharded, max_shard_size="20KB")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").is_file()
    assert publish(sharded, uri, run_id="sharded", options=s3_options).run_id == "sharded"
    _truncate(shards[-1])
    with pytest.raises(NotACheckpoint, match=re.escape(str(shards[-1])) + r" is \d+ bytes; its header says"):
        publish(sharded, uri, options=s3_options)
    assert read_pointer(s3_client, S3Location(s3_bucket, "m"))[0].run_id == "sharded"


def test_pull_into_the_current_directory_fills_it_in_place(tiny_checkpoint_dir, s3_bucket, s3_options, tmp_path,
                                                           monkeypatch):
    uri = f"s3://{s3_bucket}/m"
    publish(tiny_checkpoint_dir, uri, options=s3_options)
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    pull(uri, ".", options=s3_options)
    assert same_files(tiny_checkpoint_dir, here) and here.stat().st_ino == inode  # not removed and replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # no staging left beside it


def test_an_unfinished_publish_and_a_bad_endpoint_are_named(tiny_checkpoint_dir, s3_bucket, s3_options,
                                                           s3_client, tmp_path):
    uri = f"s3://{s3_bucket}/m"
    s3_client.put_object(Bucket=s3_bucket, Key="m/runs/killed/model.safetensors", Body=b"half")
    with pytest.raises(RunExists, match="holds an unfinished publish \\(no manifest.json"):
        publish(tiny_checkpoint_dir, uri, run_id="killed", options=s3_options)
    with pytest.raises(StorageError, match="Invalid endpoint: 127.0.0.1:9; an endpoint URL starts with http://"):
        pull(uri, tmp_path / "out", options=S3Options(endpoint_url="127.0.0.1:9"))


def test_a_server_that_never_answers_is_retried_aloud_then_named(tiny_checkpoint_dir, s3_env, tmp_path, capsys):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts: the kernel's backlog connects
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        options = S3Options(endpoint_url=endpoint, read_timeout_s=0.3, max_attempts=3, progress=False)
        with pytest.raises(EndpointUnreachable, match=f"{endpoint}.* accepted the connection but never answered"):
            pull("s3://bucket/m", tmp_path / "out", options=options)
    notes = capsys.readouterr().err.splitlines()
    assert notes == [f"dultra: note: {endpoint} did not answer (ReadTimeoutError) to HeadBucket; retrying, "
                     f"attempt {n} of 3" for n in (2, 3)]


class Unavailable(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that is overloaded: 503 SlowDown to everything."""

    def do_HEAD(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_server_errors_are_retried_aloud(s3_env, tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(StorageError, match="S3 answered 503"):
            pull("s3://bucket/m", tmp_path / "out", options=S3Options(endpoint_url=endpoint, max_attempts=2))
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().err == f"dultra: note: {endpoint} answered 503 to HeadBucket; retrying, attempt 2 of 2\n"


class ReadOnly(http.server.BaseHTTPRequestHandler):
    """In front of moto: a bucket whose policy denies writes (PUT answers 403 AccessDenied)."""

    upstream = ""

    def forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = httpx.request(self.command, self.upstream + self.path, headers=headers, content=body)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-encoding"):
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.content)

    do_GET = do_HEAD = do_POST = do_DELETE = forward

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Length", str(len(denied)))
        self.end_headers()
        self.wfile.write(denied)

    def log_message(self, *args):
        pass


def test_a_refused_upload_is_access_denied(tiny_checkpoint_dir, s3_bucket, moto_endpoint, s3_env):
    ReadOnly.upstream = moto_endpoint
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReadOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = S3Options(endpoint_url=f"http://127.0.0.1:{server.server_address[1]}", progress=False)
    try:  # s3transfer re-raises the upload's ClientError without `from`: found through its context
        with pytest.raises(AccessDenied, match="uploading .* to .*: access denied \\(AccessDenied\\); "
                                               "check the credentials and the bucket policy"):
            publish(tiny_checkpoint_dir, f"s3://{s3_bucket}/m", options=options)
    finally:
        server.shutdown()
        server.server_close()


def test_multipart_transfers(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_checkpoint_dir, src)
    (src / "big.bin").write_bytes(os.urandom(11 * MiB))  # 3 parts of at most 5 MiB
    options = S3Options(endpoint_url=s3_options.endpoint_url, part_size=5 * MiB, max_concurrency=3, progress=False)
    result = publish(src, f"s3://{s3_bucket}/m", options=options)
    head = s3_client.head_object(Bucket=s3_bucket, Key=f"m/runs/{result.run_id}/big.bin")
    assert head["ETag"].strip('"').endswith("-3"), "big.bin was not uploaded in 3 parts"
    small = s3_client.head_object(Bucket=s3_bucket, Key=f"m/runs/{result.run_id}/config.json")
    assert "-" not in small["ETag"]
    pull(f"s3://{s3_bucket}/m", tmp_path / "out", options=options)
    assert same_files(src, tmp_path / "out")


def test_cli_round_trip_with_aws_endpoint_env(tiny_checkpoint_dir, s3_bucket, moto_endpoint, s3_env, s3_client,
                                             monkeypatch, tmp_path, capsys):
    """No --endpoint-url: the endpoint comes from AWS_ENDPOINT_URL, as for any AWS tool."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.5}))
    config = tmp_path / "train.yaml"
    config.write_text("lr: 1.0e-6\nsteps: 10\nsnapshot: 2024-06-01\n")  # YAML reads a date
    assert main(["publish", str(tiny_checkpoint_dir), f"s3://{s3_bucket}/cli", "--run-id", "cli-1",
                 "--metrics", str(metrics), "--config", str(config), "--base-model", "tiny", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"s3://{s3_bucket}/cli/runs/cli-1/"
    written = json.loads(s3_client.get_object(Bucket=s3_bucket, Key="cli/runs/cli-1/manifest.json")["Body"].read())
    assert written["config"] == {"lr": 1e-6, "steps": 10, "snapshot": "2024-06-01"}
    assert main(["pull", f"s3://{s3_bucket}/cli", str(tmp_path / "out"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "out")
    assert "pulled run cli-1" in captured.err and '"accuracy": 0.5' in captured.err
    assert same_files(tiny_checkpoint_dir, tmp_path / "out")


def test_hashing_and_verifying_show_progress_too(tiny_checkpoint_dir, s3_bucket, moto_endpoint, s3_env, tmp_path,
                                                 capsys):
    """Off a terminal each phase ends with its line (and prints one every 30 s while it lasts)."""
    uri, endpoint = f"s3://{s3_bucket}/m", ["--endpoint-url", moto_endpoint]
    assert main(["publish", str(tiny_checkpoint_dir), uri, "--run-id", "r1", *endpoint]) == 0
    assert main(["pull", uri, str(tmp_path / "out"), *endpoint]) == 0
    phases = [line.split(":")[0] for line in capsys.readouterr().err.splitlines() if " GiB (100%), " in line]
    assert phases == ["hash", "publish r1", "pull r1", "verify"]


def test_endpoint_flag_overrides_environment(tiny_checkpoint_dir, s3_bucket, moto_endpoint, s3_env, monkeypatch,
                                            tmp_path, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert main(["publish", str(tiny_checkpoint_dir), f"s3://{s3_bucket}/m", "--endpoint-url", moto_endpoint,
                 "--no-progress"]) == 0


def test_aws_profile_from_config_file(tiny_checkpoint_dir, s3_bucket, moto_endpoint, s3_env, monkeypatch, tmp_path,
                                      capsys):
    """Credentials, region and endpoint from a named profile (AWS_PROFILE or --profile)."""
    config = tmp_path / "aws-config"
    config.write_text(f"[profile dultra-test]\nregion = us-east-1\nendpoint_url = {moto_endpoint}\n"
                      "aws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["publish", str(tiny_checkpoint_dir), f"s3://{s3_bucket}/p", "--profile", "dultra-test",
                 "--run-id", "via-flag", "--no-progress"]) == 0
    monkeypatch.setenv("AWS_PROFILE", "dultra-test")
    assert main(["pull", f"s3://{s3_bucket}/p", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "pulled run via-flag" in capsys.readouterr().err
