"""The typed settings of the training stages, one dataclass per `dultra` command, and their
checks that need no model.

    cfg = load_config(TrainConfig, "configs/tiny.yaml", section="train")

Kept apart from the stages' code, which imports torch and transformers (seconds), so
`dultra train --help` and a settings mistake answer at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dultra.configio import doc
from dultra.errors import ConfigError
from dultra.rewards.combine import RewardConfig

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule (linear warmup, then constant or cosine)."""

    lr: float = doc(1e-3, "peak learning rate")
    betas: tuple[float, float] = doc((0.9, 0.99), "AdamW betas")
    weight_decay: float = doc(0.0, "AdamW weight decay")
    grad_clip: float = doc(1.0, "clip the global gradient norm to this (0 disables)")
    warmup_steps: int = doc(0, "linear warmup over this many optimizer updates")
    schedule: str = doc("constant", "constant | cosine (decay to 10% of lr at the last update)")

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        # Checked here so a bad value is one line, not a traceback from inside torch.optim.
        if not 0 < self.lr < float("inf"):
            raise ConfigError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be in [0, 1), got {self.betas}")
        if not 0 <= self.weight_decay < float("inf"):
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.grad_clip < float("inf"):
            raise ConfigError(f"optim.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


def check_run(steps: int, save_every: int, batch_size: int, train_size: int, batch_name: str = "batch_size") -> None:
    """Clear errors, before anything loads, for a run length, batch or training set that cannot train."""
    if train_size < 1:
        raise ConfigError(f"train_size must be >= 1, got {train_size}")
    if steps < 1:  # 0 wrote an untrained model as the final one
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if save_every < 0:
        raise ConfigError(f"save_every must be >= 0 (0: only the final model), got {save_every}")
    if batch_size < 1:
        raise ConfigError(f"{batch_name} must be >= 1, got {batch_size}")


@dataclass
class PretrainConfig:
    """Settings of `dultra pretrain` (section `pretrain` of a config file)."""

    model: str = doc("tiny", "`tiny` (the untrained tiny default; `tiny:n_layers=6,...` for a variant) "
                             "or a checkpoint directory to continue from")
    tasks: str = doc("synthetic-math,synthetic-code", "comma-separated tasks to train on")
    data: str | None = doc(None, "a JSONL file of examples instead of `tasks` (a pipeline artifact)")
    train_size: int = doc(20000, "examples generated per synthetic task")
    output_dir: str = doc("runs/pretrain", "where checkpoints, metrics and the final model go")
    steps: int = doc(2000, "optimizer steps")
    batch_size: int = doc(64, "sequences per step and process")
    gen_length: int = doc(64, "completion length: solution + EOS padding")
    mask_eps: float = doc(1e-3, "smallest mask ratio t")
    optim: OptimConfig = doc(factory=lambda: OptimConfig(lr=2e-3, warmup_steps=100, schedule="cosine"),
                             help="optimizer settings")
    seed: int = doc(0, "seed of the data order and the masks")
    save_every: int = doc(500, "checkpoint every N steps and at the last (0: only the final model)")
    resume: bool = doc(False, "continue from the newest checkpoint in output_dir")


@dataclass
class WarmstartConfig:
    """Settings of `dultra warmstart` (section `warmstart` of a config file)."""

    model: str = doc("runs/pretrain/final", "base checkpoint (a directory or a Hub id such as "
                                                 "GSAI-ML/LLaDA-8B-Instruct); a fresh planner head is added if it has none")
    tasks: str = doc("synthetic-math,synthetic-code", "comma-separated tasks to train on")
    data: str | None = doc(None, "a JSONL file of examples instead of `tasks` (a pipeline artifact)")
    train_size: int = doc(20000, "examples generated per synthetic task")
    output_dir: str = doc("runs/warmstart", "where checkpoints, metrics and the final model go")
    steps: int = doc(500, "optimizer steps")
    batch_size: int = doc(64, "sequences per step and process")
    gen_length: int = doc(64, "completion length")
    block_length: int = doc(16, "block length of the decoding states")
    factor: float = doc(1.0, "factor of the Fast-dLLM rule the head imitates")
    factor_official: bool = doc(False, "label with Fast-dLLM's code, which also reveals a last mask that fails the "
                                       "bound (the reference's warm-start labels do)")
    optim: OptimConfig = doc(factory=lambda: OptimConfig(lr=1e-3, warmup_steps=20), help="optimizer settings")
    seed: int = doc(0, "seed of the data order and the decoding states")
    save_every: int = doc(0, "checkpoint every N steps and at the last (0: only the final model)")
    resume: bool = doc(False, "continue from the newest checkpoint in output_dir")


@dataclass
class TrainConfig:
    """Settings of `dultra train` (section `train` of a config file). Defaults are the reference's
    where it has one; configs/llada-8b-*.yaml set its full recipe."""

    model: str = doc("runs/warmstart/final", "checkpoint with a planner head (after `dultra warmstart`; "
                                                   "a directory or a Hub id such as sengi/dUltra-math)")
    tasks: str = doc("synthetic-math", "comma-separated training tasks")
    data: str | None = doc(None, "a JSONL file of examples instead of `tasks` (a pipeline artifact)")
    train_size: int = doc(20000, "examples generated per synthetic task")
    output_dir: str = doc("runs/grpo", "where checkpoints, metrics and the final model go")
    steps: int = doc(200, "GRPO steps: rollout batches, each num_iterations optimizer updates")
    prompts_per_step: int = doc(1, "prompts per step and process")
    group_size: int = doc(12, "completions per prompt (G)")
    gen_length: int = doc(256, "completion length")
    block_length: int = doc(32, "semi-autoregressive block length")
    temperature: float = doc(0.1, "token sampling temperature of the rollouts")
    cache: str = doc("none", "KV cache of the rollouts and their replay: none, prefix or dual (the policy "
                             "trained is then the cached decoder's)")
    compile_rollouts: bool = doc(False, "decode rollouts with compiled steps, replayed from CUDA graphs on a GPU "
                                        "(the first rollout of each shape compiles; not under FSDP)")
    num_iterations: int = doc(1, "optimizer updates per rollout batch (1: exactly on-policy); the LR schedule "
                                 "spans steps x num_iterations updates")
    eps_low: float = doc(0.2, "lower clip of the sequence ratio: 1 - eps_low")
    eps_high: float = doc(1.0, "upper clip of the sequence ratio: 1 + eps_high")
    beta: float = doc(0.0, "weight of the KL penalty to the initial model (0: none, no reference copy)")
    scale_rewards: bool = doc(False, "divide advantages by the group's reward std")
    advantage_min_clip: float | None = doc(None, "advantages below this are set to 0 (none: no clip; the "
                                                 "reference's is 0.0, set in configs/llada-8b-*.yaml)")
    train_base: bool = doc(True, "update the base model (frozen, under bf16 mixed precision its linear "
                                 "weights are stored in bf16: same results, half the memory)")
    train_planner: bool = doc(True, "update the planner head")
    replay_batch_size: int = doc(0, "rows replayed together (0: the whole rollout batch)")
    gradient_checkpointing: bool = doc(False, "recompute block activations in the backward pass")
    onpolicy_tolerance: float = doc(1e-3, "largest |replayed - recorded| step log-prob on the first update")
    rewards: RewardConfig = doc(factory=RewardConfig, help="reward weights per task kind")
    teacher: str | None = doc(None, "autoregressive teacher (HF id or directory) for the distill reward")
    sandbox_url: str | None = doc(None, "sandbox service URL for code rewards (none: in-process workers)")
    optim: OptimConfig = doc(factory=lambda: OptimConfig(lr=5e-6, weight_decay=0.1), help="optimizer settings")
    planner_lr: float | None = doc(None, "peak learning rate of the planner head (none: optim.lr, as the reference)")
    seed: int = doc(0, "seed of the data order and the rollouts")
    save_every: int = doc(50, "checkpoint every N steps and at the last (0: only the final model)")
    resume: bool = doc(False, "continue from the newest checkpoint in output_dir")

    def validate(self) -> None:
        # Here, not at the top: the decoding package imports torch, and this module must not.
        from dultra.decoding.generate import check_cache, check_lengths, check_temperature

        check_lengths(self.gen_length, self.block_length)
        check_run(self.steps, self.save_every, self.prompts_per_step, self.train_size, "prompts_per_step")
        if not 0 <= self.beta < float("inf"):
            raise ConfigError(f"beta (the KL penalty's weight) must be >= 0, got {self.beta}")
        if self.num_iterations < 1:
            raise ConfigError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if not self.onpolicy_tolerance >= 0:  # inf: no check
            raise ConfigError(f"onpolicy_tolerance must be a number >= 0, got {self.onpolicy_tolerance}")
        if self.advantage_min_clip is not None and math.isnan(self.advantage_min_clip):
            raise ConfigError("advantage_min_clip must be a number (leave it unset for no clip), got nan")
        if self.replay_batch_size < 0:
            raise ConfigError(f"replay_batch_size must be >= 0 (0: the whole batch), got {self.replay_batch_size}")
        if not 0 <= self.eps_low < 1 or not self.eps_high >= 0:  # the ratio's clip range [1 - eps_low, 1 + eps_high]
            raise ConfigError(f"eps_low must be in [0, 1) and eps_high >= 0, got {self.eps_low} and {self.eps_high}")
        if self.group_size < 2:
            raise ConfigError("group_size must be at least 2 (advantages compare completions of a prompt)")
        if not (self.train_base or self.train_planner):
            raise ConfigError("nothing to train: train_base and train_planner are both false")
        if self.planner_lr is not None and not 0 < self.planner_lr < float("inf"):
            raise ConfigError(f"planner_lr must be a finite number > 0 (train_planner false freezes the head), "
                              f"got {self.planner_lr}")
        check_temperature(self.temperature)
        check_cache(self.cache)
        if self.sandbox_url is not None:
            from dultra.rewards.sandbox_client import check_url

            check_url(self.sandbox_url)
        if self.cache != "none" and self.replay_batch_size and self.train_base:
            raise ConfigError("a cached replay follows the rollout's blocks over the whole batch: "
                              "set replay_batch_size to 0 (or use gradient_checkpointing to save memory)")
