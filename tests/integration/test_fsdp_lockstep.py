"""Sharded (FSDP2) processes decode and replay in step: two gloo processes on the CPU.

    .venv/bin/python -m pytest -q tests/integration/test_fsdp_lockstep.py

Under FSDP every forward and backward is a collective. Processes whose rows need fewer
steps must keep stepping (DecodeConfig.lockstep) and replay as many packs as the longest
process (replay_steps' `forwards`), or the other process waits forever: the worker
(tests/integration/lockstep_worker.py) runs the real thing with torch's fully_shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port, save_small_checkpoint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run_group(tmp_path, world: int, *args: str) -> list[dict]:
    """Run the worker as ranks 0 .. world - 1 of one gloo group; their JSON results."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.integration.lockstep_worker", args[0], str(tmp_path / f"{rank}.json"),
             *args[1:]],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * world, "\n=====\n".join(logs)
    return [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(world)]


def run_pair(tmp_path, *args: str) -> tuple[dict, dict]:
    r0, r1 = run_group(tmp_path, 2, *args)
    return r0, r1


def test_sharded_processes_with_different_step_counts_decode_and_replay_in_step(tmp_path):
    r0, r1 = run_pair(tmp_path, "fsdp", "none")
    # The setting really needs lockstep: alone, the processes would stop after different steps.
    assert r0["steps_alone"] != r1["steps_alone"]
    assert r0["steps"] == r1["steps"] == max(r0["steps_alone"], r1["steps_alone"])
    assert r0["own_forwards"] != r1["own_forwards"]
    assert r0["forwards"] == r1["forwards"] == max(r0["own_forwards"], r1["own_forwards"])
    assert r0["same_as_alone"] and r1["same_as_alone"]  # without a cache, waiting changes nothing
    for r in (r0, r1):
        # Extra steps and packs change nothing: same completions and NFE as decoding alone,
        # the recorded log-probs replayed, and FSDP's averaged gradient equals the unsharded one.
        assert r["same_sequences"] and r["same_nfe"]
        assert r["log_prob_gap"] < 1e-5
        assert r["grad_gap"] < 1e-5


def test_hybrid_sharded_processes_decode_replay_and_average_gradients_over_the_whole_mesh(tmp_path):
    """Four processes as two "nodes" of two: FSDP2 shards within a node, replicates across."""
    results = run_group(tmp_path, 4, "hsdp", "none")
    assert len({r["steps_alone"] for r in results}) > 1
    for r in results:
        assert r["mesh"] == [2, 2]
        assert r["steps"] == max(q["steps_alone"] for q in results)
        assert r["forwards"] == max(q["own_forwards"] for q in results)
        assert r["same_sequences"] and r["same_nfe"]
        assert r["log_prob_gap"] < 1e-5
        assert r["grad_gap"] < 1e-5  # the average over all four processes, as DDP of the unsharded model


def test_sharded_cached_decoding_refreshes_together_and_replays_block_by_block(tmp_path):
    r0, r1 = run_pair(tmp_path, "fsdp", "dual")
    assert r0["steps_alone"] != r1["steps_alone"]
    # Rows of both processes move between blocks together: the same refreshes and forwards.
    assert r0["refreshes"] == r1["refreshes"] and len(r0["refreshes"]) == 4
    assert r0["steps"] == r1["steps"] == r0["forwards"] == r1["forwards"]
    for r in (r0, r1):
        assert r["same_sequences"] and r["same_nfe"]
        assert r["log_prob_gap"] < 1e-5
        assert r["grad_gap"] < 1e-5


def test_grpo_trainer_processes_run_as_many_forwards_in_every_phase(tmp_path, tiny_tokenizer):
    checkpoint = save_small_checkpoint(tmp_path / "ckpt", tiny_tokenizer)
    r0, r1 = run_pair(tmp_path, "trainer", str(checkpoint), "none")
    differs = {"rollout": False, "replay": False}
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        for phase in ("rollout", "replay"):
            assert s0[phase] == s1[phase] == max(s0[f"{phase}_alone"], s1[f"{phase}_alone"])
            differs[phase] |= s0[f"{phase}_alone"] != s1[f"{phase}_alone"]
    assert differs == {"rollout": True, "replay": True}  # otherwise nothing was tested
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):  # update metrics over both processes, not rank 0's
        assert s0["logged"] == s1["logged"]
        assert s0["logged"]["replayed_rows"] == s0["rows_alone"] + s1["rows_alone"]


def test_grpo_trainer_with_cached_rollouts_replays_on_policy_in_step(tmp_path, tiny_tokenizer):
    """The trainer stops on an off-policy replay, so a clean exit means both processes' cached
    replays reproduced rollouts whose blocks waited for the other process."""
    checkpoint = save_small_checkpoint(tmp_path / "ckpt", tiny_tokenizer)
    r0, r1 = run_pair(tmp_path, "trainer", str(checkpoint), "dual")
    differs = False
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        assert s0["rollout"] == s1["rollout"] == s0["replay"] == s1["replay"]  # a replay forward per rollout step
        differs |= s0["rollout_alone"] != s1["rollout_alone"]
    assert differs


def test_learning_rate_schedules_count_updates_not_processes(tmp_path, tiny_tokenizer):
    """accelerate's prepared scheduler steps once per process and call: warmup twice as fast here."""
    checkpoint = save_small_checkpoint(tmp_path / "ckpt", tiny_tokenizer)
    r0, r1 = run_pair(tmp_path, "schedule", str(checkpoint))
    assert r0["processes"] == r1["processes"] == 2
    warmup = pytest.approx([1e-3 * f for f in (2 / 4, 3 / 4, 4 / 4)])  # after updates 1, 2, 3 of 4
    assert r0["pretrain"] == warmup and r0["grpo"] == warmup
