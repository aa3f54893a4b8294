"""The settings of `dultra eval`, apart from the evaluation's code (which imports torch), so
`dultra eval --help` and a settings mistake answer at once.

    cfg = load_config(EvalConfig, "configs/tiny.yaml", section="eval")
"""

from __future__ import annotations

from dataclasses import dataclass

from dultra.configio import doc


@dataclass
class EvalConfig:
    """Settings of `dultra eval`."""

    model: str = doc("tiny", "`tiny`, a checkpoint directory or a Hub id")
    task: str = doc("synthetic-math", "gsm8k, math500, humaneval, mbpp, apps, synthetic-math or synthetic-code")
    data: str | None = doc(None, "local dataset file or folder instead of the Hub / generator")
    examples: str | None = doc(None, "a JSONL of prepared examples (a pipeline artifact) instead of task/data")
    split: str = doc("test", "dataset split")
    limit: int = doc(0, "evaluate the first N examples (0: all)")
    strategies: str = doc("planner:factor=1.0,planner:factor=1.5,threshold:tau=0.9,threshold:tau=0.7,"
                          "low-confidence:steps={gen},entropy:gamma=0.1",
                          "comma- or semicolon-separated strategy settings; {gen} stands for gen_length")
    gen_length: int | None = doc(None, "completion length (none: what a dultra-trained checkpoint was trained "
                                       "with, else 256)")
    block_length: int | None = doc(None, "semi-autoregressive block length (none: what a dultra-trained checkpoint "
                                         "was trained with, else 32)")
    batch_size: int = doc(16, "prompts decoded together (greedy results do not depend on it: a resumed run may "
                              "change it)")
    warmup: bool = doc(True, "decode the first batch once, untimed, before measuring: the first strategy's speed "
                             "then excludes start-up costs (CUDA context, kernel choice, compilation)")
    cache: str = doc("none", "KV cache within a block: none (exact), prefix or dual (Fast-dLLM; faster, approximate)")
    compile: bool = doc(False, "compiled decoding steps, replayed from CUDA graphs on a GPU (each batch shape "
                               "compiles once; prompts are padded to a multiple of 64 tokens to share shapes)")
    seed: int = doc(0, "seed of planner-sample's draws (the other strategies are greedy and draw nothing)")
    output_dir: str = doc("runs/eval", "where samples.jsonl and the report go (a rerun resumes there)")
    sandbox_url: str | None = doc(None, "sandbox service for code tasks (none: in-process workers)")
    max_unscored_fraction: float = doc(0.05, "fail when more samples than this cannot be scored")
    aup_y_max: float | None = doc(None, "AUP's y_max, the best accuracy (%) of any method on the task: give "
                                        "another run's (a baseline model's) to compare AUPs across runs (none: "
                                        "the best of this run; a better one of this run still wins)")
    device: str | None = doc(None, "torch device (none: cuda if available)")
