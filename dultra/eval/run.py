"""A whole evaluation: every strategy setting on a task, per-sample JSONL, report, resume.

    dultra eval --model PATH --task gsm8k --strategies "planner:factor=1.0,threshold:tau=0.9" --output-dir DIR

OUTPUT_DIR/samples.jsonl   one record per (strategy, example), appended as batches finish
OUTPUT_DIR/settings.json   what is being evaluated (a rerun resumes only if it matches)
OUTPUT_DIR/report.{json,html}, pareto.png
An interrupted run resumes: records already in samples.jsonl are kept, the rest decoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import sys
from collections import Counter
from pathlib import Path

import torch

from dultra.configio import changed_settings, config_dict
from dultra.data import Example, load_task, read_examples, render_prompts
from dultra.data.prompts import solutions_too_long
from dultra.data.registry import task_kind
from dultra.decoding import DecodeConfig, Strategy, parse_strategy
from dultra.decoding.generate import check_cache, check_given_lengths, check_settings, lengths_for
from dultra.errors import ConfigError, DataError, DultraError
from dultra.eval.accuracy import SampleRecord, evaluate
from dultra.eval.config import EvalConfig
from dultra.eval.report import method_aup, summarize, write_report
from dultra.model.device import check_device
from dultra.model.loading import load, read_config, resolve, stop_token_ids, untrained_planner
from dultra.progress import progress


class EvalError(DultraError):
    """The evaluation finished but cannot be trusted (too many unscored samples)."""


def split_strategies(text: str, gen_length: int) -> list[str]:
    """"planner:factor=1.0,low-confidence:steps={gen}" -> specs, `{gen}` replaced by gen_length;
    a `key=value` without a name joins the previous one."""
    specs: list[str] = []
    text = text.replace("{gen}", str(gen_length))
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        if ":" not in part and "=" in part and specs:
            specs[-1] += "," + part
        else:
            specs.append(part)
    return specs


def parse_strategies(text: str, gen_length: int) -> list[Strategy]:
    """split_strategies, each parsed; refuses none and the same strategy twice."""
    specs = [parse_strategy(s) for s in split_strategies(text, gen_length)]
    if not specs:
        raise ConfigError("no strategies to evaluate")
    if repeated := sorted(spec for spec, n in Counter(s.spec() for s in specs).items() if n > 1):
        raise ConfigError(f"strategies given twice: {', '.join(repeated)} (the same settings, maybe written "
                          "differently): each is evaluated once")
    return specs


def _sha256_files(paths) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _data_hash(examples: list[Example]) -> str:
    return hashlib.sha256(json.dumps([ex.to_dict() for ex in examples], sort_keys=True).encode()).hexdigest()


def metadata(cfg: EvalConfig, path: Path, tokenizer, examples: list[Example], device: str, dtype,
             specs: list) -> dict:
    """Everything needed to reproduce the numbers."""
    import transformers

    import dultra

    return {
        # Prepared examples name their own task (--task then chooses nothing).
        "model": str(cfg.model), "task": ", ".join(sorted({ex.task for ex in examples})) if cfg.examples else cfg.task,
        "split": None if cfg.examples else cfg.split, "examples": len(examples),
        "model_sha256": _sha256_files(path.glob("*.safetensors")),
        "tokenizer_sha256": _sha256_files([p for p in path.iterdir() if p.name.startswith(("tokenizer", "chat_template"))]),
        "data_sha256": _data_hash(examples),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "first_prompt": render_prompts(tokenizer, examples[:1])[0] if examples else None,
        "settings": config_dict(cfg), "device": torch.cuda.get_device_name() if device.startswith("cuda") else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "dtype": str(dtype), "greedy": not any(s.name == "planner-sample" for s in specs),  # it draws positions
        "versions": {"dultra": getattr(dultra, "__version__", "0.1.0"), "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": sys.version.split()[0]},
    }


# Settings that change how a run goes, not what it measures: a resumed run may change them.
RESUMABLE = ("batch_size", "warmup", "output_dir", "sandbox_url", "max_unscored_fraction", "aup_y_max")


def _resume(out: Path, settings: dict) -> list[SampleRecord]:
    """Records of an earlier run with the same settings; an error if the directory holds another one."""
    settings_path, samples = out / "settings.json", out / "samples.jsonl"
    if settings_path.exists():
        try:
            before = json.loads(settings_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{settings_path} is unreadable; choose another --output-dir") from None
        # A changed setting explains the rest (another limit is other data); else name what the hashes say.
        changed = changed_settings(before.get("settings", {}), settings["settings"], RESUMABLE) or \
            [k.removesuffix("_sha256") for k in settings if k != "settings" and before.get(k) != settings[k]]
        if changed:
            raise ConfigError(f"{out} holds an evaluation with other settings ({', '.join(changed)} differ); choose "
                              "another --output-dir to start a new one")
    out.mkdir(parents=True, exist_ok=True)
    partial = settings_path.with_suffix(".json.tmp")  # a run killed mid-write leaves no half file
    partial.write_text(json.dumps(settings, indent=2, sort_keys=True))
    partial.replace(settings_path)
    if not samples.exists():
        return []
    records = []
    for line in samples.read_text().splitlines():
        try:
            records.append(SampleRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            break  # a line cut by the interruption: that batch is decoded again
    samples.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return records


def check_config(cfg: EvalConfig) -> None:
    """Clear errors for settings that cannot evaluate, before any data or model loads."""
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.limit < 0:
        raise ConfigError(f"limit must be >= 0 (0: all), got {cfg.limit}")
    if not 0 <= cfg.max_unscored_fraction <= 1:
        raise ConfigError(f"max_unscored_fraction must be in [0, 1], got {cfg.max_unscored_fraction}")
    if cfg.aup_y_max is not None and not 1 < cfg.aup_y_max <= 100:
        raise ConfigError(f"aup_y_max is an accuracy in % (77.7, not 0.777), got {cfg.aup_y_max}")
    if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
        raise ConfigError(f"output_dir {cfg.output_dir} is a file, not a directory")
    if cfg.device is not None:
        check_device(cfg.device)
    # Before the checkpoint is looked up: a Hub id downloads it.
    check_given_lengths(cfg.gen_length, cfg.block_length)
    check_cache(cfg.cache)
    specs = parse_strategies(cfg.strategies, cfg.gen_length or DecodeConfig.gen_length)
    if cfg.gen_length is not None and cfg.block_length is not None:  # else known once the checkpoint is
        checked_decode_config(cfg, specs)
    if not cfg.examples:
        task_kind(cfg.task)
    if cfg.sandbox_url is not None:
        from dultra.rewards.sandbox_client import check_url

        check_url(cfg.sandbox_url)


def checked_decode_config(cfg: EvalConfig, specs: list[Strategy]) -> DecodeConfig:
    """The decoding settings of `cfg` (its lengths set), each strategy checked against them."""
    decode = DecodeConfig(gen_length=cfg.gen_length, block_length=cfg.block_length, seed=cfg.seed,
                          cache=cfg.cache, compile=cfg.compile)
    for strategy in specs:
        check_settings(decode, strategy)
    return decode


def with_lengths(cfg: EvalConfig, path: Path) -> EvalConfig:
    """Unset lengths filled in (lengths_for): those the checkpoint at `path` (cfg.model resolved)
    was trained with by dultra, else the defaults."""
    gen, block, note = lengths_for(path, cfg.gen_length, cfg.block_length)
    if note:
        print(f"eval: {note}", file=sys.stderr)
    return dataclasses.replace(cfg, gen_length=gen, block_length=block)


def run_evaluation(cfg: EvalConfig) -> dict:
    """Evaluate, write the report, return it (rows, methods, metadata, paths)."""
    check_config(cfg)
    # The data and the sandbox before the checkpoint, which a Hub id downloads (gigabytes).
    if cfg.examples:
        examples = read_examples(cfg.examples)[: cfg.limit or None]
    else:
        examples = load_task(cfg.task, cfg.split, path=cfg.data, limit=cfg.limit or None)
    if not examples:
        raise DataError(f"no examples to evaluate in {cfg.examples or cfg.data or cfg.task} ({cfg.split})")
    if repeated := sorted(i for i, n in Counter(ex.id for ex in examples).items() if n > 1):
        raise DataError(f"example ids repeat in {cfg.examples or cfg.data or cfg.task} ({', '.join(repeated[:3])}"
                        f"{', ...' if len(repeated) > 3 else ''}): samples are recorded and resumed by id, so give "
                        "each example its own")
    with contextlib.ExitStack() as stack:
        runner = None
        if any(ex.kind == "code" for ex in examples):
            from dultra.rewards.sandbox_client import SandboxClient

            runner = stack.enter_context(SandboxClient(cfg.sandbox_url))
            runner.check_ready()  # an unreachable sandbox fails now, not after decoding everything
        path = resolve(cfg.model)
        cfg = with_lengths(cfg, path)
        specs = parse_strategies(cfg.strategies, cfg.gen_length)
        return _evaluate(cfg, path, specs, checked_decode_config(cfg, specs), examples, runner)


def _evaluate(cfg: EvalConfig, path: Path, specs: list, decode: DecodeConfig, examples: list[Example],
              runner) -> dict:
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if any(s.uses_planner for s in specs) and not read_config(path).has_planner:  # before minutes of loading
        raise ConfigError(f"{cfg.model} has no planner head, so it cannot decode "
                          f"{', '.join(s.spec() for s in specs if s.uses_planner)}: pass --strategies without "
                          "planner strategies (e.g. threshold:tau=0.9,factor:factor=1.0)")
    if any(s.uses_planner for s in specs) and untrained_planner(path):
        print(f"eval: warning: the planner head of {path} is untrained (a pretraining checkpoint)", file=sys.stderr)
    model, tokenizer = load(path, dtype=dtype, device=device)
    if too_long := solutions_too_long(tokenizer, examples, cfg.gen_length):
        print(f"eval: warning: {too_long}", file=sys.stderr)
    decode.eos_ids = stop_token_ids(path, tokenizer, model.config)
    out = Path(cfg.output_dir)
    meta = metadata(cfg, path, tokenizer, examples, device, dtype, specs)
    records = _resume(out, {k: meta[k] for k in ("model_sha256", "tokenizer_sha256", "data_sha256", "settings")})
    done = {(r.strategy, r.id) for r in records}
    pending = [(s, todo) for s in specs if (todo := [ex for ex in examples if (s.spec(), ex.id) not in done])]
    if cfg.warmup and pending:  # untimed and discarded
        evaluate(model, tokenizer, pending[0][1][: cfg.batch_size], pending[0][0], decode, cfg.batch_size, runner)
    if records:
        print(f"eval: resuming {out}: {len(records)} of {len(specs) * len(examples)} samples are done", file=sys.stderr)
    bar = progress(desc="eval", total=len(specs) * len(examples), initial=len(records), unit="sample")
    with bar, (out / "samples.jsonl").open("a") as sink:
        def save(batch: list[SampleRecord]) -> None:
            sink.write("".join(json.dumps(r.to_dict()) + "\n" for r in batch))
            sink.flush()
            bar.update(len(batch))

        for strategy, todo in pending:
            bar.set_postfix_str(strategy.spec())
            records += evaluate(model, tokenizer, todo, strategy, decode, cfg.batch_size, runner, save).records
    order = {ex.id: i for i, ex in enumerate(examples)}
    spec_order = {s.spec(): i for i, s in enumerate(specs)}
    records.sort(key=lambda r: (spec_order[r.strategy], order[r.id]))
    rows = summarize(records)
    methods = method_aup(rows, cfg.aup_y_max)
    paths = write_report(out, rows, methods, meta)
    worst = max(r["unscored"] / r["samples"] for r in rows)
    if worst > cfg.max_unscored_fraction:
        raise EvalError(f"{worst:.0%} of some strategy's samples could not be scored (sandbox down?); "
                        f"report written to {paths['html']}")
    return {"rows": rows, "methods": methods, "metadata": meta, "paths": paths, "records": records}
