"""The benchmark scripts run end to end on the tiny default and record what they promise.

    pytest tests/unit/test_benchmarks.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.decode_speed import random_prompt, weight_bytes_read
from benchmarks.train_step import fit_largest_group, median_row
from benchmarks.unmask_orders import ORDERS
from dultra.model.loading import load
from tests.helpers import save_small_checkpoint, small_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--gen", "32", "--block", "16", "--prompt-len", "8"]


def bench(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["tiny", "tiny:n_layers=2"])
def test_random_prompts_hold_only_ordinary_tokens(name):
    model, tokenizer = load(name)
    prompt = random_prompt(name, model.config, 4, 64, torch.Generator().manual_seed(0))
    assert prompt.shape == (4, 64)
    assert not set(prompt.unique().tolist()) & set(tokenizer.all_special_ids)
    assert prompt.max() < len(tokenizer)


def test_decode_speed_times_the_chosen_strategies_and_saves_every_row(tmp_path):
    """A setting that fails is recorded as such and the others still run (GPU minutes are scarce)."""
    out = tmp_path / "decode.json"
    run = bench("benchmarks/decode_speed.py", "--batch", "1", *SMALL, "--max-steps", "4", "--warmup", "1",
                "--repeat", "1", "--cache", "none", "dual", "--out", str(out),
                "--strategies", "low-confidence:steps=3", "threshold:tau=0.9", "rollout")
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["batches"]["1"]["strategies"]
    assert list(rows) == [
        "low-confidence:steps=3", "threshold:tau=0.9", "low-confidence:steps=3 cache=dual",
        "threshold:tau=0.9 cache=dual", "planner-sample +record T=0.1 (rollout)",
        "planner-sample +record T=0.1 (rollout) cache=dual",
    ]
    assert "multiple of the number of blocks" in rows.pop("low-confidence:steps=3")["error"]
    rows.pop("low-confidence:steps=3 cache=dual")
    assert all(r["steps"] == 4 and r["ms_per_nfe"] > 0 for r in rows.values())
    assert all((r["refreshes"] >= 1) == name.endswith("cache=dual") for name, r in rows.items())


def test_train_step_caps_the_rollout_and_times_each_phase(tmp_path):
    out = tmp_path / "train.json"
    run = bench("benchmarks/train_step.py", "--train", "planner", "full", "--group", "2", *SMALL,
                "--max-steps", "3", "--repeat", "1", "--out", str(out))
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["train"] for r in rows] == ["planner", "full"]
    for r in rows:
        assert r["rollout_steps"] <= 3 and r["replay_forwards"] >= 1
        assert r["optimizer_s"] > 0 and "optimizer_out_of_memory" not in r


def test_unmask_orders_decodes_in_every_order(tmp_path, tiny_tokenizer):
    ckpt = save_small_checkpoint(tmp_path / "m", tiny_tokenizer)
    run = bench("benchmarks/unmask_orders.py", "--model", str(ckpt), "--eval-size", "3")
    assert run.returncode == 0, run.stderr
    rows = run.stdout.splitlines()[1:]
    assert len(rows) == len(ORDERS) and all(re.search(r"\d+\.\d% +\d+\.\d\d$", r) for r in rows)


def test_the_memory_floor_counts_the_weights_a_bare_forward_reads():
    model = small_model(vocab_size=100, embedding_size=100)
    d, size = model.config.d_model, model.model.transformer.wte.weight.element_size()
    base = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n.startswith("model."))
    table = 100 * d * size
    assert weight_bytes_read(model, 2, 10) == base - table + 20 * d * size  # 20 rows, no planner head
    assert weight_bytes_read(model, 20, 10) == base  # every row of the table


def test_max_group_needs_a_gpu():
    run = bench("benchmarks/train_step.py", "--device", "cpu", "--max-group")
    assert run.returncode == 2 and "needs a GPU" in run.stderr


@pytest.mark.parametrize("script", ["benchmarks/decode_speed.py", "benchmarks/train_step.py"])
def test_a_gpu_torch_cannot_see_is_refused_before_timing_anything(script, tmp_path):
    """The GPU session names --device cuda: a broken CUDA set-up must not time the CPU into GPU files."""
    run = subprocess.run([sys.executable, script, "--device", "cuda", "--out", str(tmp_path / "out.json")], cwd=ROOT,
                         env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "argument --device: 'cuda': this machine has no CUDA GPU" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_step_whose_optimizer_ran_out_of_memory_leaves_the_others_figures():
    runs = [{"replay_s": 1.0, "optimizer_s": 0.5}, {"replay_s": 3.0, "optimizer_out_of_memory": True},
            {"replay_s": 2.0, "optimizer_s": 0.7}]
    assert median_row(runs) == {"replay_s": 2.0, "optimizer_s": 0.6, "optimizer_out_of_memory": True}


def test_the_largest_group_lies_on_the_line_through_two_measured_peaks():
    # 10 GB fixed + 5/6 GB a row: 20 GB at 12, 30 GB at 24; 97% of 80 GB holds (77.6 - 10) / (5/6) rows.
    fit = fit_largest_group(12, 20.0, 30.0, 80.0)
    assert fit["largest_group"] == 81
    assert fit["memory_fixed_GB"] == pytest.approx(10.0) and fit["memory_per_row_GB"] == pytest.approx(5 / 6)
    assert fit_largest_group(12, 20.0, 20.0, 80.0)["largest_group"] is None  # nothing grows with the group


def test_gpu_session_skips_what_its_budget_cannot_hold_and_logs_each_step(tmp_path):
    env = os.environ | {"OUT": str(tmp_path), "BUDGET_S": "0", "PYTHON": sys.executable}
    run = subprocess.run(["bash", "benchmarks/gpu_session.sh", "decode-graphs", "train-full", "bogus"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    log = (tmp_path / "session.log").read_text()
    assert re.search(r"== decode-graphs: skipped, -?\d+ s left \(needs 150\)", log)
    assert re.search(r"== train-full: skipped, -?\d+ s left \(needs 60\)", log)
    assert "== unknown step bogus" in log
    assert "decode-dual" not in log  # only the steps named


def test_gpu_session_tells_a_step_killed_early_from_one_cut_off(tmp_path):
    """Exit 137 before the step's time cap is a kill (the kernel's, out of memory), not the cap."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/bash\n[[ $1 == -c ]] && exit 0\nkill -9 $$\n')  # the version check passes
    (tmp_path / "nvidia-smi").write_text("#!/bin/bash\necho fake-gpu\n")
    for tool in (fake, tmp_path / "nvidia-smi"):
        tool.chmod(0o755)
    env = os.environ | {"OUT": str(tmp_path / "out"), "PYTHON": str(fake), "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "benchmarks/gpu_session.sh", "train-full"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    step, = [line for line in (tmp_path / "out" / "session.log").read_text().splitlines()
             if line.startswith("== train-full: exit")]
    assert re.fullmatch(r"== train-full: exit 137 after \d+ s", step)
