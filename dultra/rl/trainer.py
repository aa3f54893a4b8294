"""GRPO training of the base model and the planner head (dultra.md sections 4-5).

    dultra train --config configs/tiny.yaml [--output-dir runs/grpo --resume true]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m dultra.cli train --config configs/llada-8b-math.yaml

One step: roll out `prompts_per_step` prompts x `group_size` completions with planner
sampling (trajectories and per-step log-probs recorded) -> score every completion ->
group advantages -> replay the trajectories with gradients, B (row, step) pairs per forward
(dultra.decoding.trajectory.replay_steps; with the base frozen, only the heads, on the trunk
outputs the rollout recorded), and backpropagate `coefficient x log pi_step`
(dultra.rl.grpo: the clipped sequence-level objective's exact gradient, one forward's
activations at a time) -> clip, optimizer step. With `cache`, rollouts decode with a KV
cache and the replay runs block by block as they did (one block's forwards per backward).

On the first update of a batch the replay must reproduce the rollout's log-probs (the
policy is the one that sampled): a larger gap than `onpolicy_tolerance` stops the run,
since it means replay and decoding disagree.

Processes run the same number of forwards in every phase (rollouts decode in lockstep,
replays are padded to the longest process's): under FSDP every forward and backward is a
collective, and a process that stopped early would leave the others waiting forever.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from dultra.configio import config_dict
from dultra.data.mixture import load_examples
from dultra.data.prompts import prompts_too_long, solutions_too_long
from dultra.decoding import DecodeConfig, Trajectory, replay
from dultra.decoding.trajectory import replay_forwards, replay_steps
from dultra.errors import ConfigError, DultraError
from dultra.model.loading import load, resolve, stop_token_ids, untrained_planner
from dultra.rewards import RewardScorer, load_teacher
from dultra.rl.checkpoint import start_point
from dultra.rl.config import TrainConfig
from dultra.rl.data import ExampleStream
from dultra.rl.grpo import (
    group_advantages,
    kl_penalty,
    loss_coefficients,
    sequence_log_ratio,
    zero_spread,
)
from dultra.rl.loop import run_steps
from dultra.rl.rollout import Rollout, rollout, score
from dultra.rl.supervised import (
    build_optimizer,
    decay_groups,
    prepare,
    step_seed,
    store_frozen_weights,
)


class OffPolicyError(DultraError, RuntimeError):
    """Replaying a fresh rollout did not reproduce its log-probabilities, or gave no number."""


class DivergedError(DultraError, RuntimeError):
    """A gradient was not finite: the update would have made every weight NaN."""


class GRPOTrainer:
    """Owns the model, optimizer, data stream, scorer and logger of one run."""

    def __init__(self, cfg: TrainConfig, accelerator: Accelerator | None = None):
        cfg.validate()
        self.acc = acc = accelerator or Accelerator()
        # An unset steps weight becomes 0.1, or 0 with a frozen planner (as the reference), an
        # unset distill weight 1.0 with a teacher, else 0; the config logged at start and saved
        # in checkpoints holds the values used.
        given, rewards = cfg.rewards, cfg.rewards.resolve(cfg.train_planner, has_teacher=cfg.teacher is not None)
        self.cfg = cfg = replace(cfg, rewards=rewards)  # the caller's config stays as given
        if cfg.compile_rollouts and acc.distributed_type == DistributedType.FSDP:
            raise ConfigError("compile_rollouts captures the full weights at fixed addresses; FSDP shards them")
        self.config = config_dict(cfg)
        # Settings that cannot work fail here, before minutes of model loading and rollouts.
        self.finished, self.resume_from = start_point(acc, "train", "grpo", cfg.output_dir, cfg.resume, self.config)
        if self.finished is not None:  # train() has nothing to do: nothing to load
            return
        examples = load_examples(cfg.tasks, cfg.data, "train", cfg.train_size)
        kinds = sorted({ex.kind for ex in examples})
        cfg.rewards.check(set(kinds), has_teacher=cfg.teacher is not None)
        if cfg.teacher is not None and all(getattr(cfg.rewards, kind).distill for kind in kinds) and len(kinds) > 1:
            acc.print(f"train: warning: one teacher ({cfg.teacher}) scores the distill reward of every task kind "
                      f"({', '.join(kinds)}); dultra.md uses a math teacher for math and a coder for code: train "
                      "each kind on its own, or set --rewards.<kind>.distill 0 for the kinds it does not know")
        if any(getattr(given, kind).steps is None for kind in kinds):
            weights = " / ".join(f"{getattr(rewards, kind).steps} ({kind})" for kind in kinds)
            acc.print(f"train: steps reward weight {weights}, the planner {'trains' if cfg.train_planner else 'is frozen'}")
        if cfg.teacher is None and any(getattr(given, kind).distill is None for kind in kinds):
            acc.print("train: no teacher, so no distill reward (--teacher adds it, as the reference trains)")
        self.stream = ExampleStream(examples, cfg.prompts_per_step, cfg.seed, acc.process_index, acc.num_processes)
        if cfg.sandbox_url is not None and "code" in kinds:  # reachable? before minutes of loading
            self._code_runner().close()
        path = resolve(cfg.model)
        model, self.tokenizer = load(path)
        if not model.config.has_planner:
            raise ConfigError(f"{cfg.model} has no planner head: run `dultra warmstart` first")
        if cfg.train_planner and untrained_planner(path):
            acc.print(f"train: warning: the planner head of {cfg.model} is untrained (a pretraining checkpoint): "
                      "GRPO then starts from a random unmasking policy; `dultra warmstart` first is the recipe")
        model.set_trainable(base=cfg.train_base, planner=cfg.train_planner)
        if cfg.gradient_checkpointing:
            model.checkpoint_activations()
        self.eos_ids = stop_token_ids(path, self.tokenizer, model.config)
        if too_long := prompts_too_long(self.tokenizer, examples, model.config.max_sequence_length, cfg.gen_length):
            raise ConfigError(too_long)
        if too_long := solutions_too_long(self.tokenizer, examples, cfg.gen_length):
            acc.print(f"train: warning: {too_long}")
        store_frozen_weights(model, acc, "train")
        self.reference = copy.deepcopy(model).requires_grad_(False).to(acc.device) if cfg.beta > 0 else None
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        head = {id(p) for p in model.planner_parameters()}
        decay, head_lr = cfg.optim.weight_decay, cfg.optim.lr if cfg.planner_lr is None else cfg.planner_lr
        groups = (decay_groups(((n, p) for n, p in named if id(p) not in head), decay)
                  + decay_groups(((n, p) for n, p in named if id(p) in head), decay, lr=head_lr))
        # The schedule counts optimizer updates: num_iterations of them per step.
        updates = cfg.steps * cfg.num_iterations
        optimizer, scheduler = build_optimizer(groups, cfg.optim, updates)
        self.model, self.optimizer, self.scheduler = prepare(acc, model, optimizer, scheduler)
        self.scorer = RewardScorer(cfg.rewards, code_runner=self._code_runner(), teacher=self._teacher())

    def _teacher(self):
        if self.cfg.teacher is None:
            return None
        return load_teacher(self.cfg.teacher, dtype=torch.bfloat16 if self.acc.device.type == "cuda" else None,
                            device=self.acc.device)

    def _code_runner(self):
        """A sandbox client when the training set has code tasks (in-process without a URL)."""
        if not any(ex.kind == "code" for ex in self.stream.examples):
            return None
        from dultra.rewards.sandbox_client import SandboxClient, SandboxUnavailable

        client = SandboxClient(self.cfg.sandbox_url)
        try:
            client.check_ready()
        except SandboxUnavailable as err:
            raise ConfigError(f"{err} (set --sandbox-url to a running `dultra sandbox serve`)") from None
        return client

    # ------------------------------------------------------------------------------- loop
    def train(self) -> Path:
        cfg, acc = self.cfg, self.acc
        if self.finished is not None:
            return self.finished
        return run_steps(acc, "train", "grpo", cfg, self.stream, self.config, self.resume_from, self.train_step,
                         lambda m: {"reward": f"{m['reward/total']:.3f}", "nfe": f"{m['nfe']:.1f}"},
                         self.model, self.tokenizer)

    def train_step(self, step: int) -> dict[str, float]:
        cfg, acc = self.cfg, self.acc
        examples = self.stream.next()
        t0 = time.perf_counter()
        self.model.eval()
        decode = DecodeConfig(
            gen_length=cfg.gen_length, block_length=cfg.block_length, temperature=cfg.temperature,
            record=True, seed=step_seed(cfg.seed, step, acc.process_index), eos_ids=self.eos_ids,
            lockstep=acc.num_processes > 1, cache=cfg.cache, compile=cfg.compile_rollouts,
            record_trunk=not cfg.train_base,  # a frozen base: the replay runs the heads on the recorded trunk
        )
        # Captured steps read the module's own weights, which the optimizer updates in place;
        # without gradients a DDP wrapper adds nothing to a forward. They call the trunk
        # directly, not the forward accelerate wraps in its autocast, so that autocast is
        # entered here: otherwise a bf16 run would roll out in fp32 and replay in bf16.
        policy = acc.unwrap_model(self.model) if cfg.compile_rollouts else self.model
        with acc.autocast():
            roll = rollout(policy, self.tokenizer, examples, cfg.group_size, decode, acc.device)
        t1 = time.perf_counter()
        scored = score(self.scorer, roll, examples, cfg.group_size)
        rewards = torch.tensor([r if r is not None else 0.0 for r in scored.total])
        keep = torch.tensor(scored.keep)
        adv = group_advantages(rewards, keep, cfg.group_size, cfg.scale_rewards, cfg.advantage_min_clip)
        t2 = time.perf_counter()
        self.model.train()
        update = self.update(roll.output.trajectory, adv.to(acc.device), keep.to(acc.device))
        t3 = time.perf_counter()
        return {
            **self._rollout_metrics(roll, scored, rewards, keep),
            **update,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds/rollout": t1 - t0, "seconds/reward": t2 - t1, "seconds/update": t3 - t2,
        }

    # ----------------------------------------------------------------------------- update
    def update(self, traj: Trajectory, adv: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
        """num_iterations optimizer updates on one rollout batch; returns update metrics."""
        cfg, acc = self.cfg, self.acc
        # Rows without advantage (and without a KL term) have no gradient: skip their replay.
        useful = (adv != 0) | (keep if cfg.beta > 0 else torch.zeros_like(keep))
        rows = useful.nonzero().squeeze(1)
        if len(rows) == 0:  # still replay one row (weight 0) so every process joins the sync
            rows = torch.zeros(1, dtype=torch.long, device=adv.device)
        size = cfg.replay_batch_size or len(rows)
        chunks = list(rows.split(size))
        # Per sample and generated position. The reference's loss is twice this (each half of a
        # device batch over the half's size, halves summed): the 8B configs halve grad_clip to match.
        norm = adv.numel() * cfg.gen_length
        subs = [traj.select(c) for c in chunks]
        with acc.autocast():  # the reference computes as the policy, whose forward accelerate wraps
            ref = [replay(self.reference, sub) for sub in subs] if self.reference is not None else None
        packs = [replay_forwards(sub) for sub in subs]
        packs[-1] += self._most(sum(packs)) - sum(packs)  # the longest process's replay sets everyone's
        out: dict[str, float] = {}
        for iteration in range(cfg.num_iterations):
            if iteration == 0:
                log_ratio = torch.zeros_like(adv)  # on-policy: the ratio is exactly 1
            else:
                with torch.no_grad():
                    full = replay(self.model, traj, self._most(replay_forwards(traj)))
                    log_ratio = sequence_log_ratio(full, traj.log_probs)
            coef, clipped = loss_coefficients(log_ratio, adv, cfg.eps_low, cfg.eps_high)
            gap, forwards = self._backward(chunks, subs, packs, coef, norm, ref, check=iteration == 0)
            grad_norm = acc.clip_grad_norm_(self.params, cfg.optim.grad_clip) if cfg.optim.grad_clip > 0 else None
            if grad_norm is not None and not math.isfinite(grad_norm):  # before the update spreads it to the weights
                raise DivergedError(f"the gradient norm is {float(grad_norm)}: training diverged; lower the "
                                     "learning rate and resume from an earlier checkpoint")
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if iteration == 0:
                out["onpolicy/max_abs_log_ratio"] = gap
            out["clip_fraction"] = clipped[keep].float().mean().item() if keep.any() else 0.0
            out["replay_forwards"] = float(forwards)
            if grad_norm is not None:
                out["grad_norm"] = float(grad_norm)
        out["replayed_rows"] = float(len(rows))
        return self._over_processes(out)

    # How each update metric combines over processes (each process logs its own otherwise).
    _COMBINE = {"onpolicy/max_abs_log_ratio": "max", "replay_forwards": "max", "clip_fraction": "mean",
                "replayed_rows": "sum"}

    def _over_processes(self, local: dict[str, float]) -> dict[str, float]:
        """`local` update metrics combined over all processes (_COMBINE); the rest (grad_norm:
        already global) as they are."""
        if self.acc.num_processes == 1:
            return local
        names = [n for n in self._COMBINE if n in local]
        values = self.acc.gather(torch.tensor([[local[n] for n in names]], device=self.acc.device)).float()
        ops = {"max": values.amax(0), "mean": values.mean(0), "sum": values.sum(0)}
        return {**local, **{n: float(ops[self._COMBINE[n]][i]) for i, n in enumerate(names)}}

    def _most(self, n: int) -> int:
        """The largest n over all processes."""
        return int(self.acc.gather(torch.tensor([n], device=self.acc.device)).max())

    def _backward(self, chunks, subs, packs, coef, norm, ref, check: bool) -> tuple[float, int]:
        """Backpropagate `packs[i]` replay packs of every chunk i (rows `chunks[i]`, trajectory
        `subs[i]`); gradients sync on the last one only.

        Returns the largest |replayed - recorded| step log-prob (when `check`) and the number
        of forwards the replay took.
        """
        cfg, acc = self.cfg, self.acc
        gap, forwards = 0.0, 0
        for i, (rows, sub) in enumerate(zip(chunks, subs, strict=True)):
            for pack in replay_steps(self.model, sub, packs[i]):
                forwards += pack.forwards
                if check and len(pack.rows):
                    diff = (pack.log_prob.detach() - sub.log_probs[pack.rows, pack.steps]).abs().max().item()
                    gap = diff if math.isnan(diff) else max(gap, diff)  # max(0.0, nan) is 0.0
                    if not gap <= cfg.onpolicy_tolerance:  # NaN too: weights gone non-finite
                        raise OffPolicyError(
                            f"replayed step {int(pack.steps.min())} differs from the rollout by {gap:.3g} > "
                            f"onpolicy_tolerance {cfg.onpolicy_tolerance}"
                            + (" (the model's outputs are not finite: did training diverge? lower the learning "
                               "rate and resume from an earlier checkpoint)" if math.isnan(gap) else "")
                        )
                loss = -(coef[rows][pack.rows] * pack.log_prob).sum() / norm
                if ref is not None:
                    kl = kl_penalty(pack.log_prob, ref[i][pack.rows, pack.steps])
                    loss = loss + cfg.beta * kl.sum() / norm
                last = i == len(chunks) - 1 and pack.last
                with contextlib.nullcontext() if last else acc.no_sync(self.model):
                    acc.backward(loss)
        return gap, forwards

    # ---------------------------------------------------------------------------- metrics
    def _rollout_metrics(self, roll: Rollout, scored, rewards: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
        """Means over all processes of what one rollout batch did."""
        out = roll.output
        G = self.cfg.group_size
        zero_std = zero_spread(rewards, keep, G).float()
        local = {
            "reward/total": rewards[keep].sum(), "nfe": out.nfe.float().sum(), "tpf": out.tpf.sum(),
            "completion_length": out.lengths.float().sum(), "frac_reward_zero_std": zero_std.sum(),
            "kept": keep.float().sum(),
        }
        counts = {"reward/total": keep.float().sum(), "frac_reward_zero_std": torch.tensor(float(len(zero_std))),
                  "kept": torch.tensor(float(len(keep)))}
        for name, (total, n) in kept_component_sums(scored.components, keep.tolist()).items():
            local[f"reward/{name}"], counts[f"reward/{name}"] = torch.tensor(total), torch.tensor(float(n))
        numerators = [v.float().cpu() for v in local.values()]
        denominators = [counts[name].float().cpu() if name in counts else torch.tensor(float(len(keep)))
                        for name in local]
        totals = self.acc.reduce(torch.stack(numerators + denominators).to(self.acc.device), "sum").tolist()
        metrics = {name: num / den if den else float("nan")
                   for name, num, den in zip(local, totals[:len(local)], totals[len(local):])}
        metrics["accuracy"] = metrics.pop("reward/correct", float("nan"))
        return metrics


def kept_component_sums(components: dict[str, list[float | None]], keep: list[bool]) -> dict[str, tuple[float, int]]:
    """Per reward component, the sum and number of its values on the kept samples it scored.

    A sample dropped because another component could not score it (a sandbox failure) counts
    in neither, so the mean of each component stays within its range.
    """
    out = {}
    for name, values in components.items():
        kept = [v for v, k in zip(values, keep) if k and v is not None]
        out[name] = (float(sum(kept)), len(kept))
    return out


def train(cfg: TrainConfig) -> Path:
    """Run GRPO; returns the final checkpoint directory."""
    return GRPOTrainer(cfg).train()
