"""Checkpoints: key layout of the published LLaDA / dUltra files, round trips, clear errors."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from dultra.errors import CheckpointError, ConfigError
from dultra.model import LLaDAConfig, LLaDAModelLM
from dultra.model.loading import load, load_model, load_tokenizer, resolve
from dultra.model.tiny import tiny_checkpoint
from dultra.model.tokenizer import check_tokenizer
from tests.helpers import small_model

BLOCK_KEYS = ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out")
HEAD_KEYS = {
    "time_embedding.mlp.0.weight", "time_embedding.mlp.0.bias", "time_embedding.mlp.2.weight",
    "time_embedding.mlp.2.bias", "mask_embedding.weight", "norm_out_1.modulation.weight",
    "norm_out_1.modulation.bias", "norm_out_2.modulation.weight", "norm_out_2.modulation.bias",
    "mask_linear.weight", "mask_linear.bias",
} | {f"mask_head.0.{k}.weight" for k in BLOCK_KEYS}

# Fields of the official GSAI-ML/LLaDA-8B-Instruct config.json that we keep but do not use.
OFFICIAL_EXTRA = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "attention_dropout": 0.0,
    "attention_layer_norm": False, "attention_layer_norm_with_affine": True, "bias_for_layer_norm": False,
    "block_group_size": 1, "block_type": "llama", "embedding_dropout": 0.0, "flash_attention": True,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "input_emb_norm": False, "layer_norm_type": "rms", "layer_norm_with_affine": True,
    "mlp_ratio": 4, "multi_query_attention": None, "precision": "amp_bf16", "residual_dropout": 0.0,
    "rope": True, "rope_full_precision": True, "scale_logits": False, "use_cache": False, "weight_tying": False,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
}


def _base_keys(n_layers):
    keys = {f"model.transformer.{k}.weight" for k in ("wte", "ln_f", "ff_out")}
    return keys | {f"model.transformer.blocks.{i}.{k}.weight" for i in range(n_layers) for k in BLOCK_KEYS}


def test_checkpoint_keys_are_the_published_layout(tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert keys == _base_keys(2) | HEAD_KEYS


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_saved_weights_are_as_readable_as_the_umask_allows(tmp_path, umask, mode):
    """transformers alone writes them 0600: another pipeline step's user could not read them."""
    old = os.umask(umask)
    try:
        small_model().save_pretrained(tmp_path, max_shard_size="100KB")  # sharded: an index and several files
    finally:
        os.umask(old)
    weights = sorted(tmp_path.glob("*.safetensors*"))
    assert len(weights) > 2 and (tmp_path / "model.safetensors.index.json") in weights
    assert {oct(p.stat().st_mode & 0o777) for p in weights} == {oct(mode)}


def test_save_load_round_trip_keeps_model_and_head(tmp_path):
    model = small_model()
    model.fuse_projections()  # saving splits fused blocks back into the checkpoint layout
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    for name, tensor in small_model().state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.config.num_head_layers == 1


def _write_official_layout(model: LLaDAModelLM, path, architectures, extra_config):
    """Write a checkpoint the way the published repos are laid out: sharded safetensors + index."""
    path.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, path / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in ("dtype", "transformers_version")}
    cfg.update(extra_config, architectures=architectures, model_type="llada")
    (path / "config.json").write_text(json.dumps(cfg))


def test_official_llada_layout_loads_without_remote_code(tmp_path):
    base = small_model(num_head_layers=0)
    cfg = dict(OFFICIAL_EXTRA)
    _write_official_layout(base, tmp_path / "llada", ["LLaDAModelLM"], cfg)
    loaded = AutoModel.from_pretrained(tmp_path / "llada", trust_remote_code=False)
    assert isinstance(loaded, LLaDAModelLM) and not loaded.config.has_planner
    ids = torch.randint(0, 60, (1, 12))
    assert torch.allclose(loaded.eval()(ids).logits, base(ids).logits, atol=1e-6)


def test_published_dultra_layout_loads_with_its_planner(tmp_path):
    model = small_model()
    cfg = dict(OFFICIAL_EXTRA, num_head_layers=1, use_adaln=True, use_mask_embeddings=True, use_block_embeddings=False)
    _write_official_layout(model, tmp_path / "dultra", ["LLaDOUModelLM"], cfg)
    loaded = load_model(tmp_path / "dultra")
    assert loaded.config.has_planner
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_add_planner_to_a_plain_llada_checkpoint(tmp_path):
    small_model(num_head_layers=0).save_pretrained(tmp_path)
    assert not load_model(tmp_path).config.has_planner
    model = load_model(tmp_path, add_planner=True)
    assert model.config.has_planner and len(model.planner_parameters()) > 0


def test_missing_keys_are_an_error(tmp_path):
    small_model().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.transformer.blocks.1.q_proj.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"1 missing keys \(model.transformer.blocks.1.q_proj.weight\)"):
        load_model(tmp_path)


def test_missing_planner_keys_are_an_error_unless_adding_a_head(tmp_path):
    small_model().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("model.")}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"the weights lack planner-head layers that config.json's "
                                              r"num_head_layers \(1\) declares"):
        load_model(tmp_path)


def test_a_config_with_mlp_ratio_instead_of_mlp_hidden_size_loads(tmp_path):
    """The official code reads mlp_ratio x d_model when mlp_hidden_size is absent or null."""
    model = small_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    x = torch.tensor([[5, 6, 8, 9]])
    for hidden in ("absent", None):
        ratio = {k: v for k, v in config.items() if k != "mlp_hidden_size"} | {"mlp_ratio": 2}
        (tmp_path / "config.json").write_text(json.dumps(ratio if hidden == "absent" else
                                                         ratio | {"mlp_hidden_size": hidden}))
        loaded = load_model(tmp_path)
        assert loaded.config.mlp_hidden_size == 64
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    assert LLaDAConfig().mlp_hidden_size == 12288  # neither set: LLaDA-8B's
    assert LLaDAConfig(mlp_hidden_size=12288, mlp_ratio=4).mlp_hidden_size == 12288  # the official config: the size wins


@pytest.mark.parametrize("field, value, message", [
    ("n_heads", 0, "n_heads=0: it must be an integer >= 1"),
    ("d_model", "32", "d_model='32': it must be an integer >= 1"),
    ("n_layers", None, "n_layers=None: it must be an integer >= 1"),
    ("max_sequence_length", None, "max_sequence_length=None: it must be an integer >= 1"),
    ("num_head_layers", -1, "num_head_layers=-1: it must be an integer >= 0"),
    ("vocab_size", 64.0, "vocab_size=64.0: it must be an integer >= 1"),
    ("rope_theta", None, "rope_theta=None: it must be a number > 0"),
    ("rms_norm_eps", 0, "rms_norm_eps=0: it must be a number > 0"),
    ("pad_token_id", 999, "pad_token_id must be a token id below vocab_size (64), got 999"),
])
def test_sizes_and_rates_of_the_wrong_kind_are_refused_when_loaded(tmp_path, field, value, message):
    """They failed deep inside the model (a ZeroDivisionError, a TypeError mid-generate), some
    only after the weights had loaded."""
    small_model().save_pretrained(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {field: value}))
    with pytest.raises((ConfigError, CheckpointError), match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(tmp_path)


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json: not a Hugging Face checkpoint directory$"):
        load_model(tmp_path)
    run = tmp_path / "run"  # a training run's directory, or one of its step checkpoints, given as the model
    small_model().save_pretrained(run / "final")
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    (run / "checkpoints" / "step-00000002" / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match=f"did you mean {run / 'final'}"):
        load_model(run)
    with pytest.raises(CheckpointError, match=f"a training state for --resume; the run's model is {run / 'final'}"):
        load_model(run / "checkpoints" / "step-00000002")


@pytest.mark.parametrize("damage, message", [
    ("no-weights", "cannot load the weights"),
    ("truncated", "cannot load the weights"),
    ("misshapen", "9 mismatched keys (mask_head.0.ff_out.weight: (32, 64) in the weights, (32, 40) from "
                  "config.json, "),
    ("bad-json", "is not readable JSON"),
    ("other-model", "holds a 'qwen2' model, not LLaDA"),
    ("list-config", "not a model config"),
])
def test_broken_checkpoints_are_one_line_errors(tmp_path, damage, message):
    small_model().save_pretrained(tmp_path)
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    if damage == "no-weights":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "misshapen":
        config.write_text(json.dumps(json.loads(config.read_text()) | {"mlp_hidden_size": 40}))
    elif damage == "bad-json":
        config.write_text("{not json")
    elif damage == "other-model":
        config.write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    else:
        config.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_model(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("{bad", "is not a valid generation config (JSONDecodeError"),
    ("[1, 2]", "is not a valid generation config (AttributeError"),
    ('{"eos_token_id": "</s>"}', "eos_token_id must be a token id or a list of them, got '</s>'"),
])
def test_a_broken_generation_config_is_one_line_error(tiny_tokenizer, tmp_path, text, message):
    from dultra.model.loading import stop_token_ids

    model = small_model(vocab_size=len(tiny_tokenizer), embedding_size=len(tiny_tokenizer))
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[")):
        stop_token_ids(tmp_path, tiny_tokenizer, model.config)


def test_a_checkpoint_without_tokenizer_files_says_so(tmp_path):
    small_model().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"the checkpoint .* has no tokenizer files \(tokenizer.json, "
                                              r"tokenizer_config.json\): save the tokenizer with the model"):
        load_tokenizer(tmp_path, small_model().config.mask_token_id)


def test_a_list_of_eos_ids_makes_each_a_stop_id_and_the_first_the_fill(tmp_path):
    from dultra.decoding import DecodeConfig, Threshold, generate
    from tests.helpers import EOS, MASK

    model = small_model()
    with torch.no_grad():  # rigged to predict token 7 everywhere
        for blk in model.model.transformer.blocks:
            blk.attn_out.weight.zero_()
            blk.ff_out.weight.zero_()
        tr = model.model.transformer
        tr.ff_out.weight.zero_()
        tr.ff_out.weight[7] = tr.wte.weight[MASK]
    model.save_pretrained(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"eos_token_id": [EOS, 7]}))
    loaded = load_model(tmp_path)
    assert loaded.config.eos_token_id == EOS and loaded.config.stop_token_ids == [EOS, 7]
    loaded.save_pretrained(tmp_path / "again")
    assert load_model(tmp_path / "again").config.stop_token_ids == [EOS, 7]
    decode = DecodeConfig(gen_length=8, block_length=8)
    prompt = torch.tensor([[5, 6, 8]])
    assert generate(loaded, prompt, None, Threshold(0.5), decode).lengths.tolist() == [0]  # 7 stops
    assert generate(model, prompt, None, Threshold(0.5), decode).lengths.tolist() == [8]  # EOS alone


def test_unsupported_architecture_fields_are_rejected():
    with pytest.raises(ConfigError, match="alibi"):
        LLaDAConfig(alibi=True, rope=False)
    with pytest.raises(ConfigError, match="weight_tying"):
        LLaDAConfig(weight_tying=True)
    # A mask id that is no token would fail mid-decode (torch.full(None), an embedding IndexError).
    for bad in (None, 99999, -1):
        with pytest.raises(ConfigError, match=f"mask_token_id must be a token id below vocab_size \\(256\\), "
                                              f"got {bad}"):
            LLaDAConfig(vocab_size=256, embedding_size=256, mask_token_id=bad, eos_token_id=1, pad_token_id=2)
    # A mask id that also stops would end every completion at its first masked position.
    for stops in (dict(eos_token_id=5), dict(eos_token_id=1, stop_token_ids=[5])):
        with pytest.raises(ConfigError, match=r"the mask token \(5\) is also a stop token"):
            LLaDAConfig(vocab_size=256, embedding_size=256, mask_token_id=5, pad_token_id=2, **stops)


def test_tiny_default_builds_once_and_loads_with_its_tokenizer():
    path = tiny_checkpoint()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    model, tok = load("tiny")
    assert tiny_checkpoint() == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert tok.mask_token_id == model.config.mask_token_id
    assert tok.eos_token_id == model.config.eos_token_id
    assert tok.pad_token_id == model.config.pad_token_id
    assert model.config.has_planner


def test_tiny_variant_changes_only_the_named_fields_and_is_cached_apart():
    model, _ = load("tiny:n_layers=2,d_model=64")
    default = load_model("tiny")
    assert (model.config.n_layers, model.config.d_model) == (2, 64)
    assert model.config.n_heads == default.config.n_heads and model.config.has_planner
    assert resolve("tiny:n_layers=2,d_model=64") == resolve("tiny:d_model=64,n_layers=2") != resolve("tiny")


@pytest.mark.parametrize("spec, message", [
    ("tiny:layers=6", "key in d_model, n_heads, n_layers, mlp_hidden_size"),
    ("tiny:n_layers", "key in"),
    ("tiny:n_layers=0", "n_layers must be a positive integer"),
    ("tiny:n_layers=six", "n_layers must be a positive integer"),
    ("tiny:d_model=130", r"must be divisible by n_heads \(4\)"),
])
def test_bad_tiny_specs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        load(spec)


def test_a_tokenizer_without_the_mask_token_is_rejected(tiny_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="mask"):
        check_tokenizer(tiny_tokenizer, mask_token_id=100)
    tiny_tokenizer.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg.pop("mask_token", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no mask token"):
        load_tokenizer(tmp_path, mask_token_id=100)
