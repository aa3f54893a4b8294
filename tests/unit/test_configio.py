"""YAML + flag configs: unknown keys, types, nesting, help for every field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import pytest

from dultra.configio import add_config_flags, config_dict, doc, load_config, to_flags
from dultra.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    weight: float = doc(1.0, "a weight")


@dataclass
class Outer:
    steps: int = doc(10, "optimizer steps")
    name: str | None = doc(None, "optional name")
    flag: bool = doc(False, "a switch")
    pair: tuple[float, float] = doc((0.9, 0.99), "two numbers")
    inner: Inner = doc(factory=Inner, help="nested settings")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Outer)
    return parser, parser.parse_args(argv)


def test_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 5\n  inner: {weight: 2}\n")
    _, args = _parse(["--inner.weight", "3.5", "--flag", "true"])
    cfg = load_config(Outer, path, section="train", flags=args)
    assert cfg == Outer(steps=5, name=None, flag=True, inner=Inner(3.5))
    assert config_dict(cfg)["inner"] == {"weight": 3.5}


def test_none_unsets_an_optional_setting_from_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  name: from-file\n")
    for argv, name in (([], "from-file"), (["--name", "none"], None), (["--name", "NULL"], None),
                       (["--name", "other"], "other"), (to_flags({"name": None}), None)):
        assert load_config(Outer, path, section="train", flags=_parse(argv)[1]).name == name, argv
    with pytest.raises(SystemExit):  # a required setting has no none
        _parse(["--steps", "none"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {stepz: 5}", "unknown key\\(s\\) stepz in .*allowed: flag, inner, name, pair, steps"),
        ("train: {steps: five}", "steps must be int"),
        ("train: {steps: 2.5}", "steps must be int"),
        ("train: {inner: {weight: abc}}", "train.inner.weight must be float, got 'abc'"),
        ("train: {inner: {weight: true}}", "weight must be float"),
        ("train: {pair: 0.9}", "pair must be a list of 2 numbers"),
        ("train: {pair: [0.9, x]}", "pair must be float"),
        ("train: {inner: {weight: 1, extra: 2}}", "unknown key\\(s\\) extra"),
        ("train: {inner: 3}", "must be a mapping"),
        ("train:\n  on: 3\n  7: 1", "unknown key\\(s\\) 7, True in .*YAML reads an unquoted on"),
        ("train: [1, 2]", "must be a mapping"),
        ("train: {name: ''}", "c.yaml:train.name is empty: give a value, or leave the setting out"),
        ("train: {name: '  '}", "name is empty"),
        ("train: {steps: 1", "not valid YAML: line 1, column 17: expected ',' or '}', but got '<stream end>'$"),
        ("[1, 2]", "must be a mapping with a 'train' section"),
        ("just text", "must be a mapping with a 'train' section"),
        ("trian: {steps: 1}", "no 'train' section \\(its top-level keys: trian\\)"),  # not every default
        ("", "no 'train' section"),
        (b"train: {steps: \xff}", "not valid YAML"),
    ],
)
def test_clear_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, path, section="train")


@pytest.mark.parametrize("inner, message", [("", None), ("{}", None), ("3", "inner must be a mapping, got 3"),
                                            ("[1]", "inner must be a mapping, got \\[1\\]")])
def test_a_flag_inside_an_empty_or_a_wrong_section(tmp_path, inner, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  inner: {inner}\n")  # empty: its settings commented out
    _, args = _parse(["--inner.weight", "3.5"])
    if message is None:
        assert load_config(Outer, path, section="train", flags=args).inner == Inner(3.5)
        assert load_config(Outer, path, section="train").inner == Inner()
    else:
        with pytest.raises(ConfigError, match=message):
            load_config(Outer, path, section="train", flags=args)


def test_numbers_yaml_reads_as_strings_or_ints_become_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {inner: {weight: 1e-4}, pair: [1, 2e-3]}\n")  # YAML 1.1: 1e-4 is a string
    cfg = load_config(Outer, path, section="train")
    assert cfg.inner.weight == 1e-4 and cfg.pair == (1.0, 2e-3)


def test_a_bad_flag_is_named_as_the_flag_not_the_class():
    import argparse

    with pytest.raises(ConfigError, match=r"^pair must be a list of 2 numbers, got \(0.9,\)$"):
        load_config(Outer, flags=argparse.Namespace(**{"cfg:pair": (0.9,)}))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_help_documents_every_field():
    parser, _ = _parse([])
    text = parser.format_help()
    for flag, words in [("--steps", "optimizer steps"), ("--name", "optional name"), ("--flag", "a switch"),
                        ("--inner.weight", "a weight")]:
        assert flag in text and words in text


def test_overrides_and_their_flag_form(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 5}\n")
    cfg = load_config(Outer, path, section="train", overrides={"inner.weight": 4.0, "flag": True})
    assert cfg == Outer(steps=5, flag=True, inner=Inner(4.0))
    parser, _ = _parse([])
    args = parser.parse_args(to_flags({"inner.weight": 4.0, "flag": True, "name": "x"}))
    assert load_config(Outer, flags=args) == Outer(name="x", flag=True, inner=Inner(4.0))


@dataclass(frozen=True)
class Weights:
    a: float = doc(1.0, "first weight")
    b: float = doc(1.0, "second weight")


@dataclass(frozen=True)
class Group:
    first: Weights = doc(factory=lambda: Weights(a=3.0), help="weights whose default is not the class's")
    scale: float = doc(1.0, "a scale")


@dataclass
class Run:
    group: Group = doc(factory=lambda: Group(scale=0.5), help="nested twice, defaults set by the parent")


def test_partial_nested_settings_keep_the_parents_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {group: {first: {b: 2}}}\n")
    want = Run(group=Group(first=Weights(a=3.0, b=2.0), scale=0.5))
    assert load_config(Run, path, section="train") == want
    assert load_config(Run, overrides={"group.first.b": 2.0}) == want
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Run)
    assert load_config(Run, flags=parser.parse_args(["--group.first.b", "2"])) == want


def test_partial_optim_and_reward_flags_keep_the_trainers_defaults():
    from dultra.rl.config import TrainConfig

    cfg = load_config(TrainConfig, overrides={"optim.grad_clip": 0.5, "rewards.code.steps": 0.2})
    default = TrainConfig()
    assert cfg.optim == replace(default.optim, grad_clip=0.5)  # lr 5e-6, weight decay 0.1
    assert cfg.rewards.code == replace(default.rewards.code, steps=0.2)  # correctness x3
    assert cfg.rewards.math == default.rewards.math


def test_an_empty_flag_is_refused_not_read_as_unset():
    """`--output-dir "$OUT"` with OUT unset would write into the current directory."""
    _, args = _parse(["--name", ""])
    with pytest.raises(ConfigError, match="^name is empty: give a value, or leave the setting out$"):
        load_config(Outer, flags=args)
