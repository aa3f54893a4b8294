"""The scaling model (benchmarks/scaling.py): its arithmetic and the recorded inputs it reads."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.scaling import RESULTS, Cluster, Inputs, Run, load_inputs, main, predict

INPUTS = Inputs(forward_ms=100.0, rollout_ms=100.0, rollout_eager_ms=140.0, replay_x={"planner": 0.1, "full": 4.0},
                hbm_TBps=3.0, sandbox_per_s=300.0)


def _predict(gpus, train, nfe=20.0, **kw):
    return predict(INPUTS, Cluster(), Run(), gpus, train, nfe, **kw)


def test_one_gpu_communicates_nothing_and_the_full_model_does_not_fit_it():
    planner, full = _predict(1, "planner"), _predict(1, "full")
    assert planner["communication_s"] == 0 and planner["fits"]
    assert planner["states_GB"] < 4 * 8.319  # less than the weights in fp32: the frozen base is bf16
    assert not full["fits"] and full["states_GB"] > 80  # fp32 weights, grads and Adam of 8.3B parameters
    assert _predict(8, "full")["fits"]


def test_rollout_is_steps_times_the_measured_step_plus_the_cast_of_trained_fp32_weights():
    r = _predict(1, "planner", nfe=10.0)
    assert r["phases_s"]["rollout"] == pytest.approx(10.0 * 1.14 * 100.0 / 1000)  # the frozen base is bf16
    assert r["phases_s"]["replay"] == pytest.approx(3 * 10 * 100.0 * 0.1 * 4 / 12 / 1000)  # the head only
    assert _predict(1, "planner", nfe=40.0)["step_s"] > r["step_s"]
    cast_ms = 6 * 8.319e9 / 3.0 / 1e9
    full = _predict(1, "full", nfe=10.0)["phases_s"]
    assert full["rollout"] == pytest.approx(10.0 * 1.14 * (100.0 + cast_ms) / 1000)
    assert full["replay"] == pytest.approx(3 * 10 * (100.0 * 4.0 * 4 / 12 + cast_ms) / 1000)


def test_flat_sharding_across_nodes_is_network_bound_and_a_hybrid_shard_is_not():
    flat, hybrid, node = _predict(64, "full"), _predict(64, "full", hybrid=True), _predict(8, "full")
    assert flat["bottleneck"] == "replay (network)" and flat["communication_s"] > flat["step_s"] / 2
    assert hybrid["bottleneck"] == "replay (GPU compute)" and hybrid["step_s"] < flat["step_s"] / 3
    assert node["communication_s"] < hybrid["communication_s"] < flat["communication_s"]


def test_inputs_come_from_the_recorded_results_and_a_train_step_run_replaces_the_estimates(tmp_path):
    recorded = load_inputs()
    decode = json.loads((RESULTS / "decode_speed_h100.json").read_text())
    assert recorded.forward_ms == decode["batches"]["12"]["bare_forward_ms"]
    for name in ("decode_speed_h100.json", "decode_speed_h100_eager.json", "sandbox_speed.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    rows = [{"train": "planner", "cache": "none", "compile": True, "replay_s_per_forward": 0.02,
             "rollout_s_per_step": 0.13},
            {"train": "planner", "cache": "none", "compile": False, "replay_s_per_forward": 0.05,
             "rollout_s_per_step": 0.2},  # the ablation's eager row, recorded after: the compiled one wins
            {"train": "full", "cache": "none", "out_of_memory": True},
            {"train": "full", "cache": "none", "error": "RuntimeError: ...", "phase": "replay"}]
    (tmp_path / "train_step_h100.json").write_text(json.dumps({"rows": rows}))
    measured = load_inputs(tmp_path)
    assert measured.rollout_ms == pytest.approx(130.0)
    assert measured.replay_x["planner"] == pytest.approx(20.0 / recorded.forward_ms)
    assert measured.replay_x["full"] == recorded.replay_x["full"]  # out of memory: still the estimate


def test_the_command_prints_every_size_and_writes_json(tmp_path, capsys, monkeypatch):
    out = tmp_path / "scaling.json"
    monkeypatch.setattr("sys.argv", ["scaling.py", "--nfe", "16", "--out", str(out)])
    main()
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["gpus"], r["train"]) for r in rows] == [
        (1, "planner"), (1, "full"), (8, "planner"), (8, "full"), (64, "planner"), (64, "full"),
        (64, "full (hybrid shard)")]
    assert printed.count("\n| 64 |") == 3 and "does not fit" in printed
