"""LLaDA masked-diffusion LM with the optional dUltra unmasking planner head.

    from dultra.model import LLaDAModelLM
    model = LLaDAModelLM.from_pretrained("path/to/LLaDA-8B-Instruct", dtype=torch.bfloat16)

One class loads the official LLaDA checkpoints and the published dUltra checkpoints
(`sengi/dUltra-math`, ...), without `trust_remote_code`: the base model lives under
`model.transformer.*` and the planner head's modules sit at the top level
(`time_embedding`, `mask_embedding`, `norm_out_1`, `mask_head.0`, `norm_out_2`,
`mask_linear`), exactly the published key layout (docs: dultra.md sections 1-2).

A decoding step is one `forward` that runs the trunk over the whole sequence, then the LM
head only on the current block and the planner only where it is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from dultra.errors import ConfigError
from dultra.model.config import LLaDAConfig
from dultra.model.kv_cache import KVCache
from dultra.model.layers import (
    AdaLayerNorm,
    LLaDABlock,
    RMSNorm,
    TimestepEmbedder,
    _gather_rope,
    _gather_rows,
    rope_cos_sin,
)

PLANNER_MODULES = ("time_embedding", "mask_embedding", "norm_out_1", "mask_head", "norm_out_2", "mask_linear")


@dataclass
class DiffusionLMOutput(ModelOutput):
    """logits: (B, N, V) token logits. planner_logits: (B, N) float32 unmasking logits or None.
    last_hidden_state: (B, L, D) the trunk's output (after the final norm), what both heads
    read. hidden_states: optional tuple of (B, L, D)."""

    logits: torch.Tensor | None = None
    planner_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class SeqLayout:
    """What every forward over one (possibly left-padded) batch shares; build once per batch.

    attn_mask: (B, 1, 1, L) bool, True where a key is a real token; None when nothing is
    padded (lets SDPA pick its fastest kernel). rope: cos, sin (B or 1, 1, L, head_dim).
    """

    attn_mask: torch.Tensor | None
    rope: tuple[torch.Tensor, torch.Tensor]


class LLaDATransformer(nn.Module):
    """Embedding, blocks, final norm, output matrix: keys `transformer.{wte,blocks,ln_f,ff_out}`."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.embedding_size, config.d_model),
                blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
                ff_out=nn.Linear(config.d_model, config.embedding_size, bias=False),
            )
        )
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: torch.Tensor,
        layout: SeqLayout,
        all_states: list | None = None,
        cache: KVCache | None = None,
        fresh: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, L) -> last hidden state after the final norm (B, L, D).

        With a cache and `fresh` (B, F) columns, only those run through the blocks and the
        rest of the output is the cached one (all_states then holds the fresh columns only).
        """
        rope = layout.rope
        if fresh is not None:
            if cache is None or cache.hidden is None:
                raise ConfigError("`fresh` columns need a filled cache: run a forward with `cache` and no `fresh` first")
            input_ids = input_ids.gather(1, fresh)
            rope = tuple(_gather_rope(table, fresh) for table in rope)
        x = self.transformer.wte(input_ids)
        for i, block in enumerate(self.transformer.blocks):
            if all_states is not None:
                all_states.append(x)
            kv = None if cache is None else cache.slot(i)
            if self.gradient_checkpointing and self.training:
                # A cached replay too: the recomputed block reads the same refresh keys.
                x = checkpoint(block, x, rope, layout.attn_mask, kv=kv, fresh=fresh, use_reentrant=False)
            else:
                x = block(x, rope, layout.attn_mask, kv=kv, fresh=fresh)
        x = self.transformer.ln_f(x)
        return x if cache is None else cache.update_hidden(x, fresh)


class LLaDAModelLM(PreTrainedModel):
    """LLaDA base model plus, when `config.num_head_layers > 0`, the dUltra planner head."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDATransformer(config)
        if config.has_planner:
            d = config.d_model
            self.time_embedding = TimestepEmbedder(d)
            if config.use_mask_embeddings:
                self.mask_embedding = nn.Embedding(2, d)
            self.norm_out_1 = AdaLayerNorm(d)
            self.mask_head = nn.ModuleList(LLaDABlock(config) for _ in range(config.num_head_layers))
            self.norm_out_2 = AdaLayerNorm(d)
            self.mask_linear = nn.Linear(d, 1)
            for lin in (self.time_embedding.mlp[0], self.time_embedding.mlp[2],
                        self.norm_out_1.modulation, self.norm_out_2.modulation):
                lin.init_rule = "xavier"
        self.post_init()

    # ----------------------------------------------------------------------------- weights
    def _init_weights(self, module: nn.Module) -> None:
        # transformers only calls this for modules that own parameters (leaves), so special
        # layers carry an `init_rule` tag set in __init__: xavier for the planner's
        # conditioning MLPs (as the reference), normal + zero bias elsewhere.
        std = self.config.init_std
        if isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
        elif isinstance(module, nn.Linear):
            if getattr(module, "init_rule", None) == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    # ------------------------------------------------------------------------- structure
    def base_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def planner_parameters(self) -> list[nn.Parameter]:
        return [p for name in PLANNER_MODULES if hasattr(self, name) for p in getattr(self, name).parameters()]

    def set_trainable(self, base: bool = True, planner: bool = True) -> None:
        """Freeze or unfreeze the base model and the planner head independently."""
        for p in self.base_parameters():
            p.requires_grad_(base)
        for p in self.planner_parameters():
            p.requires_grad_(planner)

    def checkpoint_activations(self, on: bool = True) -> None:
        """Recompute the trunk's block activations in the backward pass instead of keeping them.

        Ours, as transformers deprecates `gradient_checkpointing_enable` for
        `activation_checkpointing_enable`, which older versions lack."""
        self.model.gradient_checkpointing = on

    def _blocks(self) -> list[LLaDABlock]:
        return [m for m in self.modules() if isinstance(m, LLaDABlock)]

    def fuse_projections(self) -> LLaDAModelLM:
        """Concatenate q/k/v and gate/up weights of every block (faster inference; no extra memory)."""
        for block in self._blocks():
            block.fuse_projections()
        return self

    def unfuse_projections(self) -> LLaDAModelLM:
        for block in self._blocks():
            block.unfuse_projections()
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        # The checkpoint layout has separate projections; fused blocks are split back first.
        self.unfuse_projections()
        result = super().save_pretrained(save_directory, *args, **kwargs)
        # transformers writes the weights owner-only (0600), unlike every other file: on a shared
        # volume the next pipeline step or a colleague could not read them. The umask decides.
        umask = os.umask(0)
        os.umask(umask)
        for weights in Path(save_directory).glob("*.safetensors*"):
            weights.chmod(0o666 & ~umask)
        return result

    # --------------------------------------------------------------------------- compute
    def layout(self, attention_mask: torch.Tensor | None, seq_len: int, device=None) -> SeqLayout:
        """attention_mask: (B, L) 1 for tokens, 0 for left padding; None means no padding.

        Positions count real tokens only, so a left-padded prompt sees the same positions
        as when it is decoded alone. A mask is always honoured (no device sync to check
        whether it is all ones); pass None for unpadded batches to get the fastest kernels.
        """
        if attention_mask is None:
            positions = torch.arange(seq_len, device=device)
            return SeqLayout(None, rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta))
        valid = attention_mask.bool()
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        rope = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        return SeqLayout(valid[:, None, None, :], rope)

    def trunk(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        fresh: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, L) -> the trunk's last hidden state (B, L, D), what `forward(trunk=...)` takes.

        For captured decoding steps (dultra.decoding.graphs), which run an unwrapped model:
        under DDP or FSDP every computation goes through `forward`.
        """
        return self.model(input_ids, self.layout(attention_mask, input_ids.shape[1], input_ids.device),
                          None, cache, fresh)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> token logits (..., V) in the model dtype, V = vocab_size."""
        logits = self.model.transformer.ff_out(hidden)
        if self.config.embedding_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def planner_logits(
        self,
        hidden: torch.Tensor,
        t: torch.Tensor,
        planner_mask: torch.Tensor,
        layout: SeqLayout,
        query_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unmasking logits of the planner head (dultra.md section 2); p = sigmoid(logit).

        hidden: (B, L, D) trunk output for the whole sequence. t: (B,) timestep.
        planner_mask: (B, L) bool, True at masks of each sequence's current block.
        query_index: (B, Q) positions to score (the current block); the head block still
        attends over all L positions, so this equals slicing the full result.
        Returns (B, L) or (B, Q) float32 logits.
        """
        if not self.config.has_planner:
            raise ConfigError("this checkpoint has no planner head (config.num_head_layers == 0)")
        c = self.time_embedding(t)[:, None, :]
        if self.config.use_mask_embeddings:
            c = c + self.mask_embedding(planner_mask.long())
        f = self.norm_out_1(hidden, c)
        last = len(self.mask_head) - 1
        for i, block in enumerate(self.mask_head):
            f = block(f, layout.rope, layout.attn_mask, query_index if i == last else None)
        if query_index is not None and c.shape[1] > 1:
            c = _gather_rows(c, query_index)
        f = self.norm_out_2(f, c)
        w, b = self.mask_linear.weight, self.mask_linear.bias
        # A product and a sum, which autocast leaves in float32 (a matmul it would run in bf16:
        # off by ~0.03 at |z| ~ 8; dultra.md section 2, the reference's prob.float()). A new
        # tensor, not a squeezed view (FSDP2 warns on a view output, since an in-place change
        # to it would skip its backward all-gather).
        return (f.float() * w.float()[0]).sum(-1) + b.float()[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        logits_index: torch.Tensor | None = None,
        planner_t: torch.Tensor | None = None,
        planner_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: KVCache | None = None,
        fresh: torch.Tensor | None = None,
        trunk: torch.Tensor | None = None,
        **unused,
    ) -> DiffusionLMOutput | tuple:
        """Token logits and, when `planner_t` is given, planner logits; one pass of the trunk.

        input_ids: (B, L). attention_mask: (B, L) or None (no padding).
        logits_index: (B, N) positions to score (a decoding step's current block); None
        scores all L positions. planner_t: (B,) timestep and planner_mask: (B, L) bool
        current-block masks, to also get the planner's logits at the same positions.
        cache: a KVCache to fill (without `fresh`) or to read, recomputing only the `fresh`
        (B, F) columns of the trunk (kv_cache.py); logits_index must lie within them.
        trunk: (B, L, D) the `last_hidden_state` of an earlier forward of the same input,
        which then skips the trunk and runs only the heads (the replay of a frozen base).
        Every computation of training and decoding goes through here, so wrappers that hook
        `forward` (DDP, FSDP, torch.compile) see all of it.

        Returns logits (B, N or L, V), planner_logits (B, N or L) float32 or None,
        last_hidden_state, and on request hidden_states: every block's input and, last, the
        final-norm output.
        """
        layout = self.layout(attention_mask, input_ids.shape[1], input_ids.device)
        states = [] if output_hidden_states else None
        hidden = trunk if trunk is not None else self.model(input_ids, layout, states, cache, fresh)
        picked = hidden if logits_index is None else _gather_rows(hidden, logits_index)
        logits = self.lm_logits(picked)
        planner = None
        if planner_t is not None:
            planner = self.planner_logits(hidden, planner_t, planner_mask, layout, logits_index)
        hidden_states = tuple(states + [hidden]) if states is not None else None
        if return_dict is False:
            return tuple(v for v in (logits, planner, hidden, hidden_states) if v is not None)
        return DiffusionLMOutput(logits=logits, planner_logits=planner, last_hidden_state=hidden,
                                 hidden_states=hidden_states)
