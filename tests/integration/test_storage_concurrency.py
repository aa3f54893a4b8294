"""A publish killed mid-transfer and publishers racing never leave `latest` on an incomplete run.

    pytest tests/integration/test_storage_concurrency.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from dultra.storage import (
    IncompleteRun,
    S3Location,
    make_client,
    move_latest,
    publish,
    pull,
    read_pointer,
)
from dultra.storage.s3 import MiB

pytestmark = pytest.mark.integration


class StallingProxy:
    """A loopback TCP proxy in front of moto_server that forwards the first `limit` bytes
    clients send, then holds every connection silent: a network that stops mid-upload, so
    the test can kill the publisher at a known point instead of racing a timer."""

    def __init__(self, upstream: str, limit: int):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.limit, self.forwarded = limit, 0
        self.lock = threading.Lock()
        self.stalled, self.closing = threading.Event(), threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if counted:
                    with self.lock:
                        allowed = max(0, min(len(data), self.limit - self.forwarded))
                        self.forwarded += allowed
                    if allowed < len(data):
                        dst.sendall(data[:allowed])
                        self.stalled.set()
                        self.closing.wait()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.closing.set()
        self.server.close()


def test_publish_killed_midway_leaves_latest_alone(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client,
                                                  moto_endpoint, tmp_path):
    uri, base = f"s3://{s3_bucket}/m", S3Location(s3_bucket, "m")
    first = publish(tiny_checkpoint_dir, uri, run_id="first", options=s3_options)

    src = tmp_path / "src"
    shutil.copytree(tiny_checkpoint_dir, src)
    small = sum(p.stat().st_size for p in src.iterdir())
    (src / "zz-shard.bin").write_bytes(os.urandom(16 * MiB))  # sorts last: uploaded after the small files
    # Let every small file and ~1.5 parts of the shard through, then stall the network.
    proxy = StallingProxy(moto_endpoint, limit=small + 8 * MiB)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dultra.cli", "publish", str(src), uri, "--run-id", "killed",
             "--endpoint-url", proxy.url, "--part-size-mb", "5", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while not proxy.stalled.wait(0.1) and proc.poll() is None and time.monotonic() < deadline:
            pass
        stalled, still_running = proxy.stalled.is_set(), proc.poll() is None
        proc.kill()
        out, err = proc.communicate(timeout=30)
    finally:
        proxy.close()
    assert stalled and still_running, f"publisher ended before the stall: {err.decode()[-2000:]}"

    # It really died inside a multipart transfer of the shard ...
    uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket, Prefix="m/runs/killed/").get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["m/runs/killed/zz-shard.bin"]
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="m/runs/killed/")["Contents"]}
    assert "m/runs/killed/config.json" in keys and "m/runs/killed/manifest.json" not in keys
    # ... and `latest` still names the previous complete run.
    pointer, _ = read_pointer(s3_client, base)
    assert pointer == first.pointer
    assert pull(uri, tmp_path / "latest", options=s3_options).run_id == "first"
    with pytest.raises(IncompleteRun, match="no manifest.json"):
        pull(f"{uri}/runs/killed", tmp_path / "partial", options=s3_options)

    # The next publish is unaffected by the debris.
    again = publish(src, uri, run_id="again", options=s3_options)
    assert (again.pointer.generation, again.pointer.previous_run_id) == (2, "first")


def variant(tiny_checkpoint_dir, tmp_path, name):
    path = tmp_path / name
    shutil.copytree(tiny_checkpoint_dir, path)
    (path / "run.txt").write_text(name)
    return path


def test_two_publishers_racing(tiny_checkpoint_dir, s3_bucket, s3_options, s3_client, tmp_path):
    """Both start on an empty prefix, so both first try `If-None-Match: *` on the pointer."""
    uri = f"s3://{s3_bucket}/race"
    dirs = {name: variant(tiny_checkpoint_dir, tmp_path, name) for name in ("a", "b")}
    start, results, errors = threading.Barrier(2), {}, []

    def publisher(name):
        try:
            client = make_client(s3_options)
            start.wait()
            results[name] = publish(dirs[name], uri, run_id=name, options=s3_options, client=client)
        except Exception as err:  # surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=publisher, args=(name,)) for name in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    final, _ = read_pointer(s3_client, S3Location(s3_bucket, "race"))
    # Both moves happened, one after the other: neither was lost, neither was torn.
    assert sorted(r.pointer.generation for r in results.values()) == [1, 2]
    assert final.generation == 2 and {final.run_id, final.previous_run_id} == {"a", "b"}
    assert final == results[final.run_id].pointer
    for name in dirs:  # both runs stay complete and verifiable
        pulled = pull(f"{uri}/runs/{name}", tmp_path / f"pulled-{name}", options=s3_options)
        assert (pulled.directory / "run.txt").read_text() == name
    assert pull(uri, tmp_path / "pulled-latest", options=s3_options).run_id == final.run_id


class MovesPointerAfterFirstRead:
    """A real client whose first read of `latest` is followed, before the caller can write,
    by another publisher's real move: a lost race, forced to happen every time."""

    def __init__(self, client, base: S3Location, rival_run: str):
        self._client, self._base, self._rival, self.reads = client, base, rival_run, 0

    def get_object(self, **kwargs):
        response = self._client.get_object(**kwargs)
        self.reads += 1
        if self.reads == 1:
            move_latest(self._client, self._base, self._rival, "b" * 64)
        return response

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_lost_compare_and_swap_is_retried(s3_bucket, s3_client):
    base = S3Location(s3_bucket, "cas")
    move_latest(s3_client, base, "r1", "a" * 64)
    racing = MovesPointerAfterFirstRead(s3_client, base, rival_run="rival")
    mine = move_latest(racing, base, "mine", "c" * 64)
    assert racing.reads == 2, "the stale write should have failed once and been retried"
    assert (mine.generation, mine.previous_run_id) == (3, "rival")
    assert read_pointer(s3_client, base)[0] == mine


def test_many_concurrent_moves_form_one_chain(s3_bucket, s3_options):
    base, n = S3Location(s3_bucket, "chain"), 6
    start, moves, errors = threading.Barrier(n), [], []

    def mover(i):
        try:
            client = make_client(s3_options)
            start.wait()
            moves.append(move_latest(client, base, f"run{i}", "a" * 64, attempts=50))
        except Exception as err:  # surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # Each move replaced exactly the one before it: following previous_run_id from the
    # first move visits every move once, in generation order.
    by_previous = {m.previous_run_id: m for m in moves}
    chain, current = [], None
    while current in by_previous:
        chain.append(by_previous[current])
        current = chain[-1].run_id
    assert [m.generation for m in chain] == list(range(1, n + 1))
    assert {m.run_id for m in chain} == {f"run{i}" for i in range(n)}
