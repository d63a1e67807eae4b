"""Model shape: one dataclass, plus named presets.

A preset supplies defaults; keys given next to it override them:

    model: {preset: index-1.9b, vocab_size: 65029, n_layers: 12}

Presets are applied by `lmforge.config.from_dict` through `ModelConfig._base`. Building
`ModelConfig(...)` directly ignores `preset` values; use `ModelConfig.from_preset`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lmforge.config import check, from_dict

# name -> field values. Counts from ModelConfig.n_params() at the vocab_size given here
# ("total" counts every parameter once; "non-embedding" leaves out the vocab-sized
# embedding table and LM head, which is how Index-1.9B is named).
PRESETS: dict[str, dict] = {
    # 5.31M total (2.10M in embedding + head): a CPU smoke-test model.
    "tiny": dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, max_seq_len=1024),
    # 124.6M total, 106.2M non-embedding. Deep and narrow (SmolLM-135M shape: 30 x 576, GQA 9/3).
    "small-125m": dict(vocab_size=32000, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_hidden=1536,
                       tie_embeddings=True),
    # 336.4M total, 303.6M non-embedding.
    "medium-350m": dict(vocab_size=32000, d_model=1024, n_layers=24, n_heads=16, tie_embeddings=True),
    # 1.042B total, 0.911B non-embedding.
    "large-1b": dict(vocab_size=32000, d_model=2048, n_layers=18, n_heads=16),
    # Index-1.9B: 1.906B non-embedding (the name), 2.173B total; Norm-Head, untied, deep and narrow.
    "index-1.9b": dict(vocab_size=65029, d_model=2048, n_layers=36, n_heads=16, ffn_hidden=5888,
                       max_seq_len=4096, norm_head=True, tie_embeddings=False, norm_eps=1e-6),
    # StableLM 2 1.6B: 1.644B total (vocab 100289 padded to 100352), 25% partial rotary.
    # (The real model uses LayerNorm with biases; here it is the Llama-style block.)
    "stablelm-2-1.6b": dict(vocab_size=100289, d_model=2048, n_layers=24, n_heads=32, ffn_hidden=5632,
                            max_seq_len=4096, rotary_pct=0.25, tie_embeddings=False),
}


@dataclass
class ModelConfig:
    preset: str | None = None          # name in PRESETS; its values become defaults, explicit keys override
    vocab_size: int = 4096             # real tokenizer vocab
    pad_vocab_multiple: int = 64       # embedding/head padded to a multiple of this (StableLM 2: 100289 -> 100352)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None      # GQA; None = n_heads
    ffn_hidden: int | None = None      # SwiGLU hidden size; None = 8/3*d rounded up to a multiple of 64
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    rotary_pct: float = 1.0            # fraction of head dims rotated, the FIRST ones (GPT-NeoX style)
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    norm_head: bool = False            # Baichuan2/Index Norm-Head: head rows L2-normalised in forward
    init_std: float = 0.02
    attn_backend: Literal["auto", "sdpa", "flex"] = "auto"   # auto: flex on CUDA, sdpa on CPU

    @classmethod
    def _base(cls, data: dict) -> dict:
        """Defaults from the named preset (called by lmforge.config.from_dict)."""
        name = data.get("preset") if isinstance(data, dict) else None
        if not isinstance(name, str) or name not in PRESETS:
            return {}  # an unknown name is refused by __post_init__, which from_dict prefixes with the path
        return {**PRESETS[name], "preset": name}

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        return from_dict(cls, {"preset": name, **overrides})

    def __post_init__(self):
        check(self.preset is None or self.preset in PRESETS, "preset",
              f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        for name in ("vocab_size", "pad_vocab_multiple", "d_model", "n_layers", "n_heads", "max_seq_len"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.n_kv_heads is None or self.n_kv_heads >= 1, "n_kv_heads", f"must be >= 1, got {self.n_kv_heads}")
        check(self.ffn_hidden is None or self.ffn_hidden >= 1, "ffn_hidden", f"must be >= 1, got {self.ffn_hidden}")
        check(self.d_model % self.n_heads == 0, "n_heads",
              f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        check(self.n_heads % self.kv_heads == 0, "n_kv_heads",
              f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.kv_heads}")
        check(0.0 < self.rotary_pct <= 1.0, "rotary_pct", f"must be in (0, 1], got {self.rotary_pct}")
        check(self.rotary_dim >= 2 and self.rotary_dim % 2 == 0, "rotary_pct",
              f"rotary_pct {self.rotary_pct} x head_dim {self.head_dim} = {self.rotary_dim} dims; "
              "need an even number >= 2")
        check(self.rope_theta > 1.0, "rope_theta", f"must be > 1, got {self.rope_theta}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ffn_dim(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return math.ceil(8 * self.d_model / 3 / 64) * 64

    @property
    def rotary_dim(self) -> int:
        # int() truncation, as transformers does with partial_rotary_factor
        return int(self.head_dim * self.rotary_pct)

    def layer_matmul_params(self) -> int:
        """Weights of the matmuls in one block: q, k, v, o and SwiGLU gate, up, down."""
        d, kv = self.d_model, self.kv_heads * self.head_dim
        return 2 * d * d + 2 * d * kv + 3 * d * self.ffn_dim

    def n_params(self, embeddings: bool = True) -> int:
        """Parameter count, each shared tensor once.

        embeddings=False gives the "non-embedding" count (Kaplan et al.): without the
        vocab-sized embedding table and LM head.
        """
        body = self.n_layers * (self.layer_matmul_params() + 2 * self.d_model) + self.d_model
        if not embeddings:
            return body
        vocab = self.padded_vocab_size * self.d_model
        return body + vocab * (1 if self.tie_embeddings else 2)
