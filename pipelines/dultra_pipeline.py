"""The dUltra training pipeline: data -> (tiny base) -> planner warm start -> GRPO -> eval -> S3.

    python -m pipelines.dultra_pipeline          # recompile pipelines/dultra_pipeline.yaml
    DULTRA_TRAINER_IMAGE=registry/dultra-trainer:TAG python -m pipelines.dultra_pipeline

Upload the compiled YAML in the Kubeflow Pipelines UI (README, "Deploy on Kubeflow"); the
parameters below appear there with their defaults and descriptions. `python -m
pipelines.demo` runs the same pipeline locally with kfp.local (what `make demo` does), with
its workspace in a local directory (`build_pipeline(workspace)`); in a cluster it is always
the workspace volume at /workspace.

GRPO and evaluation run as one of two tasks each, chosen by the run's parameters: with
nodes > 1 a small pod creates and follows the TrainJob (its nodes hold the GPUs), else the
step trains on its own GPUs; evaluation takes one GPU, or none when gpus_per_node is 0.
kfp.local runs these conditions too.
"""

# No `from __future__ import annotations`: kfp reads the real annotation objects.

import sys
from pathlib import Path

from kfp import compiler, dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineChannel

from components.dultra_components import (
    TRAINER_IMAGE,
    evaluate,
    gpu_limit,
    prepare_data,
    pretrain_base,
    publish_checkpoint,
    train_grpo,
    warmstart_planner,
)

COMPILED = Path(__file__).with_name("dultra_pipeline.yaml")
WORKSPACE_PVC = "dultra-workspace"  # manifests/base: checkpoints, Hugging Face cache
WORKSPACE_MOUNT = "/workspace"
S3_SECRET = "dultra-s3"  # manifests/base: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
SANDBOX_CLIENT_LABEL = ("dultra.dev/sandbox-client", "true")  # admitted by the sandbox NetworkPolicy
GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}  # as manifests/overlays/gpu
# The container runtime's 64 MiB /dev/shm is too small for NCCL and data loader workers across
# `accelerate launch` processes; memory-backed, it counts against the pod's memory.
SHM_SIZE = "16Gi"
TRAINJOB_WATCHER = ("1", "2Gi")  # cpu, memory of the GRPO step when a TrainJob's nodes train


def _on_cluster(task: dsl.PipelineTask, cpu: str, memory: str, workspace: str,
                sandbox: bool = False) -> dsl.PipelineTask:
    """Resources, the workspace volume and caches (kfp.local applies only the environment)."""
    task.set_cpu_request(cpu).set_memory_request(memory).set_caching_options(False)
    kubernetes.mount_pvc(task, pvc_name=WORKSPACE_PVC, mount_path=WORKSPACE_MOUNT)
    task.set_env_variable("HF_HOME", f"{workspace}/hf-cache")
    if sandbox:
        kubernetes.add_pod_label(task, *SANDBOX_CLIENT_LABEL)
    return task


def _gpus(task: dsl.PipelineTask, count: int | PipelineChannel) -> dsl.PipelineTask:
    """`count` GPUs (a number or the gpus_per_node parameter, 0 on CPU), the GPU nodes' taint
    tolerated, and a memory-backed /dev/shm as on the TrainJob nodes (manifests/runtime).

    KFP's driver sets a limit from a parameter only when it is a string (from a number it sets
    none, silently), so a parameter count goes through a gpu_limit task, made here, in the
    branch of `task`: kfp 2.17 hands a dsl.If branch only what its own tasks take. The
    toleration is static: with a count of 0 it only lets a CPU step use a GPU node's spare CPU.
    """
    if isinstance(count, PipelineChannel):
        limit = gpu_limit(gpus_per_node=count).set_cpu_request("100m").set_memory_request("256Mi")
        count = limit.set_caching_options(False).output
        task.after(limit)  # kfp 2.17 does not count a resource's channel as a dependency
    task.set_accelerator_type(GPU).set_accelerator_limit(count)
    kubernetes.add_toleration(task, **GPU_TOLERATION)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def _retried(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A retried GRPO step resumes from its last checkpoint, or attaches to its TrainJob.

    Argo retries a step that failed, not one whose pod was deleted (an eviction, a drain): such
    a run fails, and Retry in the Pipelines UI continues it. The cluster autoscaler at least
    leaves these long-running pods' nodes alone. Argo counts backoff_max_duration from the
    first attempt's start, and neither retries past it nor lets a retry's pod run beyond it,
    so it spans every attempt of a run that takes days (a TrainJob is given up after 72 h).
    """
    kubernetes.add_pod_annotation(task, "cluster-autoscaler.kubernetes.io/safe-to-evict", "false")
    return task.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="30d")


def build_pipeline(workspace: str = WORKSPACE_MOUNT):
    """The pipeline with its runs' checkpoints under `workspace`: the workspace volume's mount in a
    cluster (what is compiled), a local directory under kfp.local (pipelines/demo.py)."""

    @dsl.pipeline(name="dultra", description="Train a dUltra unmasking planner with GRPO, evaluate it, publish to S3.")
    def dultra_pipeline(
        s3_destination: str,  # required: no default bucket is the user's
        base_model: str = "tiny",
        task: str = "synthetic-math",
        config: str = "configs/tiny.yaml",
        data_path: str = "",
        train_size: int = 0,
        eval_size: int = 300,
        pretrain_steps: int = 0,
        warmstart_steps: int = 0,
        grpo_steps: int = 0,
        group_size: int = 0,
        gen_length: int = 0,
        block_length: int = 0,
        learning_rate: float = 0.0,
        reward_correct: float = -1.0,
        reward_format: float = -1.0,
        reward_distill: float = -1.0,
        reward_steps: float = -1.0,
        teacher: str = "",
        sandbox_url: str = "",
        nodes: int = 1,
        gpus_per_node: int = 0,
        cpu_per_node: str = "",
        memory_per_node: str = "",
        accelerate_config: str = "",
        eval_strategies: str = "threshold:tau=0.9;threshold:tau=0.7;planner:factor=1.0;planner:factor=1.5",
        s3_endpoint_url: str = "",
        trainer_image: str = TRAINER_IMAGE,
    ):
        """dUltra training pipeline.

        Args:
            s3_destination: where checkpoints are published, s3://bucket/prefix (runs/<id>/ and a latest pointer go under it); checked in the first step.
            base_model: `tiny` trains the embedded default from scratch; otherwise a base checkpoint: a directory on the workspace volume (an official LLaDA or dUltra checkpoint) or a Hugging Face Hub id such as GSAI-ML/LLaDA-8B-Instruct (owner/name[@revision]).
            task: training and evaluation task: synthetic-math, synthetic-code, gsm8k, math500, humaneval, mbpp or apps.
            config: training config file in the trainer image (configs/tiny.yaml, configs/llada-8b-math.yaml, configs/llada-8b-code.yaml).
            data_path: a folder on the workspace volume holding the task's train and test splits (train.jsonl, test.parquet, ...) instead of the Hugging Face Hub (empty: the Hub).
            train_size: training examples (0: the whole split; synthetic tasks: the generator's default).
            eval_size: held-out examples evaluated.
            pretrain_steps: tiny-base pretraining steps (0: the config's).
            warmstart_steps: planner warm-start steps (0: the config's).
            grpo_steps: GRPO updates (0: the config's).
            group_size: completions per prompt (0: the config's).
            gen_length: completion length (0: the config's).
            block_length: semi-autoregressive block length (0: the config's).
            learning_rate: GRPO learning rate (0: the config's).
            reward_correct: weight of the correctness reward (negative: the config's).
            reward_format: weight of the format reward (negative: the config's).
            reward_distill: weight of the teacher-distillation reward (negative: the config's).
            reward_steps: weight of the step-count penalty (negative: the config's).
            teacher: autoregressive teacher for the distillation reward, a directory on the workspace volume or a Hub id (empty: the config's).
            sandbox_url: sandbox service for code rewards and evaluation, e.g. http://dultra-sandbox.dultra-sandbox.svc:8080.
            nodes: machines for GRPO; more than 1 launches a Kubeflow Trainer TrainJob (the GRPO step then only follows it, without GPUs).
            gpus_per_node: GPUs per machine for warm start and GRPO; evaluation takes one (0: CPU).
            cpu_per_node: CPU request of each TrainJob node when nodes > 1, e.g. 32 (empty: the runtime's; set it and memory_per_node with Kubeflow Trainer < 2.3, which replaces the runtime's resources instead of merging).
            memory_per_node: memory request of each TrainJob node when nodes > 1, e.g. 512Gi (empty: the runtime's).
            accelerate_config: how GRPO spreads over several GPUs, an accelerate config in the trainer image: empty for data parallel (a planner-only run, or a model that fits one GPU), configs/accelerate/fsdp.yaml to shard the full model over all GPUs, configs/accelerate/hsdp.yaml to shard it within each node and replicate across nodes (the faster choice for full LLaDA-8B training on several nodes).
            eval_strategies: semicolon-separated decoding strategies to evaluate, e.g. planner:factor=1.0;threshold:tau=0.9.
            s3_endpoint_url: S3-compatible endpoint (empty: AWS, or AWS_ENDPOINT_URL).
            trainer_image: image of the TrainJob's nodes when nodes > 1 (default: the image the steps run, set when compiling).
        """
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        data = _on_cluster(prepare_data(task=task, train_size=train_size, eval_size=eval_size, data_path=data_path,
                                        workspace=workspace, s3_destination=s3_destination,
                                        s3_endpoint_url=s3_endpoint_url, config=config, gen_length=gen_length,
                                        eval_strategies=eval_strategies, nodes=nodes, gpus_per_node=gpus_per_node,
                                        cpu_per_node=cpu_per_node, memory_per_node=memory_per_node,
                                        accelerate_config=accelerate_config), "2", "8Gi", workspace)
        train_set, test_set = data.outputs["train"], data.outputs["test"]
        base = _on_cluster(pretrain_base(base_model=base_model, config=config, train=train_set, steps=pretrain_steps,
                                         gen_length=gen_length, workspace=workspace, run_id=run_id),
                           "4", "16Gi", workspace)
        warm = _gpus(_on_cluster(warmstart_planner(
            config=config, base=base.outputs["model"], train=train_set, steps=warmstart_steps, gen_length=gen_length,
            block_length=block_length, gpus_per_node=gpus_per_node, workspace=workspace, run_id=run_id),
            "4", "32Gi", workspace), gpus_per_node)
        grpo = dict(
            config=config, planner=warm.outputs["model"], train=train_set, task=task, steps=grpo_steps,
            group_size=group_size, gen_length=gen_length, block_length=block_length, learning_rate=learning_rate,
            reward_correct=reward_correct, reward_format=reward_format, reward_distill=reward_distill,
            reward_steps=reward_steps, teacher=teacher, sandbox_url=sandbox_url, nodes=nodes,
            gpus_per_node=gpus_per_node, cpu_per_node=cpu_per_node, memory_per_node=memory_per_node,
            accelerate_config=accelerate_config, workspace=workspace, run_id=run_id, trainjob_image=trainer_image,
        )
        with dsl.If(nodes > 1, "grpo-trainjob"):  # this pod creates and follows the TrainJob; its nodes train
            on_nodes = _retried(_on_cluster(train_grpo(**grpo), *TRAINJOB_WATCHER, workspace))
        with dsl.Else("grpo-one-node"):
            on_node = _retried(_gpus(_on_cluster(train_grpo(**grpo), "8", "64Gi", workspace, sandbox=True),
                                     gpus_per_node))
        checkpoint = dsl.OneOf(on_nodes.outputs["Output"], on_node.outputs["Output"])
        evaluation = dict(config=config, checkpoint=checkpoint, test=test_set, task=task, strategies=eval_strategies,
                          gen_length=gen_length, block_length=block_length, sandbox_url=sandbox_url,
                          workspace=workspace, run_id=run_id)
        with dsl.If(gpus_per_node > 0, "evaluate-gpu"):  # `dultra eval` decodes on one device
            on_gpu = _gpus(_on_cluster(evaluate(**evaluation), "4", "32Gi", workspace, sandbox=True), 1)
        with dsl.Else("evaluate-cpu"):
            on_cpu = _on_cluster(evaluate(**evaluation), "4", "32Gi", workspace, sandbox=True)
        rows = dsl.OneOf(on_gpu.outputs["Output"], on_cpu.outputs["Output"])
        publish = _on_cluster(publish_checkpoint(checkpoint=checkpoint, evaluation=rows, destination=s3_destination,
                                                 endpoint_url=s3_endpoint_url, base_model=base_model, task=task,
                                                 workspace=workspace, run_id=run_id),
                              "2", "8Gi", workspace)
        kubernetes.use_secret_as_env(publish, secret_name=S3_SECRET, secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})

    return dultra_pipeline


dultra_pipeline = build_pipeline()


def compile_pipeline(path: Path = COMPILED) -> Path:
    compiler.Compiler().compile(dultra_pipeline, str(path))
    return path


if __name__ == "__main__":
    print(compile_pipeline(Path(sys.argv[1]) if len(sys.argv) > 1 else COMPILED))
