"""Every shipped config file parses into its stage's typed config (unknown keys would fail)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dultra.configio import load_config
from dultra.decoding import parse_strategy
from dultra.eval.config import EvalConfig
from dultra.eval.run import check_config, split_strategies
from dultra.rl.config import PretrainConfig, TrainConfig, WarmstartConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
STAGES = {"pretrain": PretrainConfig, "warmstart": WarmstartConfig, "train": TrainConfig, "eval": EvalConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_sections_load(path):
    sections = yaml.safe_load(path.read_text())
    assert sections and set(sections) <= set(STAGES)
    for name in sections:
        config = load_config(STAGES[name], path, section=name)
        if hasattr(config, "validate"):
            config.validate()
        if name == "eval":
            check_config(config)
            assert [parse_strategy(spec) for spec in split_strategies(config.strategies, config.gen_length)]
        if name == "train":
            assert config.gen_length % config.block_length == 0


def test_tiny_stages_chain():
    path = next(p for p in CONFIGS if p.name == "tiny.yaml")
    pre, warm, train, ev = (load_config(STAGES[s], path, section=s) for s in ("pretrain", "warmstart", "train", "eval"))
    assert warm.model == f"{pre.output_dir}/final" and train.model == f"{warm.output_dir}/final"
    assert ev.model == f"{train.output_dir}/final" and (ev.gen_length, ev.block_length) == (16, 16)
