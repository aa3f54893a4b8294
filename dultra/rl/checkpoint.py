"""Training checkpoints: everything needed to resume exactly, written atomically.

    OUTPUT_DIR/checkpoints/step-00000040/   accelerate state (model, optimizer, RNG; the LR
                                            scheduler as custom_checkpoint_0.pkl)
                                            + trainer_state.json (step, data position, config)
    OUTPUT_DIR/final/                       the model as a checkpoint `dultra generate --model` loads,
                                            + dultra_training.json (stage, steps, config)

A checkpoint directory appears under its final name only once complete (written to a
temporary name, then renamed), so a run killed mid-save resumes from the previous one.
A fresh run (no resume) refuses an output_dir that holds checkpoints: rotation would delete
its own first checkpoints before the old run's, and a later resume would pick the old run's.
It refuses a finished run's final/ too, which it would overwrite. A resumed run continues
only with the settings it was saved with (RESUMABLE ones aside) and never past its `steps`;
resuming a run of the same stage that finished with these very settings does nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors import SafetensorError

from dultra.configio import changed_settings
from dultra.errors import CheckpointError, ConfigError, first_line
from dultra.model.loading import TRAINING_RECORD, training_record

STATE_FILE = "trainer_state.json"
FINAL = "final"  # OUTPUT_DIR/final: the trained model
# Settings a resumed run may change: `steps` extends a run; the others say where things are,
# or how memory is spent (the same gradients up to the order of float sums: the remedies
# for running out of it), not what is trained.
RESUMABLE = ("resume", "steps", "save_every", "output_dir", "model", "data", "sandbox_url",
             "gradient_checkpointing", "replay_batch_size")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_due(step: int, save_every: int, steps: int) -> bool:
    """Whether `step` (1-based, just done) is checkpointed: every save_every-th and, so that a
    finished run extends (more steps, --resume true) from where it ended, the last."""
    return save_every > 0 and (step % save_every == 0 or step == steps)


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Save the accelerate state plus `state` (JSON) as step-N; keep the newest `keep`."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        for stale in root.glob(".tmp-step-*"):  # this step's, or one a killed save left
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    done = sorted(p for p in checkpoint_root(output_dir).glob("step-*") if (p / STATE_FILE).exists())
    return done[-1] if done else None


def read_state(directory: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json ({"step", "stage", "data", "config", "processes"})."""
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step number")
    except ValueError as err:
        raise CheckpointError(f"{directory / STATE_FILE} is damaged ({err}): remove {directory} to resume from "
                              "the checkpoint before it") from None
    return state


def start_point(accelerator: Accelerator, name: str, stage: str, output_dir: str | Path, resume: bool,
                config: dict[str, Any]) -> tuple[Path | None, Path | None]:
    """(finished, checkpoint) of a `stage` run with `config`: OUTPUT_DIR/final when resuming a
    run of that stage that finished with these very settings (nothing to train), else the
    checkpoint to continue from (None: start afresh). Refusals as in resume_checkpoint; an
    output_dir that cannot be written fails here, before any model is loaded."""
    final = Path(output_dir) / FINAL
    done = training_record(final)
    if resume and done and done.get("stage") == stage and done.get("steps") == config.get("steps") \
            and not changed_settings(done.get("config", {}), config, RESUMABLE):
        accelerator.print(f"{name}: {final} already holds this run's model ({config.get('steps')} steps): "
                          "nothing to resume")
        return final, None
    checkpoint = resume_checkpoint(output_dir, resume, config, stage)
    saved_on = read_state(checkpoint).get("processes") if checkpoint else None  # older checkpoints do not say
    if saved_on not in (None, accelerator.num_processes):  # batch settings count per process
        raise ConfigError(f"{checkpoint} was saved by a run on {saved_on} processes and this one has "
                          f"{accelerator.num_processes}: per-process batches would change the global batch mid-run "
                          f"(and the data order); resume it on {saved_on} processes, or choose another output_dir")
    if resume and checkpoint is None:
        accelerator.print(f"{name}: no checkpoint in {output_dir}: starting afresh")
    if accelerator.is_main_process:
        out = Path(output_dir).absolute()
        made = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
        probe = out / f".write-test-{os.getpid()}"
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
        for directory in made:  # the run's first write makes them again: one that fails to start leaves nothing
            with contextlib.suppress(OSError):  # another process wrote there meanwhile
                directory.rmdir()
    return None, checkpoint


def resume_checkpoint(output_dir: str | Path, resume: bool, config: dict[str, Any], stage: str) -> Path | None:
    """The checkpoint a `stage` run continues from: the newest one when resuming, else None.

    Raises ConfigError when a fresh run would write into an earlier run's checkpoints or
    final model (deleting user data is left to the user), when a resume would continue
    another stage's run or change what is trained (the optimizer and schedule come from the
    checkpoint), and when a finished run's final model would be overwritten with no
    checkpoint to continue from.
    """
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, not a directory")
    final = Path(output_dir) / FINAL
    if resume:
        latest = latest_checkpoint(output_dir)
        if latest is None:
            if final.exists():
                other = training_record(final).get("stage", stage)
                what = f"a {other} run's model" if other != stage else \
                    "a finished run's model (with other settings or steps)"
                raise ConfigError(f"{final} holds {what} and no checkpoint is kept to continue it: choose "
                                  "another output_dir to train again")
            return None
        state = read_state(latest)
        if state.get("stage", stage) != stage:  # checkpoints before 2026-12-07 do not say
            raise ConfigError(f"{latest} was saved by a {state['stage']} run, and this is a {stage} run: "
                              "choose another output_dir")
        if changed := changed_settings(state.get("config", {}), config, RESUMABLE):
            raise ConfigError(f"{latest} was saved with other settings ({', '.join(changed)}); a resumed run "
                              "continues with its own: drop these flags, or choose another output_dir to start afresh")
        if config.get("steps") is not None and state["step"] > config["steps"]:
            raise ConfigError(f"{latest} is at step {state['step']}, past steps={config['steps']}: a resume extends a "
                              f"run, never shortens it; pass steps >= {state['step']}, or choose another output_dir")
        finished = training_record(final).get("steps") if final.exists() else None
        if isinstance(finished, int) and finished > state["step"]:  # e.g. kept from an interrupt, save_every 0
            raise ConfigError(f"{final} was trained {finished} steps, past the newest checkpoint {latest} (step "
                              f"{state['step']}): a resume from it would redo steps {state['step'] + 1}-{finished}; "
                              "choose another output_dir (or remove the final model to redo them)")
        return latest
    earlier = sorted(p for p in checkpoint_root(output_dir).glob("step-*") if p.is_dir())
    if earlier:
        raise ConfigError(f"{checkpoint_root(output_dir)} holds an earlier run's checkpoints (newest {earlier[-1].name}): "
                          "pass --resume true to continue it, or choose another output_dir (or remove them) to start afresh")
    if final.exists():
        raise ConfigError(f"{final} holds the model of an earlier, finished run: choose another output_dir (or "
                          "remove it) to start afresh")
    return None


@contextlib.contextmanager
def stopped_by_user(accelerator: Accelerator, name: str, output_dir: str | Path, bar, done: Callable[[], int]):
    """On Ctrl-C in the training loop: how far it got (done() steps), the newest checkpoint
    and how to go on; then the interrupt goes on up."""
    try:
        yield
    except KeyboardInterrupt:
        bar.close()
        latest = latest_checkpoint(output_dir)
        if latest is None:
            where = "no checkpoint was saved (save_every), so a rerun starts afresh"
        else:
            kept = read_state(latest)["step"]
            where = f"the newest checkpoint is {latest} (step {kept}): --resume true continues from it"
        accelerator.print(f"{name}: interrupted after step {done()}; {where}")
        raise


def load_checkpoint(accelerator: Accelerator, directory: Path) -> dict[str, Any]:
    """Restore the accelerate state; return the trainer state saved with it."""
    if (directory / "scheduler.bin").exists() and not (directory / "custom_checkpoint_0.pkl").exists():
        raise CheckpointError(f"{directory} was saved by an older dultra whose LR schedule advanced once per process "
                              "and update; it cannot be resumed: start afresh in another output_dir")
    try:
        accelerator.load_state(str(directory))
    except ValueError as err:
        if "parameter group" not in str(err):
            raise
        raise CheckpointError(f"{directory} holds optimizer state for other parameter groups than this run's ({err}); "
                              "dultra before 2026-12-07 also decayed biases and norm gains (CHANGES.md): start "
                              "afresh in another output_dir") from None
    except RuntimeError as err:
        if "PytorchStreamReader" in str(err):  # torch.load of a truncated or overwritten file
            raise _damaged(directory, err) from None
        if "loading state_dict" not in str(err):  # e.g. out of memory: not the user's checkpoint
            raise
        said = " ".join(str(err).split())  # "Error(s) in loading state_dict for ...: Missing key(s) ...": another model
        raise CheckpointError(f"{directory} does not fit this run's model ({said[:300]}): resume with the model it was "
                              "saved with, or choose another output_dir to start afresh") from None
    except (SafetensorError, EOFError, pickle.UnpicklingError) as err:
        raise _damaged(directory, err) from None
    return read_state(directory)


def _damaged(directory: Path, err: Exception) -> CheckpointError:
    """Checkpoints are written whole (a temporary, then a rename): one that reads short was
    changed afterwards (a full disk, a copy cut off), and the one before it is intact."""
    return CheckpointError(f"{directory} is damaged ({type(err).__name__}: {first_line(err, 'the file ends early')}): "
                           "delete it and resume (from the checkpoint before it, if any), or start afresh in "
                           "another output_dir")


def save_final(accelerator: Accelerator, model, tokenizer, output_dir: str | Path, record: dict[str, Any]) -> Path:
    """The trained model + tokenizer as a loadable checkpoint, OUTPUT_DIR/final (atomic, like the
    others), with `record` ({"stage", "steps", "config"}) as its dultra_training.json."""
    directory = Path(output_dir) / FINAL
    tmp, old = directory.with_name(f".tmp-{FINAL}"), directory.with_name(f".old-{FINAL}")
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAINING_RECORD).write_text(json.dumps(record, indent=2))
        if directory.exists():  # a resumed run that had finished before: replaced only once the new one is whole
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return directory
