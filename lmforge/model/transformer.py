"""A Llama-style decoder, small enough to read in one sitting.

    embed_tokens [* sqrt(d)] -> n_layers x Block -> norm -> lm_head

    Block: x = x + self_attn(input_layernorm(x))          (GQA, RoPE)
           x = x + mlp(post_attention_layernorm(x))        (gated MLP: SwiGLU / GeGLU)
    or, with parallel_residual (no post_attention_layernorm):
           h = input_layernorm(x);  x = x + self_attn(h) + mlp(h)

The defaults are the Llama block (RMSNorm, no biases, SiLU). The ModelConfig options that
the other common families need (docs/models.md) switch parts of it, not the whole:
q/k/v, o and MLP biases, QK-norm, the norm kind (RMSNorm, Gemma's (1 + w) RMSNorm,
LayerNorm with bias), GeGLU, embedding scaling, a per-head size decoupled from d_model,
a sliding window. Parameter names follow Hugging Face Llama (without its "model."
prefix; Qwen3's q_norm / k_norm), so conversion (convert.py) is a renaming. The vocabulary is padded to a multiple of
cfg.pad_vocab_multiple; logits of the padded columns are -inf, so they never win an
argmax and carry no probability or loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from lmforge.model.attention import AttnMask, KVCache, attend, build_mask, positions_from_doc_ids
from lmforge.model.config import ModelConfig
from lmforge.model.fused_loss import linear_cross_entropy
from lmforge.model.rope import apply_rope, compute_inv_freq, rope_cos_sin


class RMSNorm(nn.Module):
    """w * x / rms(x); with plus_one (Gemma) (1 + w) * x / rms(x), w starting at 0."""

    def __init__(self, dim: int, eps: float, plus_one: bool = False):
        super().__init__()
        self.eps = eps
        self.plus_one = plus_one
        self.weight = nn.Parameter(torch.zeros(dim) if plus_one else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.plus_one:   # Gemma scales in float32, then casts (transformers' GemmaRMSNorm)
            return (h * (1.0 + self.weight.float())).to(x.dtype)
        # normalise in float32, scale in the input dtype (as HF Llama does, so bf16 matches too)
        return self.weight * h.to(x.dtype)


def make_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(dim, eps=cfg.norm_eps)        # weight and bias, as StableLM's
    return RMSNorm(dim, cfg.norm_eps, plus_one=cfg.norm == "rmsnorm_plus_one")


_ACTIVATIONS = {"silu": F.silu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.o_bias)
        self.qk_norm_all = cfg.qk_norm and cfg.qk_norm_scope == "all"
        if cfg.qk_norm and not self.qk_norm_all:   # over head_dim, one weight shared by all heads (Qwen3)
            self.q_norm = make_norm(cfg, cfg.head_dim)
            self.k_norm = make_norm(cfg, cfg.head_dim)
        elif self.qk_norm_all:   # over the whole q / k projection, before the split into heads (OLMo 2)
            self.q_norm = make_norm(cfg, cfg.n_heads * cfg.head_dim)
            self.k_norm = make_norm(cfg, cfg.kv_heads * cfg.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttnMask,
                cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q, k = self.q_proj(x), self.k_proj(x)
        if self.qk_norm_all:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv, self.head_dim)
        if hasattr(self, "q_norm") and not self.qk_norm_all:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:   # attend over the cached keys too (mask is [B, 1, T, S])
            k, v = cache.update(layer_idx, k, v)
        y = attend(q, k, v, mask)                                   # [B, H, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.mlp_bias)
        self.act = _ACTIVATIONS[cfg.mlp_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.post = cfg.block_norm == "post"
        if not self.post:
            self.input_layernorm = make_norm(cfg, cfg.d_model)
        self.self_attn = Attention(cfg)
        self.parallel = cfg.parallel_residual
        if not self.parallel:
            self.post_attention_layernorm = make_norm(cfg, cfg.d_model)
        if self.post:
            self.post_feedforward_layernorm = make_norm(cfg, cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, layer_idx: int = 0):
        if self.post:   # OLMo 2: the sublayer outputs are normalised, the residual stream is not
            x = x + self.post_attention_layernorm(self.self_attn(x, cos, sin, mask, cache, layer_idx))
            return x + self.post_feedforward_layernorm(self.mlp(x))
        h = self.input_layernorm(x)
        if self.parallel:   # StableLM's use_parallel_residual: (x + attn) + mlp, both from one norm
            return x + self.self_attn(h, cos, sin, mask, cache, layer_idx) + self.mlp(h)
        x = x + self.self_attn(h, cos, sin, mask, cache, layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        V, d = cfg.padded_vocab_size, cfg.d_model
        self.embed_tokens = nn.Embedding(V, d)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.activation_checkpointing = False   # set by the trainer (train.activation_checkpointing)
        self.norm = make_norm(cfg, d)
        self.lm_head = nn.Linear(d, V, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.register_buffer("vocab_pad_mask", torch.zeros(V, dtype=torch.bool), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_buffers(self) -> None:
        """(Re)fill non-persistent buffers, e.g. after building on the meta device and to_empty()."""
        self.vocab_pad_mask.copy_(torch.arange(self.cfg.padded_vocab_size) >= self.cfg.vocab_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        """normal(0, init_std); o_proj and down_proj scaled by 1/sqrt(2 n_layers) (GPT-2);
        norms the identity (gain 1, or 0 under Gemma's 1 + w); biases 0."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        seen = set()   # a tied head is the embedding: draw it once (keeps the seed -> weights map)
        for mod_name, mod in self.named_modules():
            for name, p in mod.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                if isinstance(mod, (RMSNorm, nn.LayerNorm)):
                    p.fill_(0.0 if name == "bias" or getattr(mod, "plus_one", False) else 1.0)
                elif name == "bias":
                    p.zero_()
                elif mod_name.endswith(("o_proj", "down_proj")):
                    nn.init.normal_(p, 0.0, out_std)
                else:
                    nn.init.normal_(p, 0.0, std)
        self.init_buffers()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        if self.cfg.embed_scale:   # Gemma: sqrt(d) rounded to the weights' dtype, as transformers does
            x = x * torch.tensor(self.cfg.d_model ** 0.5, dtype=x.dtype, device=x.device)
        return x

    def head_weight(self) -> torch.Tensor:
        """The effective LM-head matrix: rows L2-normalised under Norm-Head (never stored so)."""
        w = self.lm_head.weight
        return F.normalize(w, dim=-1) if self.cfg.norm_head else w

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, return_hidden: bool = False,
                labels: torch.Tensor | None = None, z_loss: float = 0.0, reduction: str = "sum",
                token_ce: bool = False):
        """Logits [B, T, padded_vocab_size]; with return_hidden also the n_layers + 1 residual
        states (each layer's input, then the last layer's output before the final norm).

        With labels: (loss, metrics) from the chunked fused head + cross-entropy instead of
        logits (computed inside forward so FSDP has the head's parameters gathered), the one
        loss path of every objective that scores target tokens: the sum over the batch, or
        with reduction "none" each token's loss [B, T] (0 where labels are -100; DPO sums a
        row's into its log-probability); `token_ce` adds each token's loss, detached, to the
        summed loss's metrics (SFT's per-segment sums). lmforge.model.fused_loss.

        position_ids default to arange(T), or to positions restarting at each document when
        doc_ids is given (pass them explicitly to choose otherwise).
        """
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = (positions_from_doc_ids(doc_ids) if doc_ids is not None
                            else torch.arange(T, device=input_ids.device).expand(B, T))
        mask = build_mask(self.cfg.attn_backend, doc_ids, B, T, input_ids.device, self.cfg.sliding_window)
        hidden: list[torch.Tensor] | None = [] if return_hidden else None
        x = self._trunk(input_ids, position_ids, T, mask, hidden=hidden)
        if labels is not None:
            return linear_cross_entropy(self.norm(x), self.head_weight(), labels, self.cfg.vocab_size, z_loss,
                                        reduction=reduction, token_ce=token_ce)
        logits = self.logits(x)
        return (logits, hidden) if return_hidden else logits

    def forward_cached(self, input_ids: torch.Tensor, cache: KVCache, position_ids: torch.Tensor | None = None,
                       valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Incremental forward for generation: feed T new tokens per row, reuse cached keys.

        input_ids [B, T] fill cache slots cache.length..+T. `valid` [B, T] (default all
        True) marks left padding, which no real token attends to. position_ids default to
        the slot numbers; pass per-sequence positions for left-padded rows. Returns logits
        [B, T, V], or [B, 1, V] for the last token only (prefill of a long prompt).
        """
        B, T = input_ids.shape
        start = cache.length
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        if valid is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=input_ids.device)
        # RoPE length = slots so far, what a full recomputation over the same rows would pass
        x = self._trunk(input_ids, position_ids, start + T, cache.step_mask(valid, self.cfg.sliding_window), cache)
        cache.advance(T)
        return self.logits(x[:, -1:] if last_only else x)

    def tail_logits(self, input_ids: torch.Tensor, n: int) -> torch.Tensor:
        """Logits [B, n, V] of the last n positions of plain causal rows: only those go
        through the LM head (at 32k tokens and a 65k vocabulary full logits take 8 GB)."""
        B, T = input_ids.shape
        pos = torch.arange(T, device=input_ids.device).expand(B, T)
        mask = build_mask(self.cfg.attn_backend, None, B, T, input_ids.device, self.cfg.sliding_window)
        return self.logits(self._trunk(input_ids, pos, T, mask)[:, -n:])

    def _trunk(self, input_ids: torch.Tensor, position_ids: torch.Tensor, rope_len: int, mask: AttnMask,
               cache: KVCache | None = None, hidden: list | None = None) -> torch.Tensor:
        """The one path through the model that forward, forward_cached and tail_logits share:
        embeddings, RoPE at `position_ids` (frequencies for a sequence of `rope_len`, which the
        dynamic scalings depend on), every layer with the one `mask`; the last layer's output
        before the final norm. `cache`: each layer reads and fills its KV slots (generation);
        `hidden` collects each layer's input and the last output."""
        x = self.embed(input_ids)
        cos, sin = rope_cos_sin(position_ids, compute_inv_freq(self.cfg, rope_len, device=x.device), x.dtype)
        recompute = cache is None and self.activation_checkpointing and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if hidden is not None:
                hidden.append(x)
            if recompute:   # keep only block inputs; recompute the block in backward
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            elif cache is not None:
                x = layer(x, cos, sin, mask, cache, i)
            else:
                x = layer(x, cos, sin, mask)
        if hidden is not None:
            hidden.append(x)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head on a last-layer output, padded vocab columns set to -inf."""
        logits = F.linear(self.norm(hidden), self.head_weight())
        return logits.masked_fill(self.vocab_pad_mask, float("-inf"))
