"""The training stages by name; each is a `dultra` command and a section of a config file.

    config_cls, run = stage("train")       # dultra.rl.config.TrainConfig, dultra.rl.trainer.train
    run(load_config(config_cls, "configs/tiny.yaml", section="train"))

Neither this table nor the config classes import torch; `stage` imports the stage's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

from dultra.rl import config


class Stage(NamedTuple):
    help: str  # one line, for `dultra --help`
    module: str  # imported by `stage` (torch, transformers), not with this table
    config: str  # its typed config class, in dultra.rl.config
    entry: str  # its function: config -> the final checkpoint's directory


STAGES = {
    "pretrain": Stage("masked-diffusion training of a base model (the tiny default's)", "dultra.rl.pretrain",
                      "PretrainConfig", "pretrain"),
    "warmstart": Stage("train the planner head to imitate the Fast-dLLM factor rule", "dultra.rl.warmstart",
                       "WarmstartConfig", "warmstart"),
    "train": Stage("GRPO training of model and planner", "dultra.rl.trainer", "TrainConfig", "train"),
}


def config_class(name: str) -> type:
    """The config class of the stage `name`, without importing the stage's code."""
    return getattr(config, STAGES[name].config)


def stage(name: str) -> tuple[type, Callable]:
    """(config class, entry function) of the stage `name`."""
    return config_class(name), getattr(importlib.import_module(STAGES[name].module), STAGES[name].entry)
