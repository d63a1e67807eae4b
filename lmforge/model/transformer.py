"""A Llama-style decoder, small enough to read in one sitting.

    embed_tokens -> n_layers x Block -> norm -> lm_head

    Block: x = x + self_attn(input_layernorm(x))          (GQA, RoPE, no biases)
           x = x + mlp(post_attention_layernorm(x))        (SwiGLU, no biases)

Parameter names follow Hugging Face Llama (without its "model." prefix), so conversion
(convert.py) is a renaming. The vocabulary is padded to a multiple of
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
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32, scale in the input dtype (as HF Llama does, so bf16 matches too)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttnMask,
                cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:   # attend over the cached keys too (mask is [B, 1, T, S])
            k, v = cache.update(layer_idx, k, v)
        y = attend(q, k, v, mask)                                   # [B, H, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, layer_idx: int = 0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        V, d = cfg.padded_vocab_size, cfg.d_model
        self.embed_tokens = nn.Embedding(V, d)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.activation_checkpointing = False   # set by the trainer (train.activation_checkpointing)
        self.norm = RMSNorm(d, cfg.norm_eps)
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
        """normal(0, init_std); o_proj and down_proj scaled by 1/sqrt(2 n_layers) (GPT-2); norms 1."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)
        self.init_buffers()

    def head_weight(self) -> torch.Tensor:
        """The effective LM-head matrix: rows L2-normalised under Norm-Head (never stored so)."""
        w = self.lm_head.weight
        return F.normalize(w, dim=-1) if self.cfg.norm_head else w

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, return_hidden: bool = False,
                labels: torch.Tensor | None = None, z_loss: float = 0.0):
        """Logits [B, T, padded_vocab_size]; with return_hidden also the n_layers + 1 residual
        states (each layer's input, then the last layer's output before the final norm).

        With labels: (loss_sum, metrics) from the chunked fused head + cross-entropy instead
        of logits (computed inside forward so FSDP has the head's parameters gathered).

        position_ids default to arange(T), or to positions restarting at each document when
        doc_ids is given (pass them explicitly to choose otherwise).
        """
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = (positions_from_doc_ids(doc_ids) if doc_ids is not None
                            else torch.arange(T, device=input_ids.device).expand(B, T))
        x = self.embed_tokens(input_ids)
        inv_freq = compute_inv_freq(self.cfg, T, device=x.device)
        cos, sin = rope_cos_sin(position_ids, inv_freq, x.dtype)
        mask = build_mask(self.cfg.attn_backend, doc_ids, B, T, x.device)   # once, shared by all layers
        hidden = []
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if return_hidden:
                hidden.append(x)
            if recompute:   # keep only block inputs; recompute the block in backward
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask)
        if return_hidden:
            hidden.append(x)
        if labels is not None:
            return linear_cross_entropy(self.norm(x), self.head_weight(), labels, self.cfg.vocab_size, z_loss)
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
        x = self.embed_tokens(input_ids)
        # seq_len = slots so far, what a full recomputation over the same rows would pass
        inv_freq = compute_inv_freq(self.cfg, start + T, device=x.device)
        cos, sin = rope_cos_sin(position_ids, inv_freq, x.dtype)
        mask = cache.step_mask(valid)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        cache.advance(T)
        return self.logits(x[:, -1:] if last_only else x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head on a last-layer output, padded vocab columns set to -inf."""
        logits = F.linear(self.norm(hidden), self.head_weight())
        return logits.masked_fill(self.vocab_pad_mask, float("-inf"))
