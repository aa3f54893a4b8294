"""Kubeflow components of the dUltra pipeline: thin wrappers over `components.steps`.

    from components.dultra_components import prepare_data, pretrain_base, ...   # used by pipelines/

Each runs in the trainer image (`docker/Dockerfile`, name from $DULTRA_TRAINER_IMAGE at
compile time). Models pass between steps as Model artifacts that point at checkpoints on
the workspace volume (`components.steps.write_reference`), so multi-GB weights are
written once. GRPO also returns its checkpoint's path, which evaluation and publishing
take: the pipeline runs one of two GRPO tasks (one node, or a TrainJob) and picks the
output of the one that ran with dsl.OneOf, which kfp.local supports for parameters only.
Cluster settings (resources, GPUs, the workspace volume, the S3 Secret, retries) are
applied where the pipeline uses the components (pipelines/dultra_pipeline.py).
"""

# No `from __future__ import annotations`: kfp reads the real annotation objects.

import os

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

TRAINER_IMAGE = os.environ.get("DULTRA_TRAINER_IMAGE", "ghcr.io/dultra/dultra-trainer:0.1.0")


def component(fn):
    """A lightweight component on the trainer image (which already holds dultra and kfp)."""
    return dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)(fn)


@component
def prepare_data(task: str, train_size: int, eval_size: int, data_path: str, workspace: str, s3_destination: str,
                 s3_endpoint_url: str, config: str, gen_length: int, eval_strategies: str, nodes: int,
                 gpus_per_node: int, cpu_per_node: str, memory_per_node: str, accelerate_config: str,
                 train: Output[Dataset], test: Output[Dataset]):
    """Training and held-out examples of `task` as JSONL (data_path: local files instead of the Hub);
    fails first thing when the workspace is not writable, the S3 destination is malformed, or a
    setting that only later steps read is wrong (components.steps.check_settings)."""
    from components.steps import check_destination, check_settings, check_workspace
    from components.steps import prepare_data as run

    check_workspace(workspace)
    check_destination(s3_destination, s3_endpoint_url)
    check_settings(config, gen_length, eval_strategies, nodes, gpus_per_node, cpu_per_node, memory_per_node,
                   accelerate_config)
    sizes = run(task, train_size, eval_size, data_path, train.path, test.path)
    train.metadata.update(task=task, examples=sizes["train"])
    test.metadata.update(task=task, examples=sizes["test"])


@component
def gpu_limit(gpus_per_node: int) -> str:
    """The GPU steps' accelerator limit, as text: KFP's driver reads a limit that comes from a
    parameter only when that parameter is a string, and silently sets none from a number."""
    return str(gpus_per_node)


@component
def pretrain_base(base_model: str, config: str, train: Input[Dataset], steps: int, gen_length: int,
                  workspace: str, run_id: str, model: Output[Model]):
    """The base model: `tiny` is pretrained here (masked diffusion, CPU-sized); any other
    base_model is a checkpoint directory this step only points at."""
    from components.steps import given, run_stage, workdir, write_reference

    if base_model != "tiny":
        write_reference(model.path, base_model)
        model.metadata.update(stage="import", base_model=base_model)
        return
    overrides = {"data": train.path, **given(steps=steps, gen_length=gen_length)}
    write_reference(model.path, run_stage("pretrain", config, overrides, workdir(workspace, run_id)))
    model.metadata.update(stage="pretrain", base_model="tiny")


@component
def warmstart_planner(config: str, base: Input[Model], train: Input[Dataset], steps: int, gen_length: int,
                      block_length: int, gpus_per_node: int, workspace: str, run_id: str, model: Output[Model]):
    """Planner warm start: the head imitates the Fast-dLLM factor rule (base frozen)."""
    from components.steps import (
        Launcher,
        checkpoint_dir,
        given,
        run_stage,
        workdir,
        write_reference,
    )

    overrides = {"model": checkpoint_dir(base.path), "data": train.path,
                 **given(steps=steps, gen_length=gen_length, block_length=block_length)}
    work = workdir(workspace, run_id)
    write_reference(model.path, run_stage("warmstart", config, overrides, work, Launcher(gpus_per_node=gpus_per_node)))
    model.metadata.update(stage="warmstart")


@component
def train_grpo(config: str, planner: Input[Model], train: Input[Dataset], task: str, steps: int,
               group_size: int, gen_length: int, block_length: int, learning_rate: float,
               reward_correct: float, reward_format: float, reward_distill: float, reward_steps: float,
               teacher: str, sandbox_url: str, nodes: int, gpus_per_node: int, cpu_per_node: str,
               memory_per_node: str, accelerate_config: str, workspace: str, run_id: str, trainjob_image: str,
               model: Output[Model], metrics: Output[Metrics]) -> str:
    """GRPO of model and planner; resumes from its last checkpoint when the step is retried.
    Returns the trained checkpoint's directory."""
    from pathlib import Path

    from components.steps import (
        Launcher,
        checkpoint_dir,
        grpo_overrides,
        last_metrics,
        run_stage,
        workdir,
        write_reference,
    )

    overrides = grpo_overrides(
        task, checkpoint_dir(planner.path), train.path,
        numbers={"steps": steps, "group_size": group_size, "gen_length": gen_length, "block_length": block_length,
                 "optim.lr": learning_rate},
        rewards={"correct": reward_correct, "format": reward_format, "distill": reward_distill,
                 "steps": reward_steps},
        texts={"teacher": teacher, "sandbox_url": sandbox_url})
    work = workdir(workspace, run_id)
    launcher = Launcher(nodes=nodes, gpus_per_node=gpus_per_node, accelerate_config=accelerate_config,
                        trainjob={"image": trainjob_image, "run_id": run_id, "cpu": cpu_per_node,
                                  "memory": memory_per_node} if nodes > 1 else None)
    final = run_stage("train", config, overrides, work, launcher)
    write_reference(model.path, final)
    last, steps_logged = last_metrics(Path(work) / "train")
    for key, value in last.items():
        metrics.log_metric(f"last_step/{key}", value)
    model.metadata.update(stage="grpo", steps=steps_logged)
    return str(final.resolve())


@component
def evaluate(config: str, checkpoint: str, test: Input[Dataset], task: str, strategies: str, gen_length: int,
             block_length: int, sandbox_url: str, workspace: str, run_id: str, metrics: Output[Metrics],
             report: Output[HTML], samples: Output[Dataset]) -> str:
    """Accuracy / NFE / TPF / AUP of each strategy on the held-out set, the Pareto report, and
    every sample's record; returns the summary rows as JSON."""
    import json
    import shutil
    from pathlib import Path

    from components.steps import decode_lengths, workdir
    from components.steps import evaluate as run_eval

    gen, block = decode_lengths(config, gen_length, block_length)  # 0: as GRPO trained
    out = Path(workdir(workspace, run_id)) / "eval"
    result = run_eval(checkpoint, test.path, task, strategies, gen, block, sandbox_url, str(out))
    for row in result["rows"]:
        for key in ("accuracy", "nfe", "tpf", "tokens_per_s"):
            metrics.log_metric(f"{row['strategy']}/{key}", float(row[key]))
    for method, value in result["methods"].items():
        metrics.log_metric(f"{method}/aup", float(value["aup"]))
    shutil.copyfile(out / "report.html", report.path)
    shutil.copyfile(out / "samples.jsonl", samples.path)
    return json.dumps(result["rows"])


@component
def publish_checkpoint(checkpoint: str, evaluation: str, destination: str, endpoint_url: str,
                       base_model: str, task: str, workspace: str, run_id: str) -> str:
    """Upload the trained checkpoint to S3 (immutable run prefix, manifest, `latest`); returns its URI.
    Then the run's resumable checkpoints leave the workspace volume (its finals stay)."""
    import json

    from components.steps import prune_resume_state, publish, workdir

    rows = json.loads(evaluation)
    metrics = {row["strategy"]: {k: row[k] for k in ("accuracy", "nfe", "tpf", "tokens_per_s")} for row in rows}
    uri = publish(checkpoint, destination, endpoint_url, metrics, base_model, {"task": task})
    freed = prune_resume_state(workdir(workspace, run_id))
    print(f"published {uri}; removed the run's resumable checkpoints ({freed / 2**30:.1f} GiB) from the workspace")
    return uri
