"""LLaDA configuration, with the field names of the official `config.json`.

`LLaDAConfig.from_pretrained("path/to/LLaDA-8B-Instruct")` reads the published file as is;
fields this implementation does not use (dropout rates, init settings, `flash_attention`...)
are kept so a saved config round-trips. Settings that would change the architecture and
that we do not implement (ALiBi, biases, weight tying, other block or norm types) are
rejected with a clear error instead of being silently ignored.

The dUltra planner head adds `num_head_layers` (0 = plain LLaDA, no head), `use_adaln`,
`use_mask_embeddings` and `use_block_embeddings`, as in the published dUltra checkpoints.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from dultra.configio import IS_KIND
from dultra.errors import ConfigError

# (field, value we require, why) for official fields that select an architecture variant.
_REQUIRED = (
    ("block_type", "llama", "only the LLaMA-style block of LLaDA is implemented"),
    ("layer_norm_type", "rms", "only RMSNorm is implemented"),
    ("activation_type", "silu", "only the SwiGLU feed-forward is implemented"),
    ("alibi", False, "ALiBi is not implemented (LLaDA uses RoPE)"),
    ("rope", True, "LLaDA uses rotary position embeddings"),
    ("include_bias", False, "linear biases are not implemented"),
    ("include_qkv_bias", False, "q/k/v biases are not implemented"),
    ("weight_tying", False, "tied input/output embeddings are not implemented"),
    ("block_group_size", 1, "block groups are not implemented"),
    ("scale_logits", False, "logit scaling is not implemented"),
    ("input_emb_norm", False, "an input-embedding norm is not implemented"),
    ("attention_layer_norm", False, "q/k layer norms are not implemented"),
)


_SIZES = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size", "embedding_size",
          "max_sequence_length", "num_head_layers")


def _check_numbers(config: LLaDAConfig, vocab_size) -> None:
    """ConfigError for a size or rate of the wrong kind (null, "128", 0), which would fail deep
    inside the model, some only at the first forward."""
    for field in _SIZES:
        value = vocab_size if field == "vocab_size" else getattr(config, field)
        at_least = 0 if field == "num_head_layers" else 1
        if not IS_KIND["int"](value) or value < at_least:
            raise ConfigError(f"LLaDA config has {field}={value!r}: it must be an integer >= {at_least}.")
    for field in ("rope_theta", "rms_norm_eps"):
        value = getattr(config, field)
        if not (IS_KIND["float"](value) and 0 < value < float("inf")):
            raise ConfigError(f"LLaDA config has {field}={value!r}: it must be a number > 0.")


def _product(ratio, d_model):
    """mlp_ratio x d_model; a ratio that is no number is kept, for _check_numbers to name."""
    return int(ratio * d_model) if IS_KIND["float"](ratio) and IS_KIND["float"](d_model) else ratio


class LLaDAConfig(PretrainedConfig):
    """Configuration of a LLaDA masked-diffusion LM, optionally with a dUltra planner head.

    Args:
        d_model: hidden size.
        n_heads: attention heads.
        n_kv_heads: key/value heads (grouped-query attention when < n_heads).
        n_layers: transformer blocks in the base model.
        mlp_hidden_size: SwiGLU inner size (None: mlp_ratio x d_model, as the official
            code reads a config without it; LLaDA-8B's 12288 when neither is set).
        vocab_size: tokenizer vocabulary size.
        embedding_size: rows of the embedding and output matrices (>= vocab_size, padded).
        max_sequence_length: longest prompt + completion the model accepts.
        rms_norm_eps: epsilon of every RMSNorm.
        rope_theta: RoPE base.
        mask_token_id: id of the mask token the completion starts from.
        eos_token_id: id that ends a completion (LLaDA fills the tail with it); a list (as
            many HF configs write) makes every id a stop id and the first the fill id.
        pad_token_id: id used to left-pad prompts in a batch.
        num_head_layers: transformer blocks in the planner head; 0 means no planner head.
        use_adaln: planner conditions on the timestep with AdaLN (the only supported value).
        use_mask_embeddings: planner adds a learned embedding of "is a current-block mask".
        use_block_embeddings: unused block embedding of early dUltra drafts (must be False).
        init_std: standard deviation of the normal init of freshly built weights.
    """

    model_type = "llada"

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int | None = None,
        vocab_size: int = 126464,
        embedding_size: int | None = None,
        max_sequence_length: int = 4096,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 500000.0,
        mask_token_id: int = 126336,
        eos_token_id: int | list[int] = 126081,
        pad_token_id: int = 126081,
        num_head_layers: int = 0,
        use_adaln: bool = True,
        use_mask_embeddings: bool = True,
        use_block_embeddings: bool = False,
        init_std: float = 0.02,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.n_layers = n_layers
        if mlp_hidden_size is None:
            ratio = kwargs.get("mlp_ratio")
            mlp_hidden_size = 12288 if ratio is None else _product(ratio, d_model)
        self.mlp_hidden_size = mlp_hidden_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.mask_token_id = mask_token_id
        self.num_head_layers = num_head_layers
        self.use_adaln = use_adaln
        self.use_mask_embeddings = use_mask_embeddings
        self.use_block_embeddings = use_block_embeddings
        self.init_std = init_std
        stops = list(eos_token_id) if isinstance(eos_token_id, list | tuple) else [eos_token_id]
        if not stops or not all(isinstance(i, int) for i in stops):
            raise ConfigError(f"eos_token_id must be a token id or a list of them, got {eos_token_id!r}")
        eos_token_id = stops[0]
        self.stop_token_ids = list(dict.fromkeys([*stops, *kwargs.pop("stop_token_ids", [])]))
        """Every id that ends a completion (eos_token_id first)."""
        kwargs.setdefault("tie_word_embeddings", False)
        # Before transformers' own validators, which fail on these with their own errors.
        _check_numbers(self, vocab_size)
        super().__init__(
            vocab_size=vocab_size,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Raise ConfigError for settings this implementation would silently get wrong."""
        for field, required, why in _REQUIRED:
            value = getattr(self, field, required)
            if value is not None and value != required:
                raise ConfigError(f"LLaDA config has {field}={value!r}: {why}.")
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                f"and n_heads by n_kv_heads ({self.n_kv_heads})."
            )
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError("the attention head size must be even for rotary embeddings.")
        if self.embedding_size < self.vocab_size:
            raise ConfigError("embedding_size must be at least vocab_size.")
        for field in ("mask_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, field)
            if field == "pad_token_id" and value is None:  # the tokenizer's pads
                continue
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(f"{field} must be a token id below vocab_size ({self.vocab_size}), got {value!r}.")
        if self.mask_token_id in self.stop_token_ids:
            raise ConfigError(f"the mask token ({self.mask_token_id}) is also a stop token (eos_token_id or "
                              "stop_token_ids): every position still masked would end the completion.")
        if self.num_head_layers and not self.use_adaln:
            raise ConfigError("planner heads without AdaLN (use_adaln=False) are not supported.")
        if self.use_block_embeddings:
            raise ConfigError(
                "use_block_embeddings=True is not supported: no published dUltra checkpoint uses it."
            )

    # transformers-standard names, so generic tooling (accelerate, FSDP wrap policies) works.
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def has_planner(self) -> bool:
        return self.num_head_layers > 0
