"""The dultra-accelerate runtime's launch script, run here as two TrainJob nodes on loopback.

    .venv/bin/python -m pytest -q tests/integration/test_runtime_launch.py

Each "node" is the runtime's exact command (from `kubectl kustomize manifests/runtime`) with the
TrainJob's args and env (from build_trainjob) plus the PET_* variables the Trainer's torch
plugin injects, on CPU: accelerate starts one process per node, they form one gloo group and
run a real GRPO step of a tiny model. Only the network is not Kubernetes'. A probe on the
nodes' PYTHONPATH reports the process group each training process joins.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.trainjob import TrainJobSpec, build_trainjob
from tests.helpers import free_port, save_small_checkpoint
from tests.manifest_helpers import build

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import torch.distributed as dist
_init = dist.init_process_group
def _reporting_init(*args, **kwargs):
    _init(*args, **kwargs)
    print(f"probe: {dist.get_backend()} rank {dist.get_rank()} of {dist.get_world_size()}", flush=True)
dist.init_process_group = _reporting_init
"""


def runtime_node() -> dict:
    (runtime,) = build(REPO / "manifests" / "runtime")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    (node,) = pod["spec"]["containers"]
    return node


def node_env(node: dict, trainer: dict, rank: int, port: int, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.update({e["name"]: e["value"] for e in node["env"]})
    env.update({e["name"]: e["value"] for e in trainer["env"]})
    # /workspace is the shared volume in the cluster; a temporary directory here.
    env.update(HF_HOME=str(tmp / "hf"), DULTRA_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1")
    (tmp / "probe").mkdir(exist_ok=True)
    (tmp / "probe" / "sitecustomize.py").write_text(PROBE)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp / "probe"), str(REPO)])
    env.update(PET_NNODES=str(trainer["numNodes"]), PET_NPROC_PER_NODE=str(trainer["numProcPerNode"]),
               PET_NODE_RANK=str(rank), PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port))
    return env


def test_two_cpu_nodes_train_one_step_as_one_gloo_group(tmp_path, tiny_tokenizer):
    ckpt = save_small_checkpoint(tmp_path / "ckpt", tiny_tokenizer)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"train": {
        "model": str(ckpt), "tasks": "synthetic-math", "train_size": 16, "steps": 1, "prompts_per_step": 1,
        "group_size": 2, "gen_length": 16, "block_length": 8, "save_every": 0, "rewards": {"math": {"distill": 0.0}},
    }}))
    out_dir = tmp_path / "run" / "train"
    spec = TrainJobSpec(image="unused-here", run_id="run-1", nodes=2, gpus_per_node=0,
                        args=["train", "--config", str(config), "--output-dir", str(out_dir), "--resume", "true"])
    trainer = build_trainjob(spec, "dultra")["spec"]["trainer"]
    node = runtime_node()
    port = free_port()
    procs = [subprocess.Popen([*node["command"], *trainer["args"]], cwd=REPO, text=True,
                              env=node_env(node, trainer, rank, port, tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in (0, 1)]
    logs = [p.communicate(timeout=540)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(logs)
    assert "dultra-accelerate: node 0 of 2, 1 processes, rendezvous 127.0.0.1" in logs[0]
    assert "dultra-accelerate: node 1 of 2" in logs[1]
    assert "probe: gloo rank 0 of 2" in logs[0] and "probe: gloo rank 1 of 2" in logs[1]
    assert (out_dir / "final" / "config.json").is_file()


SIZES_PROBE = """
import os
if os.environ.get("ACCELERATE_USE_PARALLELISM_CONFIG") == "true":  # a training process, before it trains
    line = "probe: replicate {PARALLELISM_CONFIG_DP_REPLICATE_SIZE} shard {PARALLELISM_CONFIG_DP_SHARD_SIZE} rank {RANK}"
    os.write(1, (line.format(**os.environ) + "\\n").encode())  # one write: the node's processes share stdout
    os._exit(0)
"""


def test_the_hybrid_shard_config_replicates_across_nodes_and_shards_within_one(tmp_path):
    """Two nodes of two processes: every training process gets the 2 x 2 mesh sizes. (Accelerate
    runs FSDP only on GPUs, so the probe stops each process before it builds its Accelerator.)"""
    spec = TrainJobSpec(image="x", run_id="r", nodes=2, accelerate_config="configs/accelerate/hsdp.yaml", args=["train"])
    trainer = build_trainjob(spec, "dultra")["spec"]["trainer"]
    node = runtime_node()
    port = free_port()
    envs = [{**node_env(node, trainer, rank, port, tmp_path), "PET_NPROC_PER_NODE": "2"} for rank in (0, 1)]
    (tmp_path / "probe" / "sitecustomize.py").write_text(SIZES_PROBE)
    procs = [subprocess.Popen([*node["command"], *trainer["args"]], cwd=REPO, text=True, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for env in envs]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(logs)
    ranks = sorted(line.split()[-1] for log in logs for line in log.splitlines()
                   if line.startswith("probe: replicate 2 shard 2 rank"))
    assert ranks == ["0", "1", "2", "3"], "\n=====\n".join(logs)


def test_a_node_waits_for_the_others_only_the_rendezvous_timeout(tmp_path):
    """Node 1 never starts (no room for it): node 0 gives up after DULTRA_RENDEZVOUS_TIMEOUT_S, so
    the TrainJob fails and JobSet restarts it, instead of holding its GPUs for torch's 10 minutes."""
    node = runtime_node()
    trainer = build_trainjob(TrainJobSpec(image="x", run_id="r", nodes=2, args=["train"]), "dultra")["spec"]["trainer"]
    assert {"name": "DULTRA_RENDEZVOUS_TIMEOUT_S", "value": "1800"} in node["env"]
    env = {**node_env(node, trainer, 0, free_port(), tmp_path), "DULTRA_RENDEZVOUS_TIMEOUT_S": "5"}
    result = subprocess.run([*node["command"], "train"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Timed out" in result.stdout + result.stderr, result.stdout + result.stderr


def test_a_non_integer_process_count_is_refused(tmp_path):
    node = runtime_node()
    trainer = build_trainjob(TrainJobSpec(image="x", run_id="r", args=["train"]), "dultra")["spec"]["trainer"]
    env = {**node_env(node, trainer, 0, free_port(), tmp_path), "PET_NPROC_PER_NODE": "auto"}
    result = subprocess.run([*node["command"], "train"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "set the TrainJob's numProcPerNode to an integer (PET_NPROC_PER_NODE='auto')" in result.stderr
