"""Manifest and pointer (de)serialisation and validation: pytest tests/unit/test_storage_manifest.py"""

import hashlib
import json
import os
import subprocess

import pytest

from dultra.storage.errors import IntegrityError, StorageError
from dultra.storage.manifest import (
    SCHEMA_VERSION,
    FileEntry,
    Manifest,
    check_path,
    detect_git_commit,
    scan_directory,
)
from dultra.storage.pointer import Pointer


def make_manifest(**overrides) -> Manifest:
    fields = dict(
        run_id="r1", created="2025-01-31T12:00:00Z",
        files=(FileEntry("a/b.bin", 3, hashlib.sha256(b"abc").hexdigest()),
               FileEntry("config.json", 2, hashlib.sha256(b"{}").hexdigest())),
        config={"lr": 1e-6}, metrics={"accuracy": 0.5}, base_model="GSAI-ML/LLaDA-8B-Instruct",
        git_commit="0" * 40,
    )
    return Manifest(**{**fields, **overrides})


def test_round_trip():
    manifest = make_manifest()
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.schema_version == SCHEMA_VERSION
    assert again.total_bytes == 5


def test_scan_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"\x00" * 1000)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    entries = scan_directory(tmp_path)
    assert [e.path for e in entries] == ["config.json", "empty", "sub/w.bin"]
    assert entries[2] == FileEntry("sub/w.bin", 1000, hashlib.sha256(b"\x00" * 1000).hexdigest())
    assert entries[1].sha256 == hashlib.sha256(b"").hexdigest()


def test_scan_follows_symlinked_files_and_directories_and_refuses_loops(tmp_path):
    shared, run = tmp_path / "shared", tmp_path / "run"
    (shared / "tok").mkdir(parents=True)
    (shared / "tok" / "tokenizer.json").write_text("{}")
    (shared / "cfg.json").write_text("[]")
    run.mkdir()
    (run / "model.bin").write_bytes(b"w")
    (run / "tokenizer").symlink_to(shared / "tok")
    (run / "config.json").symlink_to(shared / "cfg.json")
    assert [e.path for e in scan_directory(run)] == ["config.json", "model.bin", "tokenizer/tokenizer.json"]
    (shared / "tok" / "up").symlink_to(run)
    with pytest.raises(StorageError, match="links back to a directory it is inside"):
        scan_directory(run)


def test_scan_refuses_reserved_name_and_special_files(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(StorageError, match="reserved"):
        scan_directory(tmp_path)
    (tmp_path / "manifest.json").unlink()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(StorageError, match="not a regular file"):
        scan_directory(tmp_path)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "a/", "", "a\\b",
                                  "manifest.json"])
def test_unsafe_paths_refused(path):
    with pytest.raises(IntegrityError):
        check_path(path)


def corrupt(**changes) -> bytes:
    data = json.loads(make_manifest().to_json())
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize("raw", [
    b"not json", b"[]", corrupt(schema_version=0), corrupt(files=None), corrupt(run_id="../x"),
    corrupt(files=[{"path": "a", "size": -1, "sha256": "0" * 64}]),
    corrupt(files=[{"path": "a", "size": 1, "sha256": "XYZ"}]),
    corrupt(files=[{"path": "../../etc/cron.d/x", "size": 1, "sha256": "0" * 64}]),
    corrupt(files=[{"path": "a", "size": 1, "sha256": "0" * 64}] * 2),
])
def test_malformed_manifests_refused(raw):
    with pytest.raises(IntegrityError):
        Manifest.from_json(raw, "s3://bkt/m/runs/r1/manifest.json")


def test_newer_schema_asks_for_an_upgrade():
    with pytest.raises(StorageError, match="upgrade dultra"):
        Manifest.from_json(corrupt(schema_version=SCHEMA_VERSION + 1))


def test_pointer_round_trip_and_validation():
    pointer = Pointer(run_id="r2", manifest_sha256="a" * 64, generation=2, previous_run_id="r1",
                      updated="2025-01-31T12:00:00Z")
    assert Pointer.from_json(pointer.to_json(), "latest") == pointer
    data = json.loads(pointer.to_json())
    for raw in (b"{}", b"null", json.dumps({**data, "run_id": "a/b"}).encode(),
                json.dumps({**data, "manifest_sha256": "nothex"}).encode()):
        with pytest.raises(IntegrityError, match="not a valid pointer"):
            Pointer.from_json(raw, "latest")


def test_git_commit_is_the_checkout_s_or_the_image_s(tmp_path, monkeypatch):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                              text=True, env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                              "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}).stdout.strip()

    checkout, installed = tmp_path / "dultra/storage/manifest.py", tmp_path / ".venv/dultra/storage/manifest.py"
    for path in (checkout, installed):
        path.parent.mkdir(parents=True)
        path.write_text("")
    git("init", "-q")
    git("add", "dultra")
    git("commit", "-qm", "x")
    head = git("rev-parse", "HEAD")
    monkeypatch.setenv("DULTRA_GIT_COMMIT", "f" * 40)
    assert detect_git_commit(checkout) == head  # an editable install runs its checkout's code
    assert detect_git_commit(installed) == "f" * 40  # a copy inside another project: not that project's commit
    monkeypatch.delenv("DULTRA_GIT_COMMIT")
    assert detect_git_commit(installed) is None
    assert detect_git_commit(tmp_path.parent / "elsewhere.py") is None  # no repository at all
