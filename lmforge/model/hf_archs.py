"""Which Hugging Face architectures map onto our Transformer, and how their config.json reads.

One table row per `model_type`. Import (`fields_from_hf`) turns a config.json into
ModelConfig fields, or refuses in one line what our block cannot compute exactly; export
(`why_not`, `arch_config`) says whether an architecture can carry a ModelConfig and writes
its config.json keys. Checked against the transformers 5.23 sources:

  llama     RMSNorm, SwiGLU; attention_bias = q/k/v/o biases, mlp_bias; head_dim; rope types
            default / linear / dynamic / llama3. LlamaForCausalLM ignores
            partial_rotary_factor (it rotates the whole head), so partial rotary is refused.
  mistral   llama without biases, plus sliding_window (default 4096 when the key is absent).
  qwen2     q/k/v biases (always on), o without; sliding window per layer (layer_types).
  qwen3     attention_bias (q/k/v/o), QK-norm: RMSNorm over head_dim before RoPE; head_dim
            decoupled from hidden_size (default 128).
  phi3      fused qkv_proj and gate_up_proj, partial rotary, sliding_window; Phi3Config
            accepts only default/longrope rope types (longrope is not implemented here).
  glm       fused gate_up_proj, partial rotary (default 0.5) over INTERLEAVED pairs, q/k/v
            biases (attention_bias, default on), any rope type.
  stablelm  LayerNorm with bias, use_qkv_bias, use_parallel_residual, partial rotary (default
            0.25), head_dim = hidden_size / heads. qk_layernorm (per-head LayerNorms, StableLM
            2 12B) is refused. The default config of stabilityai/stablelm-2-1_6b (use_qkv_bias
            true, sequential residual, 25% rotary, layer_norm_eps 1e-5) is supported.
  gemma     RMSNorm with (1 + w), embeddings times sqrt(hidden_size), GeGLU with tanh GELU,
            head_dim (default 256), tied embeddings by default.
  olmo2     the llama block with its norms moved to the sublayer outputs (x + norm(attn(x)),
            x + norm(mlp(x)): post_attention_layernorm, post_feedforward_layernorm, no input
            norm) and QK-norm over the whole q and k projections (q_norm of n_heads x
            head_dim, before the split into heads); attention_bias = q/k/v/o biases; no
            head_dim key (hidden_size / heads).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.model.config import ModelConfig, RopeScaling

# transformers 5.23 config defaults for the keys a config.json may leave out
_COMMON = {"max_position_embeddings": 2048, "tie_word_embeddings": False, "initializer_range": 0.02,
           "hidden_act": "silu", "head_dim": None, "num_key_value_heads": None, "rope_theta": 10000.0}


@dataclass(frozen=True)
class Arch:
    model_type: str
    class_name: str
    defaults: dict = field(default_factory=dict)
    fused_qkv: bool = False           # one qkv_proj (Phi-3)
    fused_gate_up: bool = False       # one gate_up_proj (Phi-3, GLM)
    interleaved_rotary: bool = False  # rotates pairs (2i, 2i+1) (GLM)
    eps_key: str = "rms_norm_eps"

    def get(self, config: dict, key: str):
        return config.get(key, self.defaults.get(key, _COMMON.get(key)))


ARCHS = {a.model_type: a for a in [
    Arch("llama", "LlamaForCausalLM", {"rms_norm_eps": 1e-6, "attention_bias": False, "mlp_bias": False}),
    Arch("mistral", "MistralForCausalLM", {"rms_norm_eps": 1e-6, "sliding_window": 4096,
                                           "max_position_embeddings": 131072, "num_key_value_heads": 8}),
    Arch("qwen2", "Qwen2ForCausalLM", {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
                                       "num_key_value_heads": 32, "use_sliding_window": False,
                                       "sliding_window": 4096, "max_window_layers": 28}),
    Arch("qwen3", "Qwen3ForCausalLM", {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "head_dim": 128,
                                       "num_key_value_heads": 32, "attention_bias": False,
                                       "use_sliding_window": False, "sliding_window": 4096,
                                       "max_window_layers": 28}),
    Arch("phi3", "Phi3ForCausalLM", {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
                                     "sliding_window": None, "partial_rotary_factor": 1.0},
         fused_qkv=True, fused_gate_up=True),
    Arch("glm", "GlmForCausalLM", {"rms_norm_eps": 1.5625e-07, "max_position_embeddings": 131072, "head_dim": 128,
                                   "num_key_value_heads": 2, "attention_bias": True, "partial_rotary_factor": 0.5},
         fused_gate_up=True, interleaved_rotary=True),
    Arch("stablelm", "StableLmForCausalLM", {"layer_norm_eps": 1e-5, "max_position_embeddings": 4096,
                                             "num_key_value_heads": 32, "use_qkv_bias": False,
                                             "qk_layernorm": False, "use_parallel_residual": False,
                                             "partial_rotary_factor": 0.25},
         eps_key="layer_norm_eps"),
    Arch("gemma", "GemmaForCausalLM", {"rms_norm_eps": 1e-6, "max_position_embeddings": 8192, "head_dim": 256,
                                       "num_key_value_heads": 16, "attention_bias": False,
                                       "tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh"}),
    Arch("olmo2", "Olmo2ForCausalLM", {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
                                       "attention_bias": False}),
]}
# export preference: the first architecture that can carry a config is written
EXPORT_ORDER = ["llama", "qwen2", "qwen3", "mistral", "phi3", "glm", "stablelm", "gemma", "olmo2"]
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_FULL_ROTARY_ONLY = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo2")   # their rotary ignores partial_rotary_factor


def _refuse(what: str) -> ValueError:
    return ValueError(f"config.json: {what}")


def _rope_from_hf(config: dict, arch: Arch) -> tuple[float, float, RopeScaling | None]:
    """(rope_theta, partial_rotary_factor, scaling) from rope_parameters or the old rope_scaling."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = float(rope.get("rope_theta", arch.get(config, "rope_theta")))
    factor = float(rope.get("partial_rotary_factor", arch.get(config, "partial_rotary_factor") or 1.0))

    def need(key: str) -> float:
        if not isinstance(rope.get(key), (int, float)):
            raise _refuse(f"rope_parameters.{key} missing for rope_type {rope_type!r}")
        return float(rope[key])

    if rope_type == "default":
        return theta, factor, None
    if rope_type in ("linear", "dynamic"):
        # transformers' dynamic NTK is relative to max_position_embeddings (it ignores any
        # original_max_position_embeddings): that is our original length
        orig = arch.get(config, "max_position_embeddings") if rope_type == "dynamic" else None
        return theta, factor, RopeScaling(rope_type, need("factor"), orig)
    if rope_type == "llama3":
        orig = rope.get("original_max_position_embeddings", arch.get(config, "max_position_embeddings"))
        return theta, factor, RopeScaling("llama3", need("factor"), int(orig),
                                          need("low_freq_factor"), need("high_freq_factor"))
    raise _refuse(f"rope_type {rope_type!r} is not supported (default, linear, dynamic, llama3)")


def _sliding_from_hf(config: dict, arch: Arch) -> int | None:
    """One window for every layer, or None; a mix of sliding and full layers is refused."""
    if arch.model_type in ("mistral", "phi3"):
        return arch.get(config, "sliding_window")
    if arch.model_type not in ("qwen2", "qwen3"):
        return None
    window = arch.get(config, "sliding_window") if arch.get(config, "use_sliding_window") else None
    types = config.get("layer_types") or [
        "sliding_attention" if window is not None and i >= arch.get(config, "max_window_layers") else "full_attention"
        for i in range(config["num_hidden_layers"])]
    if len(set(types)) > 1:
        raise _refuse("sliding window on some layers only (layer_types) is not supported")
    return window if types and types[0] == "sliding_attention" else None


def _biases(config: dict, arch: Arch) -> dict:
    t = arch.model_type
    if t == "qwen2":
        return {"qkv_bias": True}
    if t == "stablelm":
        return {"qkv_bias": bool(arch.get(config, "use_qkv_bias"))}
    if t == "glm":
        return {"qkv_bias": bool(arch.get(config, "attention_bias"))}
    if t in ("llama", "qwen3", "gemma", "olmo2"):
        b = bool(arch.get(config, "attention_bias"))
        return {"qkv_bias": b, "o_bias": b, "mlp_bias": bool(arch.get(config, "mlp_bias") or False)}
    return {}


def _act(config: dict, arch: Arch) -> str:
    act = arch.get(config, "hidden_act")
    if arch.model_type == "gemma" and act in ("gelu", "gelu_pytorch_tanh"):   # GemmaConfig maps gelu -> tanh
        return "gelu_tanh"
    if act != "silu":
        raise _refuse(f"hidden_act {act!r} is not supported for {arch.model_type} (expected 'silu')")
    return "silu"


def fields_from_hf(config: dict) -> dict:
    """ModelConfig fields for an HF config.json dict; ValueError naming the key it cannot take."""
    mt = config.get("model_type")
    if mt not in ARCHS:
        raise _refuse(f"model_type {mt!r} is not supported ({', '.join(ARCHS)})")
    arch = ARCHS[mt]
    for key in _REQUIRED:
        if not isinstance(config.get(key), int):
            raise _refuse(f"{key} missing or not an integer")
    theta, partial, scaling = _rope_from_hf(config, arch)
    if mt in _FULL_ROTARY_ONLY and partial != 1.0:
        raise _refuse(f"partial_rotary_factor {partial} on a {mt} model is ignored by transformers' "
                      f"{arch.class_name}; refusing to guess which rotary the weights were trained with")
    if mt == "stablelm" and arch.get(config, "qk_layernorm"):
        raise _refuse("qk_layernorm (StableLM per-head LayerNorms) is not supported")
    if mt == "gemma" and config.get("use_bidirectional_attention"):
        raise _refuse("use_bidirectional_attention is not supported (causal decoders only)")
    d, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = arch.get(config, "head_dim") if mt not in ("stablelm", "olmo2") else None
    if mt == "olmo2" and config.get("head_dim") not in (None, d // heads):
        raise _refuse("head_dim: Olmo2 always uses hidden_size / num_attention_heads")
    if mt == "stablelm" and config.get("head_dim") not in (None, d // heads):
        raise _refuse("head_dim: StableLM always uses hidden_size / num_attention_heads")
    fields = dict(
        vocab_size=config["vocab_size"], d_model=d, n_layers=config["num_hidden_layers"], n_heads=heads,
        n_kv_heads=arch.get(config, "num_key_value_heads") or heads, ffn_hidden=config["intermediate_size"],
        max_seq_len=arch.get(config, "max_position_embeddings"), rope_theta=theta, rope_scaling=scaling,
        rotary_pct=partial, norm_eps=float(arch.get(config, arch.eps_key)),
        tie_embeddings=bool(arch.get(config, "tie_word_embeddings")), init_std=arch.get(config, "initializer_range"),
        attn_head_dim=head_dim if head_dim is not None and head_dim * heads != d else None,
        sliding_window=_sliding_from_hf(config, arch), mlp_act=_act(config, arch), **_biases(config, arch),
        qk_norm=mt in ("qwen3", "olmo2"), qk_norm_scope="all" if mt == "olmo2" else "head",
        block_norm="post" if mt == "olmo2" else "pre", parallel_residual=mt == "stablelm" and bool(arch.get(config, "use_parallel_residual")),
        norm={"stablelm": "layernorm", "gemma": "rmsnorm_plus_one"}.get(mt, "rmsnorm"), embed_scale=mt == "gemma",
    )
    if scaling is not None and scaling.type == "dynamic" and isinstance(config.get("n_positions"), int):
        fields["max_seq_len"] = max(config["n_positions"], fields["max_seq_len"])   # our export's usable length
    return fields


# ------------------------------------------------------------------ export


def why_not(arch_name: str, cfg: ModelConfig) -> str | None:
    """Why `arch_name` cannot carry `cfg` with the same logits, or None when it can."""
    t, rs = arch_name, cfg.rope_scaling
    checks = [
        (cfg.norm == {"stablelm": "layernorm", "gemma": "rmsnorm_plus_one"}.get(t, "rmsnorm"), f"norm {cfg.norm}"),
        (cfg.mlp_act == ("gelu_tanh" if t == "gemma" else "silu"), f"mlp_act {cfg.mlp_act}"),
        (cfg.embed_scale == (t == "gemma"), "embed_scale" if cfg.embed_scale else "no embed_scale"),
        (cfg.qk_norm == (t in ("qwen3", "olmo2")), "qk_norm" if cfg.qk_norm else "no qk_norm"),
        (not cfg.qk_norm or cfg.qk_norm_scope == ("all" if t == "olmo2" else "head"),
         f"qk_norm_scope {cfg.qk_norm_scope}"),
        (cfg.block_norm == ("post" if t == "olmo2" else "pre"), f"block_norm {cfg.block_norm}"),
        (cfg.attn_head_dim is None or t != "olmo2", "attn_head_dim"),
        (not cfg.parallel_residual or t == "stablelm", "parallel_residual"),
        (not cfg.mlp_bias or t == "llama", "mlp_bias"),
        (cfg.rotary_dim == cfg.head_dim or t not in _FULL_ROTARY_ONLY, f"partial rotary {cfg.rotary_pct}"),
        (cfg.sliding_window is None or t in ("mistral", "qwen2", "qwen3", "phi3"), "sliding_window"),
        (rs is None or t != "phi3", f"rope_scaling {rs and rs.type} (Phi3Config takes default/longrope only)"),
        (cfg.attn_head_dim is None or t != "stablelm", "attn_head_dim"),
    ]
    if t in ("llama", "qwen3", "gemma", "olmo2"):
        checks.append((cfg.qkv_bias == cfg.o_bias, "q/k/v bias without o bias (attention_bias is all four)"))
    elif t == "qwen2":
        checks.append((cfg.qkv_bias and not cfg.o_bias, "qwen2 always has q/k/v biases and no o bias"))
    elif t in ("glm", "stablelm"):
        checks.append((not cfg.o_bias, "o_bias"))
    else:   # mistral, phi3
        checks.append((not (cfg.qkv_bias or cfg.o_bias), "attention biases"))
    bad = [what for ok, what in checks if not ok]
    return ", ".join(bad) if bad else None


def choose(cfg: ModelConfig) -> str:
    """The first architecture of EXPORT_ORDER that carries cfg exactly; ValueError listing why none does."""
    reasons = {}
    for name in EXPORT_ORDER:
        reasons[name] = why_not(name, cfg)
        if reasons[name] is None:
            return name
    raise ValueError("no Hugging Face architecture expresses this model: "
                     + "; ".join(f"{k}: {v}" for k, v in reasons.items()))


def _layer_types(cfg: ModelConfig) -> list[str]:
    kind = "full_attention" if cfg.sliding_window is None else "sliding_attention"
    return [kind] * cfg.n_layers


def arch_config(arch_name: str, cfg: ModelConfig) -> dict:
    """The config.json keys only `arch_name` has (biases, norms, windows, fused layouts)."""
    t, w = arch_name, cfg.sliding_window
    if t == "llama":
        return {"attention_bias": cfg.qkv_bias, "mlp_bias": cfg.mlp_bias, "pretraining_tp": 1}
    if t == "mistral":
        return {"sliding_window": w}
    if t in ("qwen2", "qwen3"):
        out = {"use_sliding_window": w is not None, "sliding_window": w, "max_window_layers": 0,
               "layer_types": _layer_types(cfg)}
        return {**out, "attention_bias": cfg.qkv_bias} if t == "qwen3" else out
    if t == "phi3":
        return {"original_max_position_embeddings": cfg.max_seq_len, "sliding_window": w,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0}
    if t == "glm":
        return {"attention_bias": cfg.qkv_bias}
    if t == "stablelm":
        return {"use_qkv_bias": cfg.qkv_bias, "qk_layernorm": False, "use_parallel_residual": cfg.parallel_residual,
                "hidden_dropout": 0.0}
    if t == "gemma":
        return {"attention_bias": cfg.qkv_bias, "hidden_act": "gelu_pytorch_tanh"}
    if t == "olmo2":
        return {"attention_bias": cfg.qkv_bias}
    raise ValueError(f"unknown architecture {arch_name!r}")
