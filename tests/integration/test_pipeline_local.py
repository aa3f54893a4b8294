"""The whole pipeline under kfp.local, publishing to a real S3-compatible server (what `make demo` runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dultra.model.loading import load

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_demo_runs_the_pipeline_end_to_end(tmp_path):
    env = dict(os.environ, DULTRA_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.demo", "--workdir", str(tmp_path), "--pretrain-steps", "4",
         "--warmstart-steps", "2", "--grpo-steps", "1", "--eval-size", "6", "--strategies", "threshold:tau=0.9;planner:factor=1.0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "checkpoint published to s3://dultra-demo/tiny" in out and "verified" in out
    for strategy in ("threshold:tau=0.9", "planner:factor=1.0"):
        assert strategy in out
    result = json.loads(out.strip().splitlines()[-1])  # the final `dultra generate --json`
    assert result["nfe"] >= 1 and isinstance(result["token_ids"], list)
    model, _ = load(tmp_path / "pulled")
    assert model.config.has_planner
    # The published weights are the GRPO stage's, byte for byte.
    trained, _ = load(next((tmp_path / "workspace" / "runs").iterdir()) / "train" / "final")
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    run = next((tmp_path / "workspace" / "runs").iterdir())
    assert sorted(p.name for p in run.iterdir()) == ["eval", "pretrain", "train", "warmstart"]
    # Once published, the resumable checkpoints leave the workspace; the finals stay.
    assert not list(run.glob("*/checkpoints")) and len(list(run.glob("*/final"))) == 3
