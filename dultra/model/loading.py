"""Load a model + tokenizer from `tiny` (or `tiny:n_layers=6,...`), a checkpoint directory or a Hub id.

Accepts the official LLaDA checkpoints (GSAI-ML/LLaDA-8B-Instruct), the published dUltra
checkpoints (sengi/dUltra-*), and checkpoints this project writes; named by a Hub id, they
are downloaded once (dultra.model.hub).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from dultra.errors import CheckpointError, ConfigError, first_line
from dultra.model.config import LLaDAConfig
from dultra.model.hub import hub_checkpoint, is_hub_id
from dultra.model.modeling import PLANNER_MODULES, LLaDAModelLM
from dultra.model.tiny import parse_spec, tiny_checkpoint
from dultra.model.tokenizer import check_tokenizer


def resolve(model: str | Path) -> Path:
    """`tiny[:key=value,...]` -> the cached (variant of the) tiny default; a checkpoint
    directory; or, where no such path exists, a Hugging Face Hub id (owner/name[@revision])
    -> its downloaded snapshot."""
    arch = parse_spec(str(model))
    if arch is not None:
        return tiny_checkpoint(**arch)
    path = Path(model).expanduser()
    # `runs/demoo` is a mistyped path when runs/ is here, not a Hub id to look up over the network.
    local = path.parent != Path(".") and path.parent.is_dir()
    if not path.exists() and is_hub_id(str(model)) and not local:
        path = hub_checkpoint(str(model))
    if not path.is_dir():
        why = f"the directory {path.parent} exists here, so this is a path, not a Hub id" \
            if local and is_hub_id(str(model)) else "use `tiny`, a local directory or a Hub id"
        raise CheckpointError(f"no checkpoint directory at {path} ({why})")
    if not (path / "config.json").exists():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face checkpoint directory{_hint(path)}")
    return path


TRAINING_RECORD = "dultra_training.json"  # written by dultra's training stages next to the weights


def training_record(path: Path) -> dict:
    """How a checkpoint of dultra's own training was trained ({"stage", "steps", "config"}); {} for others."""
    try:
        record = json.loads((path / TRAINING_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def trained_lengths(model: str | Path) -> tuple[int, int | None] | None:
    """(gen_length, block_length) a local checkpoint was trained with by dultra: its planner
    only ever saw those. block_length None: trained without blocks (pretraining masks the
    whole completion). None for other checkpoints (and without touching the network)."""
    path = Path(model).expanduser()
    trained = training_record(path).get("config") if path.is_dir() else None
    trained = trained if isinstance(trained, dict) else {}  # unreadable: as if none
    gen, block = trained.get("gen_length"), trained.get("block_length")
    if not (isinstance(gen, int) and gen > 0):
        return None
    return gen, block if isinstance(block, int) and block > 0 else None


def untrained_planner(path: Path) -> bool:
    """True for a checkpoint whose planner head dultra never trained (a pretraining stage's output)."""
    return training_record(path).get("stage") == "pretrain"


def _hint(path: Path) -> str:
    """Where the model is when `path` is a training run's directory or one of its step checkpoints."""
    if (path / "final" / "config.json").exists():
        return f" (a training run's model is its final/: did you mean {path / 'final'}?)"
    if (path / "trainer_state.json").exists():  # OUTPUT_DIR/checkpoints/step-N
        return f" ({path.name} is a training state for --resume; the run's model is {path.parent.parent / 'final'})"
    return ""


def load_model(
    model: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    add_planner: bool = False,
) -> LLaDAModelLM:
    """Load weights; every parameter must come from the checkpoint.

    add_planner: give a plain LLaDA checkpoint a freshly initialised planner head (the
    start of a planner warm start); only the head's keys may then be missing.
    """
    path = resolve(model)
    overrides = {}
    config = read_config(path)
    if add_planner and not config.has_planner:
        overrides["num_head_layers"] = 1
    # transformers reports missing keys as a warning table; we turn them into one error below.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # Mismatched shapes come back in `info` (refused below); otherwise transformers raises
        # an error that points at the table the verbosity above hides.
        loaded, info = LLaDAModelLM.from_pretrained(
            path, dtype=dtype or torch.float32, output_loading_info=True, ignore_mismatched_sizes=True, **overrides
        )
    except ConfigError:
        raise
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:  # no, truncated or misshapen weights
        raise CheckpointError(f"cannot load the weights in {path}: {first_line(err)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh_head = bool(overrides)
    problems = {
        "missing": [k for k in info["missing_keys"] if not (fresh_head and k.split(".")[0] in PLANNER_MODULES)],
        "unexpected": list(info["unexpected_keys"]),
        "mismatched": [f"{key}: {tuple(saved)} in the weights, {tuple(built)} from config.json"
                       for key, saved, built in info.get("mismatched_keys", [])],
    }
    if any(problems.values()):
        raise CheckpointError(f"checkpoint {path} does not match the model: {_describe(problems, config)}")
    if device is not None:
        loaded = loaded.to(device)
    return loaded.eval()


def read_config(path: Path) -> LLaDAConfig:
    """The LLaDAConfig of checkpoint directory `path`, or a CheckpointError saying why not."""
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path / 'config.json'} is not readable JSON: {first_line(err)}") from None
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or kind not in (None, LLaDAConfig.model_type):
        what = f"a {kind!r} model" if kind else "not a model config"
        raise CheckpointError(f"{path} holds {what}, not LLaDA (model_type 'llada'): "
                              "give a LLaDA or dUltra checkpoint")
    try:
        return LLaDAConfig.from_pretrained(path)
    except ConfigError:  # an architecture this implementation refuses: its own message
        raise
    except (OSError, TypeError, ValueError, StrictDataclassError) as err:  # the last: transformers' validators
        raise CheckpointError(f"{path / 'config.json'} is not a usable LLaDA config: {first_line(err)}") from None


def _describe(problems: dict[str, list[str]], config: LLaDAConfig) -> str:
    parts = []
    for kind, keys in problems.items():
        if keys:
            shown = ", ".join(sorted(keys)[:4]) + (", ..." if len(keys) > 4 else "")
            parts.append(f"{len(keys)} {kind} keys ({shown})")
    missing = problems["missing"]
    if missing and all(k.split(".")[0] in PLANNER_MODULES for k in missing):
        parts.append(f"the weights lack planner-head layers that config.json's num_head_layers "
                     f"({config.num_head_layers}) declares")
    return "; ".join(parts)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_tokenizer_files(path: Path, whose: str) -> None:
    """A directory without any tokenizer file: say so, rather than what transformers then guesses
    (that sentencepiece is missing)."""
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        raise CheckpointError(f"{whose} {path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}): "
                              "save the tokenizer with the model")


def load_tokenizer(model: str | Path, mask_token_id: int) -> PreTrainedTokenizerBase:
    path = resolve(model)
    check_tokenizer_files(path, "the checkpoint")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"no usable tokenizer in {path}: {first_line(err)}") from None
    tokenizer.padding_side = "left"
    check_tokenizer(tokenizer, mask_token_id)
    return tokenizer


def load(
    model: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
    add_planner: bool = False,
) -> tuple[LLaDAModelLM, PreTrainedTokenizerBase]:
    """Model (see `load_model`) and its tokenizer."""
    loaded = load_model(model, dtype=dtype, device=device, add_planner=add_planner)
    return loaded, load_tokenizer(model, loaded.config.mask_token_id)


def stop_token_ids(path: str | Path, tokenizer: PreTrainedTokenizerBase, config: LLaDAConfig) -> tuple[int, ...]:
    """Every id that ends a completion: the config's EOS, the tokenizer's, generation_config's."""
    ids = set(config.stop_token_ids)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    gen = resolve(path) / "generation_config.json"
    if gen.exists():
        try:
            eos = json.loads(gen.read_text()).get("eos_token_id")
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        except (ValueError, AttributeError, TypeError) as err:  # not JSON, not an object, not ids
            raise CheckpointError(f"{gen} is not a valid generation config ({type(err).__name__}: {err})") from None
        if not all(isinstance(i, int) for i in ids):
            raise CheckpointError(f"{gen}: eos_token_id must be a token id or a list of them, got {eos!r}")
    return tuple(sorted(ids))
