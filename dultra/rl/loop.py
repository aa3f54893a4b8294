"""The step loop of every training stage: resume, log, checkpoint, finish.

    final = run_steps(accelerator, "pretrain", "pretrain", cfg, stream, config, checkpoint,
                      step_fn, shown, model, tokenizer)

step_fn(step) -> metrics runs one step; shown(metrics) -> what the progress bar shows. A Ctrl-C
or SIGTERM during a step lets it finish, saves a checkpoint, then interrupts (dultra.signals).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator

from dultra.progress import progress
from dultra.rl.checkpoint import (
    checkpoint_due,
    load_checkpoint,
    save_checkpoint,
    save_final,
    stopped_by_user,
)
from dultra.rl.data import ExampleStream
from dultra.rl.logger import MetricsLogger
from dultra.signals import graceful_stop, stop_exception


def run_steps(accelerator: Accelerator, name: str, stage: str, cfg, stream: ExampleStream, config: dict,
              checkpoint: Path | None, step_fn: Callable[[int], dict[str, float]],
              shown: Callable[[dict[str, float]], dict[str, str]], model: torch.nn.Module, tokenizer) -> Path:
    """Steps from `checkpoint`'s (else 0) to cfg.steps, each logged to OUTPUT_DIR/metrics.jsonl
    and checkpointed when due; returns OUTPUT_DIR/final. `name` prefixes messages, `stage`
    names the progress bar and the final model's record. cfg needs steps, save_every, output_dir."""
    start = 0
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        start = state["step"]
        stream.load_state(state["data"])
        accelerator.print(f"{name}: resumed from {checkpoint} at step {start}")
    logger = MetricsLogger(cfg.output_dir, enabled=accelerator.is_main_process, resume_step=start)
    accelerator.print(f"{name}: config {config}")
    bar = progress(range(start, cfg.steps), desc=stage, total=cfg.steps, initial=start, unit="step",
                   enabled=accelerator.is_local_main_process)
    done = start
    with stopped_by_user(accelerator, name, cfg.output_dir, bar, lambda: done), \
            graceful_stop(name, announce=accelerator.is_main_process) as stop:
        for step in bar:
            metrics = step_fn(step)
            done = step + 1
            logger.log(done, metrics)
            bar.set_postfix(**shown(metrics))
            # Ctrl-C or SIGTERM during the step: keep it, then stop. After the last step the run
            # finishes instead (its final model is all a resume would write).
            stopping = done < cfg.steps and stop.agreed(accelerator)  # the signal's number, or 0
            if stopping or checkpoint_due(done, cfg.save_every, cfg.steps):
                save_checkpoint(accelerator, cfg.output_dir, done,
                                {"stage": stage, "data": stream.state(), "config": config,
                                 "processes": accelerator.num_processes})
                # A signal during the save stops here too, not a step later.
                stopping = stopping or (done < cfg.steps and stop.agreed(accelerator))
            if stopping:
                raise stop_exception(stopping)
        logger.close()
        return save_final(accelerator, model, tokenizer, cfg.output_dir,
                          {"stage": stage, "steps": cfg.steps, "config": config})
