"""Model shape: one dataclass, plus named presets.

A preset supplies defaults; keys given next to it override them:

    model: {preset: index-1.9b, vocab_size: 65029, n_layers: 12}

Presets are applied by `lmforge.config.from_dict` through `ModelConfig._base`. Building
`ModelConfig(...)` directly ignores `preset` values; use `ModelConfig.from_preset`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from lmforge.config import ConfigError, check, from_dict

# RoPE angles are computed in float32 from the position ids: integers are exact only up
# to 2^24, beyond that neighbouring positions collide.
MAX_POSITIONS = 2 ** 24
_FLOAT32_MAX = 3.4028234663852886e38

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
    # StableLM 2 1.6B: 1.645B total (vocab 100289 padded to 100352), 25% partial rotary, LayerNorm
    # with biases and q/k/v biases (its config.json: use_qkv_bias true, sequential residual).
    "stablelm-2-1.6b": dict(vocab_size=100289, d_model=2048, n_layers=24, n_heads=32, ffn_hidden=5632,
                            max_seq_len=4096, rotary_pct=0.25, tie_embeddings=False, norm="layernorm",
                            qkv_bias=True),
    # Skywork-13B: deep and thin (52 x 4608 where Llama-2-13B is 40 x 5120), FFN 12288, 36 heads of 128,
    # vocabulary 65536 (Llama's 32000 + 8000 Chinese characters + 25519 Chinese words + 17 reserved).
    "skywork-13b": dict(vocab_size=65536, d_model=4608, n_layers=52, n_heads=36, ffn_hidden=12288,
                        max_seq_len=4096, tie_embeddings=False),
    # Yi-6B: 32 x 4096, GQA 32 query / 4 KV heads, FFN 11008, vocabulary 64000, RoPE base 5e6.
    "yi-6b": dict(vocab_size=64000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=4, ffn_hidden=11008,
                  max_seq_len=4096, rope_theta=5000000.0, tie_embeddings=False),
}


@dataclass
class RopeScaling:
    """RoPE frequency scaling: training-free context extension (Index-1.9B-32K compares
    dynamic and linear) and Llama 3's frequency-dependent scaling.

    dynamic: Dynamic NTK (transformers' "dynamic"): for a forward over seq_len > orig
             tokens the base becomes base * (factor * seq_len / orig - (factor - 1)) ** (d / (d - 2)).
    linear:  position interpolation: every frequency divided by factor.
    llama3:  Llama 3.1's static scaling (transformers' "llama3"): wavelengths longer than
             orig / low_freq_factor are divided by factor, shorter than orig / high_freq_factor
             kept, smoothly interpolated in between.
    "Naive extrapolation" is no rope_scaling at all, run past max_seq_len.
    """
    type: Literal["dynamic", "linear", "llama3"] = "dynamic"
    factor: float = 8.0
    original_max_position_embeddings: int | None = None   # None: the model's max_seq_len
    low_freq_factor: float = 1.0                           # llama3 only
    high_freq_factor: float = 4.0                          # llama3 only

    def __post_init__(self):
        check(math.isfinite(self.factor) and self.factor >= 1.0, "factor", f"must be >= 1, got {self.factor}")
        o = self.original_max_position_embeddings
        check(o is None or 1 <= o <= MAX_POSITIONS, "original_max_position_embeddings",
              f"must be in [1, {MAX_POSITIONS}], got {o}")
        check(0 < self.low_freq_factor < self.high_freq_factor and math.isfinite(self.high_freq_factor),
              "high_freq_factor", f"need 0 < low_freq_factor ({self.low_freq_factor}) < high_freq_factor "
              f"({self.high_freq_factor})")


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
    # Dynamic NTK / linear at inference; None = plain RoPE. A dict is converted in __post_init__
    # (so a bad value is reported as rope_scaling.<key>, not as a failed union match).
    rope_scaling: RopeScaling | dict[str, Any] | None = None
    rotary_pct: float = 1.0            # fraction of head dims rotated, the FIRST ones (GPT-NeoX style)
    # --- options of the common open model families (docs/models.md); defaults = the Llama block
    attn_head_dim: int | None = None   # per-head size; None = d_model / n_heads (Qwen3, Gemma decouple it)
    qkv_bias: bool = False             # biases on q/k/v projections (Qwen2, StableLM 2, GLM)
    o_bias: bool = False               # bias on the attention output projection (Llama attention_bias)
    mlp_bias: bool = False             # biases on gate/up/down (Llama mlp_bias)
    qk_norm: bool = False              # norm over each head's q and k before RoPE, one weight per dim (Qwen3)
    qk_norm_scope: Literal["head", "all"] = "head"   # qk_norm per head (Qwen3), or over all heads' q / k at once (OLMo 2)
    block_norm: Literal["pre", "post"] = "pre"   # pre: x + f(norm(x)) (Llama); post: x + norm(f(x)), no input norm (OLMo 2)
    # rmsnorm: w * x / rms(x); rmsnorm_plus_one: (1 + w) * x / rms(x), w starts at 0 (Gemma);
    # layernorm: (x - mean) / std * w + b (StableLM)
    norm: Literal["rmsnorm", "rmsnorm_plus_one", "layernorm"] = "rmsnorm"
    parallel_residual: bool = False    # x + attn(ln(x)) + mlp(ln(x)), one norm per block (StableLM option)
    mlp_act: Literal["silu", "gelu_tanh"] = "silu"   # gated MLP activation (Gemma: GeGLU with tanh GELU)
    embed_scale: bool = False          # multiply token embeddings by sqrt(d_model) (Gemma)
    sliding_window: int | None = None  # attend to the last `sliding_window` positions only (Mistral)
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
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = from_dict(RopeScaling, self.rope_scaling, prefix="rope_scaling")
        check(self.preset is None or self.preset in PRESETS, "preset",
              f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        for name in ("vocab_size", "pad_vocab_multiple", "d_model", "n_layers", "n_heads", "max_seq_len"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.n_kv_heads is None or self.n_kv_heads >= 1, "n_kv_heads", f"must be >= 1, got {self.n_kv_heads}")
        check(self.ffn_hidden is None or self.ffn_hidden >= 1, "ffn_hidden", f"must be >= 1, got {self.ffn_hidden}")
        check(self.attn_head_dim is None or self.attn_head_dim >= 2, "attn_head_dim",
              f"must be >= 2, got {self.attn_head_dim}")
        check(self.attn_head_dim is not None or self.d_model % self.n_heads == 0, "n_heads",
              f"d_model {self.d_model} is not divisible by n_heads {self.n_heads} (or set attn_head_dim)")
        check(self.sliding_window is None or self.sliding_window >= 1, "sliding_window",
              f"must be >= 1, got {self.sliding_window}")
        check(self.n_heads % self.kv_heads == 0, "n_kv_heads",
              f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.kv_heads}")
        check(0.0 < self.rotary_pct <= 1.0, "rotary_pct", f"must be in (0, 1], got {self.rotary_pct}")
        check(self.rotary_dim >= 2 and self.rotary_dim % 2 == 0, "rotary_pct",
              f"rotary_pct {self.rotary_pct} x head_dim {self.head_dim} = {self.rotary_dim} dims; "
              "need an even number >= 2")
        check(1.0 < self.rope_theta < _FLOAT32_MAX, "rope_theta",
              f"must be > 1 and finite in float32, got {self.rope_theta}")
        check(self.max_seq_len <= MAX_POSITIONS, "max_seq_len",
              f"{self.max_seq_len} > {MAX_POSITIONS}: float32 RoPE angles cannot tell positions apart beyond 2^24")
        check(self.rope_scaling is None or self.rope_scaling.type != "dynamic" or self.rotary_dim >= 4,
              "rope_scaling", f"dynamic NTK needs >= 4 rotary dims (exponent d/(d-2)), have {self.rotary_dim}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.block_norm == "pre" or not self.parallel_residual, "block_norm",
              "post (norms on the sublayer outputs) has no parallel-residual form")
        check(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")

    @property
    def rope_original_len(self) -> int:
        """The length the RoPE scaling is relative to (its original_max_position_embeddings)."""
        rs = self.rope_scaling
        return (rs.original_max_position_embeddings or self.max_seq_len) if rs else self.max_seq_len

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim if self.attn_head_dim is not None else self.d_model // self.n_heads

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
        d, q, kv = self.d_model, self.n_heads * self.head_dim, self.kv_heads * self.head_dim
        return 2 * d * q + 2 * d * kv + 3 * d * self.ffn_dim

    def norm_params(self, dim: int) -> int:
        return 2 * dim if self.norm == "layernorm" else dim

    def layer_other_params(self) -> int:
        """Norm gains (and LayerNorm biases) and projection biases of one block."""
        d, q, kv, f = self.d_model, self.n_heads * self.head_dim, self.kv_heads * self.head_dim, self.ffn_dim
        n = (1 if self.parallel_residual else 2) * self.norm_params(d)
        if self.qk_norm:
            n += (self.norm_params(q) + self.norm_params(kv) if self.qk_norm_scope == "all"
                  else 2 * self.norm_params(self.head_dim))
        n += (q + 2 * kv) if self.qkv_bias else 0
        n += d if self.o_bias else 0
        n += (2 * f + d) if self.mlp_bias else 0
        return n

    def n_params(self, embeddings: bool = True) -> int:
        """Parameter count, each shared tensor once.

        embeddings=False gives the "non-embedding" count (Kaplan et al.): without the
        vocab-sized embedding table and LM head.
        """
        body = self.n_layers * (self.layer_matmul_params() + self.layer_other_params()) + self.norm_params(self.d_model)
        if not embeddings:
            return body
        vocab = self.padded_vocab_size * self.d_model
        return body + vocab * (1 if self.tie_embeddings else 2)


@dataclass
class ContextOverrides:
    """The ModelConfig fields a run may change when it starts from another run's weights:
    RoPE and length only (no shape change, so the weights still fit). Used by long-context
    continued pretraining (Index-32K: base 32*10000, 32768 tokens) and long SFT.
    None = keep the checkpoint's value."""
    rope_theta: float | None = None
    max_seq_len: int | None = None
    rope_scaling: RopeScaling | None = None
    drop_rope_scaling: bool = False        # remove the checkpoint's rope_scaling (train with plain RoPE)
    attn_backend: Literal["auto", "sdpa", "flex"] | None = None

    def __post_init__(self):
        check(not (self.drop_rope_scaling and self.rope_scaling), "drop_rope_scaling",
              "cannot both set rope_scaling and drop it")

    def apply(self, cfg: ModelConfig, prefix: str = "model") -> ModelConfig:
        """cfg with these overrides, validated (ConfigError names `prefix`.key)."""
        changes = {k: getattr(self, k) for k in ("rope_theta", "max_seq_len", "rope_scaling", "attn_backend")
                   if getattr(self, k) is not None}
        if self.drop_rope_scaling:
            changes["rope_scaling"] = None
        try:
            return dataclasses.replace(cfg, **changes)
        except ConfigError as e:   # from ModelConfig.__post_init__: "key: message"
            raise ConfigError(f"{prefix}.{e}") from None
