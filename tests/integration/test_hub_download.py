"""`--model owner/name`: a checkpoint downloaded from a Hugging Face Hub, here a loopback one.

    pytest tests/integration/test_hub_download.py

The server speaks the part of the Hub's HTTP API that `huggingface_hub.snapshot_download`
uses (revision info, file tree, resolve); the real client talks to it through HF_ENDPOINT,
and `dultra` runs as a user runs it, in a fresh process.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dultra.cli import main
from dultra.model.hub import is_hub_id
from dultra.model.loading import resolve

REPO, SHA = "owner/tiny", "0123456789abcdef0123456789abcdef01234567"


class MiniHub(http.server.ThreadingHTTPServer):
    """Serves one repository (`files`: name -> bytes) at revision `main` = SHA; logs request paths."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MiniHub

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool):
        path = self.path.split("?")[0]
        self.server.requests.append(path)
        files = self.server.files
        if path in (f"/api/models/{REPO}/revision/main", f"/api/models/{REPO}/revision/{SHA}"):
            info = {"id": REPO, "sha": SHA, "siblings": [{"rfilename": name} for name in files]}
            return self._send(json.dumps(info).encode(), body, {"Content-Type": "application/json"})
        if path == f"/api/models/{REPO}/tree/{SHA}":
            tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in files.items()]
            return self._send(json.dumps(tree).encode(), body, {"Content-Type": "application/json"})
        prefix = f"/{REPO}/resolve/{SHA}/"
        if path.startswith(prefix) and path[len(prefix):] in files:
            data = files[path[len(prefix):]]
            return self._send(data, body, {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})
        code = ("RevisionNotFound" if path.startswith(f"/api/models/{REPO}/") else
                "RepoNotFound" if path.startswith("/api/models/") else "EntryNotFound")
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, data: bytes, body: bool, headers: dict[str, str]):
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def tiny_dir() -> Path:
    return resolve("tiny")


@pytest.fixture
def hub(tiny_dir):
    files = {p.name: p.read_bytes() for p in tiny_dir.iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"a pickle loading must never fetch"
    server = MiniHub(files)
    yield server
    server.shutdown()
    server.server_close()


def dultra(args: list[str], hub_url: str, home: Path, cwd: Path, offline: bool = False, **env_vars: str):
    env = os.environ | {"HF_ENDPOINT": hub_url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1" if offline else "0",
                        **env_vars}
    env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "dultra.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=180)


GENERATE = ["generate", "--prompt", "Compute 3 + 4.", "--gen-length", "32", "--block-length", "8",
            "--strategy", "threshold", "--json"]


def test_a_hub_id_downloads_once_and_decodes_as_the_local_checkpoint(hub, tiny_dir, tmp_path, capsys):
    assert main([*GENERATE, "--model", str(tiny_dir)]) == 0
    local = json.loads(capsys.readouterr().out)
    run = dultra([*GENERATE, "--model", REPO], hub.url, tmp_path / "hf", tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["token_ids"] == local["token_ids"]
    fetched = {p.rsplit("/", 1)[1] for p in hub.requests if "/resolve/" in p}
    assert fetched == set(hub.files) - {"pytorch_model.bin"}  # configs, tokenizer, safetensors only

    hub.requests.clear()  # from the cache, with the network off
    run = dultra([*GENERATE, "--model", f"{REPO}@{SHA}"], hub.url, tmp_path / "hf", tmp_path, offline=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["token_ids"] == local["token_ids"] and hub.requests == []


def test_a_repository_the_hub_lacks_is_a_one_line_error(hub, tmp_path):
    run = dultra([*GENERATE, "--model", "owner/nope"], hub.url, tmp_path / "hf", tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    line = run.stderr.strip()
    assert "\n" not in line
    assert line == f"dultra: error: owner/nope: no such local directory, and the Hugging Face Hub ({hub.url}) " \
                   "has no such repository (or a private one: `hf auth login`)"


def test_a_revision_the_hub_lacks_is_named(hub, tmp_path):
    run = dultra([*GENERATE, "--model", f"{REPO}@v9"], hub.url, tmp_path / "hf", tmp_path)
    assert run.returncode == 2 and run.stderr.strip().endswith("has no revision 'v9' of it")


def test_an_unreachable_hub_is_named_with_the_reason(tmp_path):
    run = dultra([*GENERATE, "--model", REPO], "http://127.0.0.1:9", tmp_path / "hf", tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "Hugging Face Hub (http://127.0.0.1:9) did not provide it: ConnectError" in run.stderr


def test_a_hub_that_never_answers_is_a_deadline_not_a_hang(hub, tiny_dir, tmp_path):
    """A proxy or firewall that accepts connections and swallows requests: huggingface_hub
    alone waits forever. The look-up gives up after HF_HUB_ETAG_TIMEOUT and uses the cache."""
    assert dultra([*GENERATE, "--model", REPO], hub.url, tmp_path / "hf", tmp_path).returncode == 0  # cached now
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts: the kernel's backlog connects
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cached = dultra([*GENERATE, "--model", REPO], url, tmp_path / "hf", tmp_path, HF_HUB_ETAG_TIMEOUT="1")
        missing = dultra([*GENERATE, "--model", "owner/other"], url, tmp_path / "hf", tmp_path,
                         HF_HUB_ETAG_TIMEOUT="1")
    assert cached.returncode == 0, cached.stderr
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().endswith("did not provide it: ReadTimeout: timed out (within "
                                           "HF_HUB_ETAG_TIMEOUT = 1 s), and no copy is cached")
    # A dataset too (`dultra eval --task gsm8k` without --data): an error within the deadline.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        env = os.environ | {"HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}", "HF_HUB_ETAG_TIMEOUT": "1",
                            "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
        data = subprocess.run([sys.executable, "-c", "from dultra.data.sources import read_hub; "
                               "read_hub('openai/gsm8k', 'main', 'test')"], env=env, capture_output=True, text=True,
                              timeout=120)
    assert "DataError: cannot load openai/gsm8k: the Hugging Face Hub" in data.stderr
    assert "ReadTimeout: timed out (within HF_HUB_ETAG_TIMEOUT = 1 s); set HF_HUB_OFFLINE=1" in data.stderr


def test_a_local_directory_of_that_name_wins(hub, tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / REPO)
    run = dultra([*GENERATE, "--model", REPO], hub.url, tmp_path / "hf", tmp_path)
    assert run.returncode == 0, run.stderr
    assert hub.requests == []


def test_a_mistyped_local_path_is_not_looked_up_on_the_hub(hub, tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "runs" / "demo")
    run = dultra([*GENERATE, "--model", "runs/demoo"], hub.url, tmp_path / "hf", tmp_path)
    assert run.returncode == 2 and hub.requests == []
    assert run.stderr.strip() == "dultra: error: no checkpoint directory at runs/demoo (the directory runs exists " \
                                 "here, so this is a path, not a Hub id)"
    missing = dultra([*GENERATE, "--model", "/nonexistent"], hub.url, tmp_path / "hf", tmp_path)
    assert missing.stderr.strip() == "dultra: error: no checkpoint directory at /nonexistent (use `tiny`, a local " \
                                     "directory or a Hub id)"


@pytest.mark.parametrize("name, hub_id", [
    ("GSAI-ML/LLaDA-8B-Instruct", True), ("sengi/dUltra-math@v1.0", True), ("runs/warmstart/final", False),
    ("/abs/dir", False), ("./rel/dir", False), ("tiny", False), ("owner/", False),
])
def test_what_counts_as_a_hub_id(name, hub_id):
    assert is_hub_id(name) is hub_id


def test_a_hub_teacher_with_only_pickled_weights_is_refused_in_one_line(tiny_dir, tmp_path):
    files = {p.name: p.read_bytes() for p in tiny_dir.iterdir() if p.is_file() and p.suffix != ".safetensors"}
    files["pytorch_model.bin"] = b"a pickle loading must never fetch"
    server = MiniHub(files)
    try:
        env = os.environ | {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        code = (f"from dultra.rewards import load_teacher\n"
                f"try:\n    load_teacher({REPO!r})\nexcept Exception as err:\n    print(type(err).__name__, err)\n")
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
        server.server_close()
    assert run.stdout.startswith(f"CheckpointError the teacher {REPO} has no safetensors weights on the Hub"), \
        run.stdout + run.stderr
    assert not any(p.endswith("pytorch_model.bin") for p in server.requests)
