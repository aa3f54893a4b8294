"""What each pipeline step does, as plain functions (the Kubeflow components in
`components/dultra_components.py` only unpack artifacts and call these).

    prepare_data("synthetic-math", 20000, 300, "", "train.jsonl", "test.jsonl")
    run_stage("train", "configs/tiny.yaml", {"steps": 10}, workdir, final_dir, launcher=Launcher())

Training stages write their checkpoints to a work directory that survives retries (the
workspace volume in a cluster) and always resume, so a retried step continues from its
last checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def resolve_config(path: str) -> Path:
    """A config path as given, or relative to the source checkout (the image's /app)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    import dultra

    in_checkout = Path(dultra.__file__).resolve().parents[1] / path
    if in_checkout.is_file():
        return in_checkout
    raise FileNotFoundError(f"config file {path} not found (cwd {Path.cwd()}, checkout {in_checkout.parent})")


def prepare_data(task: str, train_size: int, eval_size: int, data_path: str, train_out: str, test_out: str) -> dict:
    """Training and held-out examples of a task as JSONL artifacts; returns their sizes."""
    from dultra.data import load_task, write_examples

    if data_path and Path(data_path).is_file():  # one file holds no splits: GRPO would train on the test set
        raise ValueError(f"pipeline parameter data_path: {data_path} is one file, read as both the train and the "
                         "test split; give a folder with a train and a test file (train.jsonl, test.parquet, ...)")

    train = load_task(task, "train", path=data_path or None, limit=train_size or None)
    test = load_task(task, "test", path=data_path or None, limit=eval_size or None)
    write_examples(train, train_out)
    write_examples(test, test_out)
    return {"train": len(train), "test": len(test)}


@dataclass
class Launcher:
    """How the GRPO stage runs: in this process, `accelerate launch` on this node's GPUs,
    or a Kubeflow TrainJob across `nodes` nodes (see components/trainjob.py)."""

    nodes: int = 1  # machines; > 1 launches a TrainJob
    gpus_per_node: int = 0  # GPUs per machine; > 1 runs one process per GPU
    trainjob: dict | None = None  # TrainJobSpec fields (image, run_id, cpu, memory...) when nodes > 1
    accelerate_config: str = ""  # with several GPUs: configs/accelerate/{fsdp,hsdp}.yaml shard; empty: DDP

    def local_command(self, args: list[str]) -> list[str]:
        """`accelerate launch` of `python -m dultra.cli ARGS` on this node's GPUs."""
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.gpus_per_node)]
        if self.accelerate_config:  # one node: a hybrid shard shards over all of its GPUs
            launch += ["--config_file", str(resolve_config(self.accelerate_config)),
                       "--parallelism_config_dp_replicate_size", "1",
                       "--parallelism_config_dp_shard_size", str(self.gpus_per_node)]
        else:
            launch += ["--multi_gpu", "--mixed_precision", "bf16"]
        return [*launch, "-m", "dultra.cli", *args]


REFERENCE = "checkpoint.json"


def workdir(workspace: str, run_id: str) -> str:
    """Where a run's stages keep their checkpoints: the same across retries of a step."""
    return str(Path(workspace) / "runs" / run_id)


def check_workspace(workspace: str) -> None:
    """Fail in the first step, not hours in, when this user cannot write the workspace."""
    runs = Path(workspace) / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        probe = runs / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot write the workspace {workspace} as uid {os.getuid()} gid {os.getgid()} ({err.strerror or err}): "
            "the steps run as the trainer image's user, with no fsGroup; make the volume writable by it "
            "(README, Deploy on Kubeflow, step 3)") from None


def check_destination(destination: str, endpoint_url: str) -> None:
    """Fail in the first step, not after GRPO, on an S3 destination or endpoint that cannot work.

    Only the form is checked: this step has no credentials (only publishing sees the Secret).
    """
    from dultra.storage import S3Options, StorageError, make_client
    from dultra.storage.uri import parse_base_uri

    try:
        parse_base_uri(destination)
    except StorageError as err:
        raise ValueError(f"pipeline parameter s3_destination: {err}") from None
    try:
        if endpoint_url:
            make_client(S3Options(endpoint_url=endpoint_url))
    except StorageError as err:
        raise ValueError(f"pipeline parameter s3_endpoint_url: {err}") from None


def check_settings(config: str, gen_length: int, strategies: str, nodes: int, gpus_per_node: int,
                   cpu_per_node: str, memory_per_node: str, accelerate_config: str) -> None:
    """Fail in the first step, not after hours of training, on pipeline parameters that only
    later steps read: the config, the evaluation strategies, the TrainJob's resources."""
    from components.trainjob import check_quantity
    from dultra.errors import DultraError
    from dultra.eval.run import parse_strategies

    try:
        gen_length, _ = decode_lengths(config, gen_length, 0)
    except (FileNotFoundError, DultraError) as err:
        raise ValueError(f"pipeline parameter config: {err}") from None
    try:
        parse_strategies(strategies, gen_length)
    except DultraError as err:
        raise ValueError(f"pipeline parameter eval_strategies: {err}") from None
    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"pipeline parameters need nodes >= 1 and gpus_per_node >= 0, got {nodes} and "
                         f"{gpus_per_node}")
    check_quantity(cpu_per_node, "pipeline parameter cpu_per_node")
    check_quantity(memory_per_node, "pipeline parameter memory_per_node")
    if accelerate_config:
        try:
            resolve_config(accelerate_config)
        except FileNotFoundError as err:
            raise ValueError(f"pipeline parameter accelerate_config: {err}") from None


def write_reference(artifact_dir: str, checkpoint: str | Path) -> None:
    """Make a Model artifact point at a checkpoint on the workspace volume, or at a Hub id.

    Checkpoints of 8B models are tens of GB: they stay on the workspace volume, and the
    artifact (what the Kubeflow UI lists and lineage tracks) holds their location. A name
    that is no local path (e.g. GSAI-ML/LLaDA-8B-Instruct@main) is kept as given: loading
    downloads it from the Hugging Face Hub (dultra.model.hub).
    """
    path = Path(checkpoint)
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    target = str(path.resolve()) if path.exists() else str(checkpoint)
    (Path(artifact_dir) / REFERENCE).write_text(json.dumps({"path": target}))


def checkpoint_dir(artifact_dir: str) -> str:
    """The checkpoint a Model artifact holds or points at."""
    ref = Path(artifact_dir) / REFERENCE
    return json.loads(ref.read_text())["path"] if ref.exists() else artifact_dir


def run_stage(stage: str, config: str, overrides: dict[str, Any], workdir: str,
              launcher: Launcher | None = None) -> Path:
    """Run a training stage with `config`'s section + overrides; returns its final checkpoint."""
    from dultra.configio import load_config, to_flags
    from dultra.rl.stages import stage as training_stage

    settings = {**overrides, "output_dir": str(Path(workdir) / stage), "resume": True}
    config_path = resolve_config(config)
    launcher = launcher or Launcher()
    if launcher.nodes > 1:
        from components.trainjob import TrainJobSpec, run_trainjob

        if launcher.accelerate_config:  # a path in the nodes' image, as in this one: fail here, not on every node
            resolve_config(launcher.accelerate_config)

        if settings.get("data"):  # the step's artifact path exists only in this pod: nodes read the workspace
            shared = Path(workdir) / stage / "data.jsonl"
            shared.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(settings["data"], shared)
            settings["data"] = str(shared)
        # A retried step replaces a failed job; the new one resumes from the last checkpoint.
        run_trainjob(TrainJobSpec(nodes=launcher.nodes, gpus_per_node=launcher.gpus_per_node,
                                  args=[stage, "--config", str(config_path), *to_flags(settings)],
                                  accelerate_config=launcher.accelerate_config, recreate_failed=True,
                                  **(launcher.trainjob or {})))
    elif launcher.gpus_per_node > 1:
        run_forwarding_sigterm(launcher.local_command([stage, "--config", str(config_path), *to_flags(settings)]))
    else:
        config_cls, entry = training_stage(stage)
        entry(load_config(config_cls, config_path, section=stage, overrides=settings))
    return Path(workdir) / stage / "final"


def run_forwarding_sigterm(command: list[str]) -> None:
    """Run `command` in its own process group and pass on each SIGTERM (Kubernetes stopping the
    pod) or SIGINT (Ctrl-C under kfp.local) this step gets, once, so its training processes save
    a checkpoint before they stop. Its own group: Argo signals the step's whole group, which
    would otherwise deliver every signal twice, and a second one means "stop at once".

    In a Kubeflow pod this rarely saves: KFP's launcher, the step's parent, exits at SIGTERM
    and the container ends about a second later. The last `save_every` checkpoint is what a
    preempted step keeps (a TrainJob's nodes run `accelerate launch` directly, and do save)."""
    from dultra.signals import handling
    from sandbox.isolation import PR_SET_PDEATHSIG, prctl

    # SIGTERM when the step dies without passing a signal on (SIGKILL, a closed terminal), so
    # training in its own group saves and stops rather than running on alone.
    child = subprocess.Popen(command, start_new_session=True,
                             preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
    with handling((signal.SIGTERM, signal.SIGINT), lambda signum, frame: child.send_signal(signum)):
        code = child.wait()
    if code:
        raise subprocess.CalledProcessError(code, command)


def given(**settings: int | float | str) -> dict[str, Any]:
    """The pipeline parameters that were set: a number <= 0 or an empty text keeps the config's value."""
    return {key: value for key, value in settings.items()
            if (value > 0 if isinstance(value, int | float) else bool(value))}


def grpo_overrides(task: str, model: str, data: str, numbers: dict[str, float], rewards: dict[str, float],
                   texts: dict[str, str]) -> dict[str, Any]:
    """The `dultra train` settings a GRPO step sets: numbers > 0 (steps, group_size, ...,
    optim.lr), reward weights >= 0 (negative keeps the config's) for the task's kind, and
    non-empty texts (teacher, sandbox_url)."""
    from dultra.data import task_kind

    kind = task_kind(task)
    return {"model": model, "data": data, **given(**numbers),
            **{f"rewards.{kind}.{name}": w for name, w in rewards.items() if w >= 0}, **given(**texts)}


def last_metrics(stage_dir: str | Path, keys: tuple[str, ...] = ("reward/total", "accuracy", "nfe", "tpf")
                 ) -> tuple[dict[str, float], int]:
    """({key: value} of a training stage's last logged step, steps logged) from its metrics.jsonl."""
    path = Path(stage_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    last = rows[-1] if rows else {}
    return {k: float(last[k]) for k in keys if last.get(k) is not None}, len(rows)


def decode_lengths(config: str, gen_length: int, block_length: int) -> tuple[int, int]:
    """gen/block length for evaluation: the given ones, else those GRPO trained with."""
    from dultra.configio import load_config
    from dultra.rl.config import TrainConfig

    trained = load_config(TrainConfig, resolve_config(config), section="train")
    return gen_length or trained.gen_length, block_length or trained.block_length


def evaluate(model_dir: str, examples_path: str, task: str, strategies: str, gen_length: int, block_length: int,
             sandbox_url: str, out_dir: str) -> dict:
    """`dultra eval` on the held-out examples: report files in out_dir (resumes when retried)."""
    from dultra.eval.config import EvalConfig
    from dultra.eval.run import run_evaluation

    return run_evaluation(EvalConfig(
        model=model_dir, task=task, examples=examples_path, strategies=strategies, gen_length=gen_length,
        block_length=block_length, sandbox_url=sandbox_url or None, output_dir=out_dir,
    ))


def publish(model_dir: str, destination: str, endpoint_url: str, metrics: dict, base_model: str,
            config: dict | None = None) -> str:
    """Publish the checkpoint to S3 (manifest + `latest` pointer); returns the run URI."""
    from dultra.storage import S3Options
    from dultra.storage import publish as s3_publish

    result = s3_publish(model_dir, destination, metrics=metrics, base_model=base_model, config=config,
                        options=S3Options(endpoint_url=endpoint_url or None))
    return result.run_uri


def prune_resume_state(workdir: str | Path) -> int:
    """Delete a published run's resumable checkpoints (model + optimizer state, kept so that a
    retried step resumes): once the run is published they only fill the workspace volume,
    hundreds of GB a run at 8B. The finals the Model artifacts point at, the metrics and the
    evaluation stay. Returns the bytes freed."""
    from dultra.rl.checkpoint import checkpoint_root

    freed = 0
    for root in (checkpoint_root(stage) for stage in Path(workdir).glob("*")):
        if root.is_dir():
            freed += sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
            shutil.rmtree(root)
    return freed
