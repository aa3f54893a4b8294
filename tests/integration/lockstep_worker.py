"""One process of tests/integration/test_fsdp_lockstep.py, on gloo.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python -m tests.integration.lockstep_worker fsdp OUT.json dual
    RANK=0 WORLD_SIZE=4 ... python -m tests.integration.lockstep_worker hsdp OUT.json none
    ... python -m tests.integration.lockstep_worker trainer OUT.json CHECKPOINT {none,dual}
    ... python -m tests.integration.lockstep_worker schedule OUT.json CHECKPOINT

fsdp: every LLaDA block and the whole model are sharded with torch's fully_shard, so each
forward and backward all-gathers and reduce-scatters with the other process. Each process
decodes its own prompts (the processes need different numbers of steps), replays the
trajectory with gradients padded to the longest process's forwards, and compares with an
unsharded copy of the same weights: outputs, log-probs, and the averaged gradients. With
a cache, a replay pack runs a block's forwards before its one backward. hsdp: the same on a
2 x (world / 2) mesh, sharded within each half and replicated across them (FSDP2's hybrid
shard, as configs/accelerate/hsdp.yaml does across nodes).

trainer: three GRPO steps of GRPOTrainer (accelerate on the CPU wraps the model in DDP, as
FSDP needs a GPU there), counting the model forwards of each phase on this process, and
the update metrics it would log.

schedule: three updates of `dultra pretrain` and of GRPOTrainer, both with a 4-update LR
warmup; the learning rates their metrics logged.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from dultra.decoding import DecodeConfig, PlannerSample, generate
from dultra.decoding.trajectory import replay_forwards, replay_steps
from dultra.model.modeling import LLaDABlock
from tests.helpers import small_model

CONFIG = DecodeConfig(gen_length=16, block_length=4, temperature=0.7, record=True)


def most(n: int) -> int:
    """The largest n over the processes."""
    t = torch.tensor([n])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def sharded(out_path: str, cache: str, replicas: int = 1) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (replicas, world // replicas), mesh_dim_names=("replicate", "shard"))
    mesh = mesh if replicas > 1 else mesh["shard"]
    plain = small_model(0)
    model = copy.deepcopy(plain)
    for module in model.modules():
        if isinstance(module, LLaDABlock):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)

    seed = 2 * rank  # seeds 0 and 2 need different steps and replay packs (the test checks it)
    prompts = torch.randint(0, 60, (3, 6), generator=torch.Generator().manual_seed(seed))
    config = replace(CONFIG, seed=seed, cache=cache)
    locked = replace(config, lockstep=True)
    alone = generate(plain, prompts, None, PlannerSample(), config)
    # The unsharded copy in lockstep waits as the sharded model does (with a cache a wait
    # shifts the sampling stream, so the completions can differ from `alone`'s).
    reference = generate(plain, prompts, None, PlannerSample(), locked)
    sharded = generate(model, prompts, None, PlannerSample(), locked)
    traj = sharded.trajectory

    forwards, gap = 0, 0.0
    for pack in replay_steps(model, traj, most(replay_forwards(traj))):
        forwards += pack.forwards
        if len(pack.rows):
            gap = max(gap, (pack.log_prob.detach() - traj.log_probs[pack.rows, pack.steps]).abs().max().item())
        pack.log_prob.sum().backward()
    # The reference gradient: each process's replay on the unsharded copy, averaged as FSDP does.
    for pack in replay_steps(plain, reference.trajectory):
        pack.log_prob.sum().backward()
    grad_gap = 0.0
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        dist.all_reduce(q.grad, op=dist.ReduceOp.SUM)
        grad_gap = max(grad_gap, (p.grad.full_tensor() - q.grad / world).abs().max().item())

    result = {
        "rank": rank, "mesh": list(next(model.parameters()).device_mesh.shape),
        "steps": sharded.steps, "steps_alone": alone.steps, "refreshes": traj.refreshes,
        "forwards": forwards, "own_forwards": replay_forwards(traj),
        "same_sequences": torch.equal(sharded.sequences, reference.sequences),
        "same_nfe": torch.equal(sharded.nfe, reference.nfe),
        "same_as_alone": torch.equal(sharded.sequences, alone.sequences) and torch.equal(sharded.nfe, alone.nfe), "log_prob_gap": gap, "grad_gap": grad_gap,
    }
    with open(out_path, "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


def trainer(out_path: str, checkpoint: str, cache: str) -> None:
    from dultra.rewards import RewardConfig, RewardWeights
    from dultra.rl import trainer as module
    from dultra.rl.config import TrainConfig
    from dultra.rl.trainer import GRPOTrainer

    cfg = TrainConfig(model=checkpoint, output_dir=str(Path(out_path).parent / "run"), steps=3, group_size=4,
                      gen_length=16, block_length=4, train_size=40, save_every=0, temperature=0.7, cache=cache,
                      rewards=RewardConfig(math=RewardWeights(distill=0.0)))
    run = GRPOTrainer(cfg)
    steps: list[dict[str, int]] = []

    def count(model, args):
        steps[-1]["replay" if model.training else "rollout"] += 1

    run.acc.unwrap_model(run.model).register_forward_pre_hook(count)
    # What this process alone would need: its longest row's steps, its replayed rows' packs.
    rollout, update = module.rollout, run.update

    def own_rollout(*args, **kwargs):
        roll = rollout(*args, **kwargs)
        steps[-1]["rollout_alone"] = int(roll.output.nfe.max())
        return roll

    def own_update(traj, adv, keep):
        rows = (adv != 0).nonzero().squeeze(1)
        steps[-1]["replay_alone"] = replay_forwards(traj.select(rows if len(rows) else rows.new_zeros(1)))
        steps[-1]["rows_alone"] = max(len(rows), 1)
        steps[-1]["logged"] = update(traj, adv, keep)
        return steps[-1]["logged"]

    module.rollout, run.update = own_rollout, own_update
    for step in range(cfg.steps):
        steps.append({"rollout": 0, "replay": 0})
        run.train_step(step)
    with open(out_path, "w") as f:
        json.dump({"rank": run.acc.process_index, "steps": steps}, f)


def schedule(out_path: str, checkpoint: str) -> None:
    from dultra.rewards import RewardConfig, RewardWeights
    from dultra.rl.config import OptimConfig, PretrainConfig, TrainConfig
    from dultra.rl.logger import read_metrics
    from dultra.rl.pretrain import pretrain
    from dultra.rl.trainer import GRPOTrainer

    root, optim = Path(out_path).parent, OptimConfig(lr=1e-3, warmup_steps=4, weight_decay=0.1)  # 2 groups a part
    pretrain(PretrainConfig(model=checkpoint, tasks="synthetic-math", train_size=40, output_dir=str(root / "pretrain"),
                            steps=3, batch_size=2, gen_length=48, save_every=0, optim=optim))
    run = GRPOTrainer(TrainConfig(model=checkpoint, output_dir=str(root / "grpo"), steps=3, group_size=4, gen_length=16,
                                  block_length=4, train_size=40, save_every=0, optim=optim,
                                  rewards=RewardConfig(math=RewardWeights(distill=0.0))))
    run.train()
    lrs = {stage: [row["lr"] for row in read_metrics(root / stage)] for stage in ("pretrain", "grpo")}
    with open(out_path, "w") as f:
        json.dump({"rank": run.acc.process_index, "processes": run.acc.num_processes, **lrs}, f)


if __name__ == "__main__":
    hybrid = functools.partial(sharded, replicas=2)
    {"fsdp": sharded, "hsdp": hybrid, "trainer": trainer, "schedule": schedule}[sys.argv[1]](*sys.argv[2:])
