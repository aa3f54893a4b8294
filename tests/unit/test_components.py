"""The plain step functions behind the Kubeflow components."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from accelerate.commands.launch import launch_command_parser

from components.steps import (
    Launcher,
    check_destination,
    check_settings,
    check_workspace,
    checkpoint_dir,
    decode_lengths,
    given,
    grpo_overrides,
    last_metrics,
    prepare_data,
    prune_resume_state,
    resolve_config,
    run_forwarding_sigterm,
    workdir,
    write_reference,
)
from dultra.data import read_examples
from tests.data_helpers import GSM8K

ROOT = Path(__file__).resolve().parents[2]


def test_prepare_data_writes_disjoint_splits(tmp_path):
    sizes = prepare_data("synthetic-math", 50, 10, "", str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"))
    train, test = read_examples(tmp_path / "train.jsonl"), read_examples(tmp_path / "test.jsonl")
    assert sizes == {"train": 50, "test": 10} and len(train) == 50 and len(test) == 10
    assert not {e.prompt for e in train} & {e.prompt for e in test}


def test_one_data_file_is_refused_as_it_would_be_both_splits(tmp_path):
    with pytest.raises(ValueError, match=r"data_path: .*test.jsonl is one file, read as both the train and the "
                                         r"test split"):
        prepare_data("gsm8k", 0, 0, str(GSM8K / "test.jsonl"), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert not (tmp_path / "a.jsonl").exists()


def test_gsm8k_from_the_shared_copy(tmp_path):
    prepare_data("gsm8k", 20, 5, str(GSM8K), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert read_examples(tmp_path / "b.jsonl")[0].answer == "18"


def test_model_artifacts_point_at_workspace_checkpoints(tmp_path):
    write_reference(str(tmp_path / "artifact"), tmp_path / "ckpt")
    assert checkpoint_dir(str(tmp_path / "artifact")) == str((tmp_path / "ckpt").resolve())
    assert checkpoint_dir(str(tmp_path / "plain")) == str(tmp_path / "plain")
    assert workdir("/workspace", "abc") == "/workspace/runs/abc"


@pytest.mark.parametrize("name", ["GSAI-ML/LLaDA-8B-Instruct", "sengi/dUltra-math@v1.0"])
def test_hub_ids_stay_hub_ids_and_local_paths_resolve(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # a Hub id is no path: resolving it would invent ./GSAI-ML/...
    write_reference(str(tmp_path / "hub"), name)
    assert checkpoint_dir(str(tmp_path / "hub")) == name
    (tmp_path / "models" / "base").mkdir(parents=True)
    write_reference(str(tmp_path / "local"), "models/base")
    assert checkpoint_dir(str(tmp_path / "local")) == str(tmp_path / "models" / "base")


def test_an_unwritable_workspace_fails_in_one_clear_line(tmp_path):
    check_workspace(str(tmp_path / "ws"))
    assert (tmp_path / "ws" / "runs").is_dir() and not list((tmp_path / "ws" / "runs").iterdir())
    (tmp_path / "file").write_text("")  # no directory can go under it, whoever runs the test
    with pytest.raises(PermissionError, match=r"cannot write the workspace .*file/ws as uid \d+ gid \d+ .*no fsGroup"
                                              r".*README, Deploy on Kubeflow, step 3") as err:
        check_workspace(str(tmp_path / "file" / "ws"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("destination", "endpoint", "error"), [
    ("", "", r"s3_destination: '' is not an S3 URI"),
    ("bucket/prefix", "", r"s3_destination: 'bucket/prefix' is not an S3 URI"),
    ("s3://bucket/prefix/latest", "", r"s3_destination: .* takes the base prefix"),
    ("s3://bucket/prefix", "minio.kubeflow:9000", r"s3_endpoint_url: .*Invalid endpoint: minio.kubeflow:9000"),
])
def test_a_malformed_s3_destination_fails_the_first_step(destination, endpoint, error):
    check_destination("s3://bucket/prefix", "")
    check_destination("s3://bucket/prefix", "http://minio.kubeflow:9000")
    with pytest.raises(ValueError, match=f"^pipeline parameter {error}"):
        check_destination(destination, endpoint)


GOOD = dict(config="configs/tiny.yaml", gen_length=0, strategies="planner:factor=1.0;low-confidence:steps={gen}",
            nodes=2, gpus_per_node=8, cpu_per_node="32", memory_per_node="512Gi",
            accelerate_config="configs/accelerate/fsdp.yaml")


@pytest.mark.parametrize(("change", "error"), [
    ({"config": "configs/nope.yaml"}, r"parameter config: config file configs/nope.yaml not found"),
    ({"strategies": "planer:factor=1.0"}, r"parameter eval_strategies: unknown strategy 'planer'"),
    ({"strategies": "threshold:tau=0.9;threshold:tau=0.90"}, r"parameter eval_strategies: strategies given twice"),
    ({"strategies": " ; "}, r"parameter eval_strategies: no strategies to evaluate"),
    ({"nodes": 0}, r"parameters need nodes >= 1 and gpus_per_node >= 0, got 0 and 8"),
    ({"cpu_per_node": "lots"}, r"parameter cpu_per_node 'lots' is not a positive Kubernetes quantity"),
    ({"memory_per_node": "512 GB"}, r"parameter memory_per_node '512 GB' is not a positive Kubernetes quantity"),
    ({"memory_per_node": "0"}, r"parameter memory_per_node '0' is not a positive"),
    ({"accelerate_config": "configs/accelerate/fdsp.yaml"}, r"parameter accelerate_config: config file .* not found"),
])
def test_settings_later_steps_read_fail_the_first_step(change, error):
    """A typo here used to fail evaluation after GRPO, or the TrainJob's creation after warm start."""
    check_settings(**GOOD)
    check_settings(**{**GOOD, "cpu_per_node": "", "memory_per_node": "", "accelerate_config": "", "nodes": 1})
    with pytest.raises(ValueError, match=f"^pipeline {error}"):
        check_settings(**{**GOOD, **change})


def test_config_paths_resolve_from_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("configs/tiny.yaml").is_file()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        resolve_config("configs/nope.yaml")
    train = yaml.safe_load(resolve_config("configs/tiny.yaml").read_text())["train"]
    assert decode_lengths("configs/tiny.yaml", 0, 0) == (train["gen_length"], train["block_length"])
    assert decode_lengths("configs/tiny.yaml", 32, 8) == (32, 8)


@pytest.mark.parametrize("config, flags", [
    ("", ["--multi_gpu", "--mixed_precision", "bf16"]),
    ("configs/accelerate/hsdp.yaml", ["--parallelism_config_dp_replicate_size", "1",
                                      "--parallelism_config_dp_shard_size", "4"]),
])
def test_one_node_launches_its_gpus_with_the_chosen_accelerate_config(config, flags):
    cmd = Launcher(gpus_per_node=4, accelerate_config=config).local_command(["train", "--steps", "2"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[-5:] == ["-m", "dultra.cli", "train", "--steps", "2"]
    args = launch_command_parser().parse_args(cmd[3:])  # accelerate's own parser takes every flag
    assert args.num_processes == 4 and args.module and args.training_script == "dultra.cli"
    assert all(flag in cmd for flag in flags)
    if config:
        assert args.config_file.endswith(config)
    else:  # accelerate's own default config, whatever this machine has
        assert args.config_file is None
    with pytest.raises(FileNotFoundError, match="configs/accelerate/nope.yaml not found"):
        Launcher(gpus_per_node=4, accelerate_config="configs/accelerate/nope.yaml").local_command(["train"])


def test_grpo_overrides_set_only_the_parameters_given():
    overrides = grpo_overrides(
        "humaneval", "/ckpt", "/train.jsonl",
        numbers={"steps": 0, "group_size": 8, "gen_length": -1, "optim.lr": 1e-6},
        rewards={"correct": -1.0, "format": 0.0, "steps": 0.05}, texts={"teacher": "", "sandbox_url": "http://s"})
    assert overrides == {"model": "/ckpt", "data": "/train.jsonl", "group_size": 8, "optim.lr": 1e-6,
                         "rewards.code.format": 0.0, "rewards.code.steps": 0.05, "sandbox_url": "http://s"}
    assert given(steps=0, gen_length=16, teacher="") == {"gen_length": 16}


def test_last_metrics_reads_the_stage_log(tmp_path):
    assert last_metrics(tmp_path) == ({}, 0)  # no log yet
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "nfe": 9.0}\n{"step": 2, "nfe": 7.5, "accuracy": 0.5}\n')
    assert last_metrics(tmp_path) == ({"accuracy": 0.5, "nfe": 7.5}, 2)


def test_publishing_prunes_only_the_resumable_checkpoints(tmp_path):
    for path, size in [("train/checkpoints/step-00000002/optimizer.bin", 300), ("train/checkpoints/step-2/x", 20),
                       ("pretrain/checkpoints/step-00000010/model.safetensors", 100),
                       ("train/final/model.safetensors", 50), ("train/metrics.jsonl", 5), ("eval/report.json", 7)]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x" * size)
    assert prune_resume_state(tmp_path) == 420
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["eval/report.json", "train/final/model.safetensors", "train/metrics.jsonl"]
    assert prune_resume_state(tmp_path) == 0 and prune_resume_state(tmp_path / "absent") == 0


def test_a_multi_gpu_step_passes_sigterm_on_to_its_launcher(tmp_path):
    child = (f"import pathlib, signal, sys, time\n"
             f"def save(signum, frame):\n"
             f"    pathlib.Path({str(tmp_path / 'saved')!r}).write_text(str(signum)); sys.exit(143)\n"
             f"signal.signal(signal.SIGTERM, save)\n"
             f"pathlib.Path({str(tmp_path / 'ready')!r}).write_text('')\n"
             f"time.sleep(60)\n")

    def terminate_when_ready():  # as Kubernetes stopping the step's pod
        while not (tmp_path / "ready").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_ready, daemon=True).start()
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(subprocess.CalledProcessError) as err:
        run_forwarding_sigterm([sys.executable, "-c", child])
    assert err.value.returncode == 143 and (tmp_path / "saved").read_text() == str(int(signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is previous
    run_forwarding_sigterm([sys.executable, "-c", "pass"])  # a step that succeeds raises nothing


def _running_step(tmp_path, child: str) -> subprocess.Popen:
    """A step process, in its own session as a pod's, whose training command runs `child`;
    returned once `child` has written tmp_path/ready."""
    step = ("import sys\nfrom components.steps import run_forwarding_sigterm\n"
            f"run_forwarding_sigterm([sys.executable, '-c', {child!r}])\n")
    proc = subprocess.Popen([sys.executable, "-c", step], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_step_s_whole_process_group_reaches_the_launcher_once(tmp_path, signum):
    """Argo's emissary signals the step's process group, the terminal Ctrl-C's: one stop, not two."""
    proc = _running_step(tmp_path, f"import pathlib, signal, sys, time\n"
                                   f"got = []\n"
                                   f"signal.signal({int(signum)}, lambda *_: got.append(1))\n"
                                   f"pathlib.Path({str(tmp_path / 'ready')!r}).write_text('')\n"
                                   f"while not got: time.sleep(0.05)\n"
                                   f"time.sleep(1)\n"  # a second signal would arrive meanwhile
                                   f"pathlib.Path({str(tmp_path / 'got')!r}).write_text(str(len(got)))\n")
    os.killpg(proc.pid, signum)
    assert proc.wait(timeout=60) == 0 and (tmp_path / "got").read_text() == "1"


def test_training_stops_when_its_step_is_killed(tmp_path):
    """In its own group, the launcher would run on alone after a SIGKILL of the step: it gets SIGTERM."""
    proc = _running_step(tmp_path, f"import os, pathlib, signal, time\n"
                                   f"signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path("
                                   f"{str(tmp_path / 'got')!r}).write_text('1'), os._exit(0)))\n"
                                   f"pathlib.Path({str(tmp_path / 'ready')!r}).write_text('')\n"
                                   f"time.sleep(60)\n")
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 60
    while not (tmp_path / "got").exists():
        assert time.monotonic() < deadline, "the training process runs on"
        time.sleep(0.05)

