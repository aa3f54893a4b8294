"""Training stages on tiny models: what changes, exact resume, the losses against references."""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import signal
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from dultra.configio import load_config
from dultra.data import generate, write_examples
from dultra.decoding import DecodeConfig, Threshold, replay
from dultra.decoding.generate import check_settings
from dultra.decoding.rules import factor_rule
from dultra.errors import CheckpointError, ConfigError, DataError
from dultra.model.loading import load_model
from dultra.rewards import RewardConfig, RewardWeights
from dultra.rl.checkpoint import load_checkpoint
from dultra.rl.config import OptimConfig, PretrainConfig, TrainConfig, WarmstartConfig
from dultra.rl.data import ExampleStream
from dultra.rl.grpo import clipped_objective, kl_penalty, sequence_log_ratio
from dultra.rl.logger import MetricsLogger, read_metrics
from dultra.rl.pretrain import masked_diffusion_loss, pretrain
from dultra.rl.rollout import rollout
from dultra.rl.supervised import decay_groups, step_generator, step_seed
from dultra.rl.trainer import (
    DivergedError,
    GRPOTrainer,
    OffPolicyError,
    kept_component_sums,
)
from dultra.rl.warmstart import random_states, warmstart, warmstart_loss
from dultra.signals import Terminated, raise_terminated
from tests.helpers import MASK, free_port, save_small_checkpoint, small_model

NO_TEACHER = RewardConfig(math=RewardWeights(distill=0.0, steps=0.1))  # steps: the frozen-planner case still has a reward spread


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small", tiny_tokenizer)


def _grpo(checkpoint, out, **kw):
    base = dict(model=str(checkpoint), output_dir=str(out), steps=2, prompts_per_step=2, group_size=4,
                gen_length=32, block_length=8, train_size=40, save_every=0, rewards=NO_TEACHER,
                optim=OptimConfig(lr=1e-3))
    return TrainConfig(**{**base, **kw})


def _changed(before, after_dir):
    after = load_model(after_dir).state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def _split(keys):
    base = {k for k in keys if k.startswith("model.")}
    return base, set(keys) - base


@pytest.mark.parametrize("train_base, train_planner", [(True, True), (False, True), (True, False)])
def test_grpo_step_changes_exactly_the_trainable_parts(checkpoint, tmp_path, train_base, train_planner):
    before = load_model(checkpoint).state_dict()
    cfg = _grpo(checkpoint, tmp_path, steps=1, train_base=train_base, train_planner=train_planner)
    final = GRPOTrainer(cfg).train()
    base, head = _split(_changed(before, final))
    all_base, all_head = _split(before)
    assert (base == all_base) if train_base else not base
    assert (head == all_head) if train_planner else not head
    row = read_metrics(tmp_path)[0]
    assert row["onpolicy/max_abs_log_ratio"] <= 1e-5
    for key in ("reward/total", "accuracy", "nfe", "tpf", "completion_length",
                "clip_fraction", "frac_reward_zero_std", "lr", "seconds/rollout", "seconds/reward", "seconds/update"):
        assert key in row


def test_the_default_rewards_train_without_a_teacher(checkpoint, tmp_path, capsys):
    GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1, rewards=RewardConfig())).train()
    assert "train: no teacher, so no distill reward" in capsys.readouterr().out
    saved = json.loads((tmp_path / "final" / "dultra_training.json").read_text())["config"]["rewards"]["math"]
    assert (saved["distill"], saved["steps"]) == (0.0, 0.1)  # what was used, not "unset"


def test_planner_lr_applies_to_the_head_only(checkpoint, tmp_path):
    trainer = GRPOTrainer(_grpo(checkpoint, tmp_path, planner_lr=5e-2))
    head = {id(p) for p in trainer.model.planner_parameters()}
    lrs = {("head" if id(p) in head else "base", g["lr"]) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lrs == {("base", 1e-3), ("head", 5e-2)}
    # Without it, both parts share optim.lr, as in the reference.
    trainer = GRPOTrainer(_grpo(checkpoint, tmp_path / "shared"))
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {1e-3}


def _assert_same_run(straight, resumed, steps):
    """An interrupted and resumed run logged the uninterrupted one's metrics and ended with its weights."""
    a_rows, b_rows = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in b_rows] == list(range(1, steps + 1))
    for a, b in zip(a_rows, b_rows, strict=True):
        assert {k: v for k, v in a.items() if not k.startswith("seconds")} == \
               {k: v for k, v in b.items() if not k.startswith("seconds")}
    assert _changed(load_model(straight / "final").state_dict(), resumed / "final") == set()


def test_grpo_resume_matches_an_uninterrupted_run(checkpoint, tmp_path, capsys):
    GRPOTrainer(_grpo(checkpoint, tmp_path / "straight", steps=4)).train()
    cfg = _grpo(checkpoint, tmp_path / "resumed", steps=4, save_every=2)
    trainer = GRPOTrainer(cfg)
    real = trainer.train_step

    def stopped_in_step_4(step):
        if step == 3:
            raise KeyboardInterrupt  # Ctrl-C after the step-2 checkpoint and step 3
        return real(step)

    trainer.train_step = stopped_in_step_4
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    said = capsys.readouterr().out
    assert f"train: interrupted after step 3; the newest checkpoint is {tmp_path / 'resumed' / 'checkpoints'}" \
           "/step-00000002 (step 2): --resume true continues from it" in said
    GRPOTrainer(replace(cfg, resume=True)).train()  # as a fresh process would, with --resume
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed", steps=4)


def _signalled(trainer, in_step: int, *signals: int) -> None:
    """Send `signals` to this process while `trainer` runs step `in_step` (0-based), as
    Kubernetes preempting the pod or Ctrl-C would."""
    real = trainer.train_step

    def step_fn(step):
        if step == in_step:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return real(step)

    trainer.train_step = step_fn


@pytest.mark.parametrize("signum, tty", [(signal.SIGTERM, False), (signal.SIGINT, True)])  # tty: a tqdm bar
def test_a_signal_during_a_step_finishes_it_saves_it_and_the_resume_matches(checkpoint, tmp_path, capsys, monkeypatch,
                                                                             signum, tty):
    # No periodic checkpoints (save_every=0): all a stop keeps is what it saves itself.
    GRPOTrainer(_grpo(checkpoint, tmp_path / "straight", steps=4)).train()
    cfg = _grpo(checkpoint, tmp_path / "resumed", steps=4)
    trainer = GRPOTrainer(cfg)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    _signalled(trainer, 1, signum)
    previous = signal.signal(signal.SIGTERM, raise_terminated)  # as `dultra train` runs
    try:
        with pytest.raises(Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
            trainer.train()
        # The handlers are given back.
        assert signal.getsignal(signal.SIGTERM) is raise_terminated
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    said = capsys.readouterr()
    assert "train: stopping after this step, with a checkpoint" in said.err
    assert f"train: interrupted after step 2; the newest checkpoint is {tmp_path / 'resumed' / 'checkpoints'}" \
           "/step-00000002 (step 2)" in said.out
    GRPOTrainer(replace(cfg, resume=True)).train()
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed", steps=4)
    # The stop's checkpoint outlives the finished run: extending from it would redo steps 3-4.
    with pytest.raises(ConfigError, match=r"final was trained 4 steps, past the newest checkpoint .*step-00000002 "
                                          r"\(step 2\): a resume from it would redo steps 3-4"):
        GRPOTrainer(replace(cfg, resume=True, steps=6))


def test_a_signal_in_the_last_step_lets_the_run_finish(checkpoint, tmp_path, capsys):
    trainer = GRPOTrainer(_grpo(checkpoint, tmp_path, steps=2))
    _signalled(trainer, 1, signal.SIGINT)
    final = trainer.train()  # no interrupt: only the final model was left to save
    assert json.loads((final / "dultra_training.json").read_text())["steps"] == 2
    assert not (tmp_path / "checkpoints").exists() and "interrupted" not in capsys.readouterr().out


def test_a_second_signal_stops_at_once_without_a_checkpoint(checkpoint, tmp_path, capsys):
    trainer = GRPOTrainer(_grpo(checkpoint, tmp_path, steps=4))
    _signalled(trainer, 1, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert "interrupted after step 1; no checkpoint was saved" in capsys.readouterr().out
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_resuming_a_finished_run_does_nothing_and_changed_settings_are_refused(checkpoint, tmp_path, capsys):
    cfg = _grpo(checkpoint, tmp_path, steps=2, save_every=1)
    final = GRPOTrainer(cfg).train()
    weights = (final / "model.safetensors").read_bytes()
    record = json.loads((final / "dultra_training.json").read_text())
    assert (record["stage"], record["steps"], record["config"]["group_size"]) == ("grpo", 2, cfg.group_size)
    capsys.readouterr()
    assert GRPOTrainer(replace(cfg, resume=True)).train() == final  # a retried pipeline step, say
    assert "already holds this run's model (2 steps): nothing to resume" in capsys.readouterr().out
    assert (final / "model.safetensors").read_bytes() == weights and len(read_metrics(tmp_path)) == 2
    # The optimizer and schedule come from the checkpoint: a resume cannot change what is trained.
    with pytest.raises(ConfigError, match=r"step-00000002 was saved with other settings \(group_size, optim.lr\)"):
        GRPOTrainer(replace(cfg, resume=True, group_size=cfg.group_size + 2, optim=OptimConfig(lr=0.1)))
    # The last step is checkpointed (step 2 here, with save_every 3): extending continues from it.
    extended = replace(cfg, save_every=3, output_dir=str(tmp_path / "extended"))
    GRPOTrainer(extended).train()
    assert sorted(p.name for p in (tmp_path / "extended" / "checkpoints").iterdir()) == ["step-00000002"]
    capsys.readouterr()
    GRPOTrainer(replace(extended, resume=True, steps=3, gradient_checkpointing=True, replay_batch_size=2)).train()
    checkpoints = tmp_path / "extended" / "checkpoints"
    assert f"train: resumed from {checkpoints / 'step-00000002'} at step 2" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "extended")] == [1, 2, 3]
    assert json.loads((tmp_path / "extended" / "final" / "dultra_training.json").read_text())["steps"] == 3
    # A resume never shortens a run: the 3-step model would be recorded as 2 steps.
    with pytest.raises(ConfigError, match=r"step-00000003 is at step 3, past steps=2: .* pass steps >= 3"):
        GRPOTrainer(replace(extended, resume=True, steps=2))
    unsaved = replace(cfg, save_every=0, output_dir=str(tmp_path / "unsaved"))
    GRPOTrainer(unsaved).train()
    with pytest.raises(ConfigError, match="no checkpoint is kept to continue it"):  # extending needs one
        GRPOTrainer(replace(unsaved, resume=True, steps=3))
    # Another stage's finished model with the same settings is not this run's.
    record = tmp_path / "unsaved" / "final" / "dultra_training.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "stage": "warmstart"}))
    with pytest.raises(ConfigError, match="holds a warmstart run's model"):
        GRPOTrainer(replace(unsaved, resume=True))


def test_a_save_removes_what_a_killed_save_left(checkpoint, tmp_path):
    cfg = _grpo(checkpoint, tmp_path, steps=2, save_every=1)
    stale = tmp_path / "checkpoints" / ".tmp-step-00000007" / "model.safetensors"  # a save killed at step 7
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    GRPOTrainer(cfg).train()  # a fresh run: a temporary is no checkpoint
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]


def test_resuming_with_another_architecture_is_one_clear_error(tmp_path):
    cfg = PretrainConfig(model="tiny:n_layers=1", tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                         steps=1, batch_size=4, gen_length=16, save_every=1)
    pretrain(cfg)
    with pytest.raises(CheckpointError, match=r"step-00000001 does not fit this run's model \(Error\(s\) in loading "
                                              r"state_dict .*Missing key.*resume with the model it was saved with"):
        pretrain(replace(cfg, model="tiny:n_layers=2", resume=True, steps=2))


@pytest.mark.parametrize("damage", ["model.safetensors:truncate", "model.safetensors:empty", "optimizer.bin:empty",
                                    "optimizer.bin:truncate"])
def test_resuming_from_a_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
    cfg = PretrainConfig(model="tiny:n_layers=1", tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                         steps=1, batch_size=4, gen_length=16, save_every=1)
    pretrain(cfg)
    name, how = damage.split(":")
    damaged = tmp_path / "checkpoints" / "step-00000001" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2] if how == "truncate" else b"")
    with pytest.raises(CheckpointError, match=r"step-00000001 is damaged \((SafetensorError|EOFError|RuntimeError): "
                                              r".*\): delete it and resume \(from the checkpoint before it, if "
                                              r"any\), or start afresh in another output_dir$"):
        pretrain(replace(cfg, resume=True, steps=2))


def test_a_run_that_fails_to_start_leaves_no_output_dir(tmp_path):
    cfg = PretrainConfig(model=str(tmp_path / "no-such-model"), tasks="synthetic-math", train_size=40,
                         output_dir=str(tmp_path / "runs" / "pretrain"), steps=1, batch_size=4, gen_length=16)
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        pretrain(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_resume_into_another_stage_s_output_dir_names_the_stage(checkpoint, tmp_path):
    pretrain(PretrainConfig(model="tiny:n_layers=1", tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                            steps=2, batch_size=4, gen_length=16, save_every=1))
    with pytest.raises(ConfigError, match=r"step-0000000\d was saved by a pretrain run, and this is a grpo run: "
                                          r"choose another output_dir"):
        GRPOTrainer(_grpo(checkpoint, tmp_path, resume=True))
    shutil.rmtree(tmp_path / "checkpoints")
    with pytest.raises(ConfigError, match=r"final holds a pretrain run's model and no checkpoint is kept"):
        GRPOTrainer(_grpo(checkpoint, tmp_path, resume=True))


def test_an_output_dir_that_cannot_be_written_fails_before_the_model_loads(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as err:  # not the CheckpointError loading the absent model would raise
        GRPOTrainer(_grpo(tmp_path / "absent-model", tmp_path / "file" / "out"))
    assert err.value.filename is not None and str(tmp_path / "file") in str(err.value.filename)


def test_a_rollout_keeps_each_prompt_s_completions_together(checkpoint, tiny_tokenizer):
    """Completion i answers examples[i // group_size]: the layout the rewards and advantages read."""
    examples = generate("synthetic-math", "train", n=3)
    assert len({e.prompt for e in examples}) == 3
    decode = DecodeConfig(gen_length=8, block_length=8, temperature=1.0, record=True, seed=0)
    out = rollout(load_model(checkpoint), tiny_tokenizer, examples, 2, decode, "cpu").output
    prompts = out.sequences[:, : out.sequences.shape[1] - 8]
    texts = tiny_tokenizer.batch_decode(prompts, skip_special_tokens=True)
    assert [sum(e.prompt in text for e in examples) for text in texts] == [1] * 6
    assert [next(i for i, e in enumerate(examples) if e.prompt in text) for text in texts] == [0, 0, 1, 1, 2, 2]


def test_with_a_kl_term_every_scored_row_is_replayed(checkpoint, tmp_path):
    GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1, beta=0.05, num_iterations=2, replay_batch_size=3)).train()
    row = read_metrics(tmp_path)[0]
    assert row["replayed_rows"] == 8  # 2 prompts x 4, A = 0 rows included: they carry the KL term
    assert math.isfinite(row["clip_fraction"]) and math.isfinite(row["grad_norm"])


def test_the_advantage_settings_reach_the_advantages(checkpoint, tmp_path, monkeypatch):
    import dultra.rl.trainer as trainer_module

    calls = []
    real = trainer_module.group_advantages

    def spy(*args, **kwargs):
        calls.append(inspect.signature(real).bind(*args, **kwargs).arguments)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "group_advantages", spy)
    GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1, scale_rewards=True, advantage_min_clip=0.0)).train()
    assert [(c["group_size"], c["scale_by_std"], c["min_clip"]) for c in calls] == [(4, True, 0.0)]


class _RecordingSGD(torch.optim.SGD):
    """Plain SGD that keeps the gradient of each step and the weights it applied to, so a test
    sees what the trainer applied."""

    def step(self, closure=None):
        params = self.param_groups[0]["params"]
        self.grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        self.history = [*getattr(self, "history", []), ([p.detach().clone() for p in params], self.grads)]
        return super().step(closure)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")  # its optimizer is replaced
def test_grpo_update_is_the_gradient_of_the_clipped_objective_plus_kl(checkpoint, tmp_path):
    """The trainer's step-by-step backward in packs of 3 rows against autograd of the sequence-level loss."""
    cfg = _grpo(checkpoint, tmp_path, gen_length=16, beta=0.05, replay_batch_size=3,
                optim=OptimConfig(lr=1e-3, grad_clip=0.0))
    trainer = GRPOTrainer(cfg)
    model, params = trainer.model, trainer.params
    # At the reference the k3 term has zero gradient: move the policy off it so beta * KL counts.
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    decode = DecodeConfig(gen_length=16, block_length=8, temperature=1.0, record=True, seed=0, eos_ids=trainer.eos_ids)
    traj = rollout(model, trainer.tokenizer, trainer.stream.next(), cfg.group_size, decode, "cpu").output.trajectory
    adv = torch.tensor([1.0, -0.5, 0.0, 0.25, -1.0, 0.5, 0.0, -0.25])  # rows with A = 0 still carry the KL term
    keep = torch.ones(8, dtype=torch.bool)

    norm = adv.numel() * cfg.gen_length
    log_probs = replay(model, traj)
    with torch.no_grad():
        ref = replay(trainer.reference, traj)
    objective = clipped_objective(sequence_log_ratio(log_probs, traj.log_probs), adv, cfg.eps_low, cfg.eps_high)
    loss = objective.sum() / norm + cfg.beta * kl_penalty(log_probs, ref).sum() / norm
    want = torch.autograd.grad(loss, params)
    before = replay(model, traj).detach()

    trainer.optimizer = _RecordingSGD(params, lr=1e-2)
    trainer.update(traj, adv, keep)
    for got, expected in zip(trainer.optimizer.grads, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # The sign convention of the reference itself: descending it makes good completions likelier.
    with torch.no_grad():
        change = replay(model, traj).sum(dim=1) - before.sum(dim=1)
    assert change[0] > 0 and change[4] < 0  # A = +1 and A = -1


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")  # its optimizer is replaced
def test_a_second_iteration_is_the_gradient_of_the_clipped_objective_off_policy(checkpoint, tmp_path):
    """num_iterations = 2: the second update replays a moved policy, whose ratio to the rollout's clips some rows."""
    cfg = _grpo(checkpoint, tmp_path, gen_length=16, num_iterations=2, replay_batch_size=3, eps_low=0.05,
                eps_high=0.05, optim=OptimConfig(lr=1e-3, grad_clip=0.0))
    trainer = GRPOTrainer(cfg)
    model, params = trainer.model, trainer.params
    decode = DecodeConfig(gen_length=16, block_length=8, temperature=1.0, record=True, seed=0, eos_ids=trainer.eos_ids)
    traj = rollout(model, trainer.tokenizer, trainer.stream.next(), cfg.group_size, decode, "cpu").output.trajectory
    adv = torch.tensor([1.0, -0.5, 0.3, 0.25, -1.0, 0.5, -0.7, -0.25])
    trainer.optimizer = _RecordingSGD(params, lr=1.0)
    out = trainer.update(traj, adv, torch.ones(8, dtype=torch.bool))
    weights, grads = trainer.optimizer.history[1]
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)
    ratio = sequence_log_ratio(replay(model, traj), traj.log_probs)
    loss = clipped_objective(ratio, adv, cfg.eps_low, cfg.eps_high).sum() / (adv.numel() * cfg.gen_length)
    want = torch.autograd.grad(loss, params)
    assert 0 < out["clip_fraction"] < 1, out  # both branches of the clip are exercised
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_grpo_with_cached_rollouts_replays_them_on_policy(checkpoint, tmp_path, cache):
    GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1, cache=cache, beta=0.05, num_iterations=2)).train()
    row = read_metrics(tmp_path)[0]
    assert row["onpolicy/max_abs_log_ratio"] <= 1e-5  # the cached replay is the rollout's policy
    assert row["replay_forwards"] >= row["nfe"]  # every step of the batch, block by block


def test_planner_only_grpo_replays_the_heads_on_the_recorded_trunk(checkpoint, tmp_path):
    """With the base frozen even a cached rollout replays in packs of replay_batch_size rows."""
    cfg = _grpo(checkpoint, tmp_path, steps=1, train_base=False, cache="dual", replay_batch_size=3)
    GRPOTrainer(cfg).train()
    row = read_metrics(tmp_path)[0]
    assert row["onpolicy/max_abs_log_ratio"] <= 1e-5
    assert row["replay_forwards"] < row["nfe"] * row["replayed_rows"]  # (row, step) pairs share forwards


@pytest.fixture
def bf16_accelerator():
    """bf16 autocast on the CPU, as `accelerate launch --mixed_precision bf16` on a GPU."""
    AcceleratorState._reset_state(True)  # the state is a process-wide singleton
    yield Accelerator(mixed_precision="bf16", cpu=True)
    AcceleratorState._reset_state(True)


@pytest.fixture
def bf16_checkpoint(tmp_path, tiny_tokenizer):
    """A checkpoint whose values bf16 holds exactly, as the official LLaDA ones."""
    path = save_small_checkpoint(tmp_path / "bf16", tiny_tokenizer)
    load_model(path).to(torch.bfloat16).save_pretrained(path)
    return path


def test_planner_only_stages_under_bf16_store_the_frozen_base_in_bf16(bf16_checkpoint, tmp_path, bf16_accelerator):
    before = load_model(bf16_checkpoint).state_dict()
    trainer = GRPOTrainer(_grpo(bf16_checkpoint, tmp_path, steps=1, train_base=False, beta=0.05), bf16_accelerator)
    linears = [m.weight for m in trainer.model.model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(w.dtype == torch.bfloat16 for w in linears)
    base, head = _split(_changed(before, trainer.train()))
    assert not base and head == _split(before)[1]  # nothing of the base lost in the saved checkpoint
    assert read_metrics(tmp_path)[0]["onpolicy/max_abs_log_ratio"] <= 1e-3  # the trainer's default tolerance
    ws = WarmstartConfig(model=str(bf16_checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path / "ws"),
                         steps=1, batch_size=4, gen_length=48, block_length=16)
    base, head = _split(_changed(before, warmstart(ws, bf16_accelerator)))
    assert not base and head == _split(before)[1]


def test_compiled_rollouts_train_as_eager_ones(checkpoint, tmp_path):
    """Compiled steps keep reading the weights the optimizer updates in place (step 2 sees step 1's
    update); on the CPU nothing is captured, tests/gpu/test_cuda.py checks the CUDA graphs."""
    GRPOTrainer(_grpo(checkpoint, tmp_path / "eager", steps=2, cache="dual")).train()
    GRPOTrainer(_grpo(checkpoint, tmp_path / "compiled", steps=2, cache="dual", compile_rollouts=True)).train()
    for eager, compiled in zip(read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled"), strict=True):
        assert compiled["onpolicy/max_abs_log_ratio"] <= 1e-5
        for key in ("reward/total", "nfe", "completion_length", "accuracy"):
            assert compiled[key] == eager[key], key
        assert compiled["grad_norm"] == pytest.approx(eager["grad_norm"], rel=1e-4)


def test_compiled_rollouts_under_bf16_roll_out_in_the_autocast_the_replay_uses(bf16_checkpoint, tmp_path,
                                                                               bf16_accelerator):
    """Captured steps call the trunk, not the forward accelerate wraps in autocast."""
    cfg = _grpo(bf16_checkpoint, tmp_path, steps=1, compile_rollouts=True, onpolicy_tolerance=1e-4)
    GRPOTrainer(cfg, bf16_accelerator).train()
    assert read_metrics(tmp_path)[0]["onpolicy/max_abs_log_ratio"] <= 1e-4


@pytest.mark.parametrize("overrides, message", [
    ({"cache": "full"}, "unknown cache"),
    ({"cache": "dual", "replay_batch_size": 2}, "replay_batch_size to 0"),
])
def test_cache_settings_the_trainer_refuses(checkpoint, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _grpo(checkpoint, tmp_path, **overrides).validate()


def test_replay_that_disagrees_with_the_rollout_stops_the_run(checkpoint, tmp_path, monkeypatch):
    import dultra.rl.trainer as trainer_module

    sample = trainer_module.rollout

    def then_weights_change(policy, *args, **kwargs):
        out = sample(policy, *args, **kwargs)
        with torch.no_grad():  # the replayed policy is no longer the one that sampled
            for p in policy.parameters():
                p.add_(0.5)
        return out

    monkeypatch.setattr(trainer_module, "rollout", then_weights_change)
    with pytest.raises(OffPolicyError, match="differs from the rollout by .* > onpolicy_tolerance 0.001"):
        GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1)).train()


def test_a_policy_gone_nan_stops_the_run_instead_of_passing_the_on_policy_check(checkpoint, tmp_path, monkeypatch):
    import dultra.rl.trainer as trainer_module

    sample = trainer_module.rollout

    def then_a_weight_is_nan(policy, *args, **kwargs):
        out = sample(policy, *args, **kwargs)
        with torch.no_grad():  # as a diverged update leaves it: the replay's log-probs are NaN
            policy.mask_linear.weight[0, 0] = float("nan")
        return out

    monkeypatch.setattr(trainer_module, "rollout", then_a_weight_is_nan)
    with pytest.raises(OffPolicyError, match="differs from the rollout by nan .*outputs are not finite"):
        GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1)).train()


def test_a_gradient_that_is_not_finite_stops_the_run_before_the_update(checkpoint, tmp_path):
    trainer = GRPOTrainer(_grpo(checkpoint, tmp_path, steps=1))
    weight = trainer.model.mask_linear.weight
    weight.register_hook(lambda grad: grad * float("inf"))
    before = weight.detach().clone()
    with pytest.raises(DivergedError, match="the gradient norm is (nan|inf): training diverged"):
        trainer.train()
    assert torch.equal(weight.detach(), before) and not (tmp_path / "final").exists()


def test_grpo_needs_a_planner_head(tmp_path, tiny_tokenizer):
    path = save_small_checkpoint(tmp_path / "plain", tiny_tokenizer, num_head_layers=0)
    with pytest.raises(ConfigError, match="warmstart"):
        GRPOTrainer(_grpo(path, tmp_path / "out"))


def test_pretrain_changes_the_base_only_and_warmstart_the_head_only(checkpoint, tmp_path):
    before = load_model(checkpoint).state_dict()
    cfg = PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path / "pt"),
                         steps=2, batch_size=4, gen_length=48, save_every=0)
    pt_final = pretrain(cfg)
    base, head = _split(_changed(before, pt_final))
    assert base == _split(before)[0] and not head
    mid = load_model(pt_final).state_dict()
    ws = WarmstartConfig(model=str(pt_final), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path / "ws"),
                         steps=2, batch_size=4, gen_length=48, block_length=16)
    base, head = _split(_changed(mid, warmstart(ws)))
    assert not base and head == _split(mid)[1]


def test_a_prompt_the_context_cannot_hold_is_refused_before_training(checkpoint, tmp_path):
    """It would stop the run at its step, and every resume at the same one."""
    examples = generate("synthetic-math", "train", n=6)
    long = replace(examples[3], id="synthetic-math/train/long", prompt="Compute 1 + 2. " * 100)
    data = write_examples([*examples[:3], long, *examples[4:]], tmp_path / "data.jsonl")
    with pytest.raises(ConfigError, match=r"1 of 6 prompts take more than the 224 tokens the model's context leaves "
                                          r"beside gen_length \(the longest, 'synthetic-math/train/long', \d+\)"):
        GRPOTrainer(_grpo(checkpoint, tmp_path / "out", data=str(data)))
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


@pytest.mark.parametrize("stage", ["pretrain", "warmstart"])
def test_supervised_stages_refuse_a_prompt_the_context_cannot_hold(stage, checkpoint, tmp_path):
    """Their batches ran past max_sequence_length without a word (RoPE extrapolates)."""
    examples = generate("synthetic-math", "train", n=6)
    long = replace(examples[2], id="synthetic-math/train/long", prompt="Compute 1 + 2. " * 100)
    data = write_examples([*examples[:2], long, *examples[3:]], tmp_path / "data.jsonl")
    make, run = {"pretrain": (PretrainConfig, pretrain), "warmstart": (WarmstartConfig, warmstart)}[stage]
    extra = {"block_length": 16} if stage == "warmstart" else {}
    cfg = make(model=str(checkpoint), data=str(data), output_dir=str(tmp_path / "out"), steps=1, batch_size=2,
               gen_length=48, **extra)
    with pytest.raises(ConfigError, match=r"1 of 6 prompts take more than the 208 tokens the model's context "
                                          r"leaves beside gen_length \(the longest, 'synthetic-math/train/long'"):
        run(cfg)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_a_gen_length_that_fills_the_context_is_refused(checkpoint, tmp_path):
    cfg = PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=8, output_dir=str(tmp_path),
                         steps=1, batch_size=2, gen_length=256)
    with pytest.raises(ConfigError, match=r"gen_length \(256\) leaves no room for a prompt in the model's context "
                                          r"\(256\)"):
        pretrain(cfg)


def test_pretrain_refuses_solutions_longer_than_gen_length(checkpoint, tmp_path):
    cfg = PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                         steps=1, batch_size=4, gen_length=8)
    with pytest.raises(ValueError, match="raise gen_length"):
        pretrain(cfg)


def test_masked_diffusion_loss_matches_a_per_row_reference():
    model = small_model()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 60, (3, 5), generator=g)
    targets = torch.randint(0, 60, (3, 12), generator=g)
    loss, _ = masked_diffusion_loss(model, prompt, torch.ones_like(prompt), targets, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = 1e-3 + (1 - 1e-3) * torch.rand(3, generator=g)
    masked = torch.rand(3, 12, generator=g) < t[:, None]
    total = 0.0
    for b in range(3):
        x = torch.cat([prompt[b], torch.where(masked[b], MASK, targets[b])])
        logits = model(x[None]).logits[0, 5:]
        for j in range(12):
            if masked[b, j]:
                total += F.cross_entropy(logits[j], targets[b, j]) / t[b]
    assert torch.allclose(loss, total / 36, atol=1e-5)


def test_random_states_reveal_the_past_and_mask_the_future():
    targets = torch.arange(48).view(2, 24) % 50
    state, start = random_states(targets, 8, MASK, torch.Generator().manual_seed(0))
    for b in range(2):
        s = int(start[b])
        assert torch.equal(state[b, :s], targets[b, :s])
        assert (state[b, s + 8:] == MASK).all()
        assert (state[b, s:s + 8] == MASK).any()


@pytest.mark.parametrize("official", [False, True])
def test_warmstart_loss_is_balanced_bce_against_the_factor_rule(official):
    """`official` labels with Fast-dLLM's code version of the rule (the reference's labels)."""
    model = small_model()
    prompt = torch.randint(0, 60, (8, 6), generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, 60, (8, 16), generator=torch.Generator().manual_seed(3))
    loss, metrics = warmstart_loss(model, prompt, torch.ones_like(prompt), targets, 8, 1.0,
                                   torch.Generator().manual_seed(4), official=official)
    state, start = random_states(targets, 8, MASK, torch.Generator().manual_seed(4))
    x = torch.cat([prompt, state], dim=1)
    index = 6 + start[:, None] + torch.arange(8)
    cand = x.gather(1, index) == MASK
    out = model(x, logits_index=index, planner_t=1 - (x == MASK).sum(1) / 22.0,
                planner_mask=torch.zeros_like(x, dtype=torch.bool).scatter(1, index, cand))
    logits = out.logits.float()
    logits[..., MASK] = float("-inf")
    labels = factor_rule(logits.softmax(-1).amax(-1), cand, 1.0, official)
    assert metrics["warmstart/rule_k"] == pytest.approx(labels.sum(1).float().mean().item())
    y, z = labels[cand].float(), out.planner_logits[cand]
    pw = (y.numel() - y.sum()) / y.sum()
    want = -(pw * y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()
    assert torch.allclose(loss, want, atol=1e-5)
    assert 0 < metrics["warmstart/label_rate"] <= 1


def test_an_unreachable_sandbox_fails_before_the_model_loads(tmp_path):
    cfg = _grpo(tmp_path / "not-loaded", tmp_path, tasks="synthetic-code", sandbox_url=f"http://127.0.0.1:{free_port()}",
                rewards=RewardConfig(code=RewardWeights(correct=3.0, distill=0.0)))
    with pytest.raises(ConfigError, match="unreachable"):
        GRPOTrainer(cfg)


@pytest.mark.parametrize("overrides, message", [
    ({"block_length": 0}, "block_length must be > 0, got 0"),
    ({"num_iterations": 0}, "num_iterations must be >= 1"),
    ({"replay_batch_size": -1}, "replay_batch_size must be >= 0"),
    ({"eps_low": 1.0}, "eps_low must be in"),
    ({"eps_high": -0.1}, "eps_high >= 0"),
    ({"eps_high": float("nan")}, "eps_high >= 0"),  # was silently no upper clip
    ({"planner_lr": -1.0}, "planner_lr must be a finite number > 0"),  # -1 trained the head uphill
    ({"planner_lr": 0.0}, "planner_lr must be a finite number > 0"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"steps": 0}, "steps must be >= 1, got 0"),  # 0 saved an untrained model as the final one
    ({"save_every": -1}, "save_every must be >= 0"),
    ({"prompts_per_step": 0}, "prompts_per_step must be >= 1, got 0"),
    ({"beta": -1.0}, "beta .* must be >= 0"),
    ({"train_size": -5}, "train_size must be >= 1, got -5"),  # said "limit must be >= 0"
    ({"onpolicy_tolerance": -1.0}, "onpolicy_tolerance must be a number >= 0"),  # failed after the first rollout
    ({"advantage_min_clip": float("nan")}, "advantage_min_clip must be a number"),  # was silently no clip
])
def test_settings_the_trainer_refuses(checkpoint, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _grpo(checkpoint, tmp_path, **overrides).validate()


def test_unknown_lr_schedules_and_zero_block_lengths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="optim.schedule must be one of constant, cosine, got 'cosin'"):
        load_config(TrainConfig, overrides={"optim.schedule": "cosin"})
    with pytest.raises(ConfigError, match="optim.warmup_steps must be >= 0"):
        OptimConfig(warmup_steps=-1)
    for bad, message in [({"lr": -1.0}, "optim.lr must be"), ({"betas": (0.9, 1.5)}, "optim.betas must be"),
                         ({"weight_decay": -1.0}, "optim.weight_decay must be"), ({"grad_clip": -1.0}, "grad_clip")]:
        with pytest.raises(ConfigError, match=message):
            OptimConfig(**bad)
    ws = WarmstartConfig(model="not-loaded", output_dir=str(tmp_path), block_length=0)
    with pytest.raises(ConfigError, match="block_length must be > 0"):
        warmstart(ws)
    for bad, message in [({"factor": -1.0}, "factor must be a finite number > 0"), ({"steps": -1}, "steps must be >= 1"),
                         ({"batch_size": 0}, "batch_size must be >= 1")]:
        with pytest.raises(ConfigError, match=message):  # before loading the model
            warmstart(WarmstartConfig(model="not-loaded", output_dir=str(tmp_path), **bad))
    for bad, message in [({"mask_eps": 2.0}, r"mask_eps .* must be in \(0, 1\]"), ({"mask_eps": -1.0}, "mask_eps"),
                         ({"steps": 0}, "steps must be >= 1"), ({"save_every": -1}, "save_every must be >= 0"),
                         ({"gen_length": 0}, "gen_length must be > 0, got 0")]:
        with pytest.raises(ConfigError, match=message):
            pretrain(PretrainConfig(model="not-loaded", output_dir=str(tmp_path), **bad))


def test_lr_schedule_spans_every_update_of_several_iterations(checkpoint, tmp_path):
    """2 steps x 2 iterations: the cosine is half way after the first step's two updates."""
    cfg = _grpo(checkpoint, tmp_path, num_iterations=2, optim=OptimConfig(lr=1e-3, schedule="cosine"))
    GRPOTrainer(cfg).train()
    lrs = [row["lr"] for row in read_metrics(tmp_path)]
    assert lrs == pytest.approx([1e-3 * (0.1 + 0.9 * 0.5), 1e-3 * 0.1])


def test_supervised_resume_restores_the_lr_schedule(checkpoint, tmp_path):
    def run(out, steps, **kw):
        return pretrain(PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(out),
                                       steps=steps, batch_size=4, gen_length=48, save_every=2,
                                       optim=OptimConfig(lr=1e-3, warmup_steps=2, schedule="cosine"), **kw))

    run(tmp_path, 4)  # checkpoints step 2
    straight = [r["lr"] for r in read_metrics(tmp_path)]
    cosine = [0.1 + 0.45 * (1 + math.cos(math.pi * p)) for p in (0, 0.5, 1)]
    assert straight == pytest.approx([1e-3 * f for f in [1.0, *cosine]])
    assert (tmp_path / "checkpoints" / "step-00000002" / "custom_checkpoint_0.pkl").exists()
    shutil.rmtree(tmp_path / "final")  # killed before its final model was saved
    run(tmp_path, 4, resume=True)  # steps 3 and 4 again, from the restored schedule
    assert [r["lr"] for r in read_metrics(tmp_path)] == straight
    # Batches count per process: a resume on another number of them changed the global batch.
    state = tmp_path / "checkpoints" / "step-00000004" / "trainer_state.json"
    assert json.loads(state.read_text())["processes"] == 1
    state.write_text(json.dumps(json.loads(state.read_text()) | {"processes": 2}))
    with pytest.raises(ConfigError, match="was saved by a run on 2 processes and this one has 1: .* resume it on 2 "
                                          "processes"):
        run(tmp_path, 6, resume=True)


def _earlier_run(out):
    step = out / "checkpoints" / "step-00000100"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text('{"step": 100, "data": {}}')
    return step


@pytest.mark.parametrize("text", ["{bad", "[]", '{"data": {}}'])
def test_a_damaged_trainer_state_is_one_clear_error(tmp_path, text):
    step = _earlier_run(tmp_path)
    (step / "trainer_state.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"step-00000100/trainer_state.json is damaged .* remove "):
        GRPOTrainer(_grpo(tmp_path / "not-loaded", tmp_path, resume=True))


def test_step_seeds_of_any_config_seed_seed_a_generator_and_a_decode():
    assert step_seed(3, 7, 1) == (3 * 1_000_003 + 7) * 101 + 1  # the seeds runs so far were made with
    assert step_seed(-3, 7, 1) == (-3 * 1_000_003 + 7) * 101 + 1
    for seed in (0, 2**40, 2**63 - 1, 10**30, -(10**30)):  # 2**40 and up overflowed torch's 64 bits
        assert 0 <= step_seed(seed, 9, 3) < 2**64
        step_generator(seed, 9, 3)
        ExampleStream(generate("synthetic-math", "train", n=4), batch_size=2, seed=seed).next()
        check_settings(DecodeConfig(gen_length=8, block_length=8, seed=step_seed(seed, 9, 3)), Threshold(0.5))
    # 101 processes and more (13 nodes of 8 GPUs) drew another step's seeds: (0, 0, 101) was (0, 1, 0)'s.
    seeds = {step_seed(0, step, rank) for step in range(6) for rank in range(256)}
    assert len(seeds) == 6 * 256


def test_weight_decay_spares_biases_and_norm_gains_as_the_reference_trainer():
    model = small_model()
    groups = decay_groups(model.named_parameters(), 0.1, lr=1e-3)
    name = {id(p): n for n, p in model.named_parameters()}
    spared = sorted(name[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"])
    assert spared and all(".bias" in n or "_norm." in n for n in spared)
    assert {"model.transformer.blocks.0.attn_norm.weight", "mask_linear.bias"} <= set(spared)
    decayed = {name[id(p)] for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert {"model.transformer.ln_f.weight", "model.transformer.wte.weight", "mask_linear.weight"} <= decayed
    assert len(spared) + len(decayed) == len(name) and all(g["lr"] == 1e-3 for g in groups)
    assert len(decay_groups(model.named_parameters(), 0.0)) == 1  # the layout of older checkpoints
    opt = torch.optim.AdamW(groups)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    assert all(torch.equal(before[n], p) == (n in spared) for n, p in model.named_parameters())


def test_optimizer_state_of_other_parameter_groups_is_a_clear_error(checkpoint, tmp_path, monkeypatch):
    import dultra.rl.supervised as supervised

    cfg = PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                         steps=1, batch_size=4, gen_length=48, optim=OptimConfig(weight_decay=0.1))
    real = supervised.decay_groups
    monkeypatch.setattr(supervised, "decay_groups", lambda named, decay: [{"params": [p for _, p in named]}])
    pretrain(cfg)  # one group, as dultra before the split saved it
    monkeypatch.setattr(supervised, "decay_groups", real)
    with pytest.raises(CheckpointError, match="other parameter groups than this run's"):
        pretrain(replace(cfg, steps=2, resume=True))


def test_a_fresh_run_refuses_an_output_dir_with_checkpoints(checkpoint, tmp_path):
    step = _earlier_run(tmp_path)
    with pytest.raises(ConfigError, match="step-00000100.*pass --resume true"):
        GRPOTrainer(_grpo(tmp_path / "not-loaded", tmp_path))  # before loading the model
    cfg = PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                         steps=1, batch_size=4, gen_length=48)
    with pytest.raises(ConfigError, match="pass --resume true"):
        pretrain(cfg)
    assert (step / "trainer_state.json").exists()  # nothing deleted


def test_a_fresh_run_refuses_a_finished_runs_final_model(checkpoint, tmp_path):
    """No step checkpoint is kept (save_every 0), so only final/ says a run finished there."""
    cfg = PretrainConfig(model=str(checkpoint), tasks="synthetic-math", train_size=40, output_dir=str(tmp_path),
                         steps=1, batch_size=4, gen_length=48, save_every=0)
    final = pretrain(cfg)
    assert final == tmp_path / "final" and (final / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    weights = (final / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="final holds the model of an earlier, finished run"):
        pretrain(cfg)
    with pytest.raises(ConfigError, match="final holds the model"):
        GRPOTrainer(_grpo(tmp_path / "not-loaded", tmp_path))  # before loading the model
    with pytest.raises(ConfigError, match="final holds the model"):  # all three stages
        pretrain(replace(cfg, model=str(tmp_path / "not-loaded")))
    with pytest.raises(ConfigError, match="final holds the model"):
        warmstart(WarmstartConfig(model=str(tmp_path / "not-loaded"), output_dir=str(tmp_path)))
    assert (final / "model.safetensors").read_bytes() == weights


def test_checkpoints_with_the_old_scheduler_layout_are_refused(tmp_path):
    step = _earlier_run(tmp_path)
    (step / "scheduler.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="older dultra"):
        load_checkpoint(None, step)


def test_a_task_kind_weighting_distill_without_a_teacher_fails_before_loading(tmp_path):
    rewards = RewardConfig(math=RewardWeights(distill=0.0), code=RewardWeights(correct=3.0, distill=1.0))
    cfg = _grpo(tmp_path / "not-loaded", tmp_path, tasks="synthetic-math,synthetic-code", rewards=rewards)
    with pytest.raises(ConfigError, match="rewards.code.distill is 1.0 but no teacher is set"):
        GRPOTrainer(cfg)


@pytest.mark.parametrize("rewards, message", [
    (dict(max_unscorable_fraction=2.0), r"max_unscorable_fraction must be in \[0, 1\], got 2.0"),
    (dict(max_unscorable_fraction=float("nan")), r"max_unscorable_fraction must be in \[0, 1\], got nan"),
    (dict(code_workers=0), "code_workers must be >= 1, got 0"),
])
def test_reward_settings_are_refused_before_loading(tmp_path, rewards, message):  # were refused after a rollout
    with pytest.raises(ConfigError, match=message):
        GRPOTrainer(_grpo(tmp_path / "not-loaded", tmp_path, rewards=replace(NO_TEACHER, **rewards)))


def test_one_teacher_for_math_and_code_is_named_before_loading(tmp_path, capsys):
    for tasks, warned in (("synthetic-math,synthetic-code", True), ("synthetic-math", False)):
        cfg = _grpo(tmp_path / "not-loaded", tmp_path / tasks, tasks=tasks, teacher="./qwen-math",
                    rewards=RewardConfig())
        with pytest.raises(CheckpointError, match="no checkpoint directory"):  # the model, after the warning
            GRPOTrainer(cfg)
        said = "one teacher (./qwen-math) scores the distill reward of every task kind (code, math)"
        assert (said in capsys.readouterr().out) == warned


def test_resuming_on_a_changed_training_set_is_a_data_error():
    examples = generate("synthetic-math", "train", n=10)
    stream = ExampleStream(examples, batch_size=4)
    for _ in range(2):
        stream.next()
    state = stream.state()
    for smaller in (ExampleStream(examples[:6], 4), ExampleStream(examples[:9], 4)):
        with pytest.raises(DataError, match="training set changed since the checkpoint \\(it had 10 examples, now"):
            smaller.load_state(state)
    legacy = {"epoch": 0, "index": 8}  # saved before the size was
    with pytest.raises(DataError, match="it had at least 8, now 6"):
        ExampleStream(examples[:6], 4).load_state(legacy)
    others = generate("synthetic-math", "test", n=10)  # another split: as many examples, other ones
    with pytest.raises(DataError, match="training set changed since the checkpoint \\(other examples, 10 as before"):
        ExampleStream(others, 4).load_state(state)
    reordered = [examples[1], examples[0], *examples[2:]]
    with pytest.raises(DataError, match="other examples"):
        ExampleStream(reordered, 4).load_state(state)
    ExampleStream(others, 4).load_state({k: v for k, v in state.items() if k != "fingerprint"})  # saved before it
    resumed = ExampleStream(examples, 4)
    resumed.load_state(state)
    assert resumed.next() == stream.next()


def test_metrics_of_a_run_killed_mid_write_resume(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lr": 0.1}\n{"step": 2, "lr": 0.2}\n{"step": 3, "l')
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        logger = MetricsLogger(tmp_path, resume_step=2)
    logger.log(3, {"lr": 0.3})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_warmstart_factor_official_is_a_config_setting():
    assert WarmstartConfig().factor_official is False
    assert load_config(WarmstartConfig, overrides={"factor_official": True}).factor_official is True


def test_a_frozen_planner_gets_no_step_reward_unless_one_is_set(checkpoint, tmp_path, capsys):
    """As the reference: the step count of a planner that does not learn is not rewarded."""
    rewards = RewardConfig(math=RewardWeights(distill=0.0))
    cfg = _grpo(checkpoint, tmp_path / "a", rewards=rewards, train_planner=False)
    frozen = GRPOTrainer(cfg)
    assert frozen.cfg.rewards.math.steps == 0.0 and frozen.scorer.config.math.steps == 0.0
    assert cfg.rewards.math.steps is None  # the caller's config is left as given
    assert "steps reward weight 0.0 (math), the planner is frozen" in capsys.readouterr().out  # math only here
    trained = GRPOTrainer(_grpo(checkpoint, tmp_path / "b", rewards=rewards))
    assert trained.cfg.rewards.math.steps == 0.1 and trained.scorer.config.code.steps == 0.1
    explicit = RewardConfig(math=RewardWeights(distill=0.0, steps=0.3))
    kept = GRPOTrainer(_grpo(checkpoint, tmp_path / "c", rewards=explicit, train_planner=False))
    assert kept.cfg.rewards.math.steps == 0.3 and kept.scorer.config.math.steps == 0.3


def test_reward_component_means_skip_dropped_samples():
    # Sample 1's sandbox failed (correct None): it was dropped, so its format 1.0 does not count.
    components = {"correct": [1.0, None, 0.0, 1.0], "format": [1.0, 1.0, 0.0, 1.0], "distill": [None] * 4}
    sums = kept_component_sums(components, [True, False, True, True])
    assert sums == {"correct": (2.0, 3), "format": (2.0, 3), "distill": (0.0, 0)}
    assert all(total <= n for total, n in sums.values())  # a mean of 0/1 scores stays within [0, 1]
