"""Round trip with Hugging Face checkpoints (config.json + model.safetensors).

Export folds what HF does not have into plain weights: Norm-Head rows are written
normalised into lm_head.weight, and the padded vocabulary rows are sliced off (HF's
vocab_size is the real one). Import pads them back (zero rows, masked to -inf anyway).

Partial rotary: transformers' LlamaForCausalLM (checked in 5.23) ignores
`partial_rotary_factor` and rotates the whole head, which would silently change the
outputs. A model with rotary_pct < 1 is therefore exported as Phi3ForCausalLM, the same
block (RMSNorm, SwiGLU, no biases) with fused qkv_proj / gate_up_proj, whose rotary
embedding does rotate only the first partial_rotary_factor of each head. Full-rotary
models are exported as LlamaForCausalLM.

Partial rotary WITH rope scaling: Phi3Config (5.23) refuses every rope_type but
default/longrope, so `hf_arch` refuses it; `export_arch` picks GlmForCausalLM instead
(same block again: RMSNorm, SwiGLU with fused gate_up_proj, partial rotary, any rope
type incl. dynamic/linear, attention_bias=False). GLM rotates INTERLEAVED pairs
(2i, 2i+1) where we rotate (i, i + rotary_dim/2) at the same frequency i, so the q/k
projection rows of each head's rotary part are permuted on export (and back on import).
Applying one permutation to both q and k leaves every attention score q.k unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.io.atomic import atomic_path, write_json

from lmforge.model.config import ModelConfig, RopeScaling
from lmforge.model.transformer import Transformer

_LAYER_KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


_ARCH_CLASSES = {"llama": "LlamaForCausalLM", "phi3": "Phi3ForCausalLM", "glm": "GlmForCausalLM"}


def hf_arch(cfg: ModelConfig) -> str:
    """"llama", or "phi3" when only part of each head is rotated (see module docstring)."""
    return "llama" if cfg.rotary_dim == cfg.head_dim else "phi3"


def export_arch(cfg: ModelConfig) -> str:
    """The HF architecture with exact logits: llama (full rotary), phi3 (partial), glm (partial + scaling)."""
    arch = hf_arch(cfg)
    return "glm" if arch == "phi3" and cfg.rope_scaling is not None else arch


def _glm_rotary_perm(cfg: ModelConfig) -> torch.Tensor:
    """Row order of one head for GLM: new dim 2i <- ours i, 2i+1 <- ours i + rotary_dim/2."""
    half = cfg.rotary_dim // 2
    rot = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    return torch.cat([rot, torch.arange(cfg.rotary_dim, cfg.head_dim)])


def _permute_heads(w: torch.Tensor, perm: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Reorder the output rows of a q/k projection [heads * head_dim, d] inside every head."""
    return w.view(-1, head_dim, w.shape[-1])[:, perm].reshape(w.shape)


def _partial_factor(cfg: ModelConfig) -> float:
    """rotary_dim / head_dim, nudged so that transformers' int(head_dim * f) gives rotary_dim back."""
    f = cfg.rotary_dim / cfg.head_dim
    while int(cfg.head_dim * f) < cfg.rotary_dim:
        f = float(torch.nextafter(torch.tensor(f, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)))
    return f


def _check_arch(cfg: ModelConfig, arch: str | None) -> str:
    arch = arch or hf_arch(cfg)
    if arch not in _ARCH_CLASSES:
        raise ValueError(f"arch {arch!r} is not one of {', '.join(_ARCH_CLASSES)}")
    if arch == "llama" and cfg.rotary_dim != cfg.head_dim:
        raise ValueError(f"rotary_pct {cfg.rotary_pct}: LlamaForCausalLM rotates the whole head; use phi3 or glm")
    return arch


def hf_config_dict(cfg: ModelConfig, dtype: torch.dtype = torch.float32, arch: str | None = None) -> dict:
    """config.json for LlamaForCausalLM (full rotary), Phi3ForCausalLM (partial rotary) or,
    when asked (arch="glm", see export_arch), GlmForCausalLM."""
    arch = _check_arch(cfg, arch)
    rope = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    rs = cfg.rope_scaling
    if rs is not None:
        if arch == "phi3":
            # Phi3Config accepts only default/longrope RoPE; exporting would silently change outputs
            raise ValueError(f"rope_scaling {rs.type!r} with partial rotary (rotary_pct {cfg.rotary_pct}) "
                             "cannot be exported as Phi-3 (transformers refuses that rope type); "
                             "use arch='glm' (lmforge export picks it)")
        rope.update(rope_type=rs.type, factor=float(rs.factor))
    out = {
        "architectures": [_ARCH_CLASSES[arch]],
        "model_type": arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        # transformers' dynamic NTK scales relative to max_position_embeddings
        "max_position_embeddings": cfg.rope_original_len if rs and rs.type == "dynamic" else cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "initializer_range": cfg.init_std,
        "rope_parameters": rope,
        "rope_theta": float(cfg.rope_theta),      # the pre-5.0 spelling, for older readers
        **({"rope_scaling": {"type": rs.type, "rope_type": rs.type, "factor": float(rs.factor)}} if rs else {}),
        # a folded Norm-Head cannot share its matrix with the embedding
        "tie_word_embeddings": cfg.tie_embeddings and not cfg.norm_head,
        "attention_dropout": 0.0,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,  # export/ sets these from the tokenizer
        "use_cache": True,
        "dtype": _DTYPE_NAMES[dtype],
        "torch_dtype": _DTYPE_NAMES[dtype],       # the pre-5.0 spelling
    }
    if arch == "llama":
        out.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
    else:
        factor = _partial_factor(cfg)
        rope["partial_rotary_factor"] = factor
        out.update(partial_rotary_factor=factor)
        if arch == "phi3":
            out.update(original_max_position_embeddings=cfg.max_seq_len, sliding_window=None,
                       resid_pdrop=0.0, embd_pdrop=0.0)
        else:   # GLM's config defaults to q/k/v biases; ours has none
            out.update(attention_bias=False)
    return out


def to_hf_state_dict(model: Transformer, dtype: torch.dtype | None = None,
                     arch: str | None = None) -> dict[str, torch.Tensor]:
    """Our weights under HF names: vocab sliced to the real size, Norm-Head folded, Phi-3/GLM
    fusing (and GLM's interleaved rotary order)."""
    cfg = model.cfg
    arch = _check_arch(cfg, arch)
    V = cfg.vocab_size
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": sd["embed_tokens.weight"][:V], "model.norm.weight": sd["norm.weight"]}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        for key in _LAYER_KEYS:
            out[f"model.{p}{key}.weight"] = sd[f"{p}{key}.weight"]
        if arch == "phi3":
            qkv = [out.pop(f"model.{p}self_attn.{n}_proj.weight") for n in "qkv"]
            out[f"model.{p}self_attn.qkv_proj.weight"] = torch.cat(qkv, dim=0)
        if arch == "glm":
            for n in "qk":
                key = f"model.{p}self_attn.{n}_proj.weight"
                out[key] = _permute_heads(out[key], _glm_rotary_perm(cfg), cfg.head_dim)
        if arch in ("phi3", "glm"):
            gate_up = [out.pop(f"model.{p}mlp.{n}_proj.weight") for n in ("gate", "up")]
            out[f"model.{p}mlp.gate_up_proj.weight"] = torch.cat(gate_up, dim=0)
    if not (cfg.tie_embeddings and not cfg.norm_head):
        with torch.no_grad():
            out["lm_head.weight"] = model.head_weight()[:V]
    dtype = dtype or sd["embed_tokens.weight"].dtype
    # contiguous clones: safetensors refuses views and shared storage
    return {k: v.to(dtype).contiguous().clone() for k, v in out.items()}


def _model_config_from_hf(config: dict, overrides: dict) -> ModelConfig:
    arch = config.get("model_type")
    if arch not in _ARCH_CLASSES:
        raise ValueError(f"config.json: model_type {arch!r} is not supported ({', '.join(_ARCH_CLASSES)})")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "dynamic", "linear"):
        raise ValueError(f"config.json: rope_type {rope_type!r} is not supported (default, dynamic, linear)")
    scaling = None
    if rope_type != "default":   # dynamic NTK in transformers is relative to max_position_embeddings
        scaling = RopeScaling(type=rope_type, factor=float(rope["factor"]))
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    # GlmConfig's defaults differ: half the head rotated, q/k/v biases on
    factor = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 0.5 if arch == "glm" else 1.0))
    if arch == "llama" and factor != 1.0:
        raise ValueError("config.json: partial_rotary_factor on a llama model is ignored by transformers' "
                         "LlamaForCausalLM; refusing to guess which rotary the weights were trained with")
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if config.get(key, True if (arch, key) == ("glm", "attention_bias") else ok) != ok:
            raise ValueError(f"config.json: {key}={config[key]!r} is not supported (expected {ok!r})")
    d, heads = config["hidden_size"], config["num_attention_heads"]
    if config.get("head_dim") not in (None, d // heads):
        raise ValueError(f"config.json: head_dim {config['head_dim']} != hidden_size/num_attention_heads")
    fields = dict(
        vocab_size=config["vocab_size"], d_model=d, n_layers=config["num_hidden_layers"], n_heads=heads,
        n_kv_heads=config.get("num_key_value_heads") or heads, ffn_hidden=config["intermediate_size"],
        max_seq_len=config.get("max_position_embeddings", 2048), rope_theta=float(theta),
        rope_scaling=scaling, rotary_pct=float(factor), norm_eps=config.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        init_std=config.get("initializer_range", 0.02),
    )
    return ModelConfig(**{**fields, **overrides})


def _ours_from_hf_keys(hf: dict[str, torch.Tensor], cfg: ModelConfig, arch: str) -> dict[str, torch.Tensor]:
    """HF names -> ours, splitting Phi-3's fused projections; refuses missing/extra keys."""
    hf = dict(hf)
    out = {}

    def take(key: str) -> torch.Tensor:
        if key not in hf:
            raise KeyError(key)
        return hf.pop(key)
    try:
        out["embed_tokens.weight"] = take("model.embed_tokens.weight")
        out["norm.weight"] = take("model.norm.weight")
        q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        for i in range(cfg.n_layers):
            p = f"layers.{i}."
            if arch == "phi3":
                wq, wk, wv = take(f"model.{p}self_attn.qkv_proj.weight").split([q, kv, kv], dim=0)
                out.update({f"{p}self_attn.q_proj.weight": wq, f"{p}self_attn.k_proj.weight": wk,
                            f"{p}self_attn.v_proj.weight": wv})
            if arch == "glm":   # back from GLM's interleaved rotary order
                inverse = torch.argsort(_glm_rotary_perm(cfg))
                for n in "qk":
                    w = take(f"model.{p}self_attn.{n}_proj.weight")
                    out[f"{p}self_attn.{n}_proj.weight"] = _permute_heads(w, inverse, cfg.head_dim)
            if arch in ("phi3", "glm"):
                gate, up = take(f"model.{p}mlp.gate_up_proj.weight").split([cfg.ffn_dim, cfg.ffn_dim], dim=0)
                out.update({f"{p}mlp.gate_proj.weight": gate, f"{p}mlp.up_proj.weight": up})
            for key in _LAYER_KEYS:
                name = f"{p}{key}.weight"
                if name not in out:
                    out[name] = take(f"model.{name}")
        if "lm_head.weight" in hf:
            out["lm_head.weight"] = hf.pop("lm_head.weight")
        elif not cfg.tie_embeddings:
            raise KeyError("lm_head.weight")
    except KeyError as e:
        raise ValueError(f"HF weights: missing {e.args[0]}") from None
    hf = {k: v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}
    if hf:
        raise ValueError(f"HF weights: unexpected keys {sorted(hf)[:5]}")
    return out


def from_hf(config: dict, state_dict: dict[str, torch.Tensor], **overrides) -> Transformer:
    """Our Transformer from an HF Llama/Phi-3 config dict and weights (vocab padded back).

    overrides set ModelConfig fields the HF config does not carry (pad_vocab_multiple,
    attn_backend, norm_head: harmless on imported heads whose rows already have unit norm).
    """
    cfg = _model_config_from_hf(config, overrides)
    sd = _ours_from_hf_keys(state_dict, cfg, config["model_type"])
    V, Vp = cfg.vocab_size, cfg.padded_vocab_size
    for key in ("embed_tokens.weight", "lm_head.weight"):
        if key in sd:
            w = sd[key]
            if w.shape != (V, cfg.d_model):
                raise ValueError(f"HF weights: {key} has shape {tuple(w.shape)}, expected {(V, cfg.d_model)}")
            sd[key] = torch.cat([w, w.new_zeros(Vp - V, cfg.d_model)])   # padded rows: never used
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device="cpu")
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight   # to_empty does not keep the tie
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    expected = model.state_dict()
    for k, v in sd.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"HF weights: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    dtype = sd["embed_tokens.weight"].dtype
    model = model.to(dtype)
    model.load_state_dict(sd, strict=True)
    model.init_buffers()
    return model


def save_hf(model: Transformer, out_dir: str | Path, dtype: torch.dtype | None = None,
            arch: str | None = None) -> Path:
    """Write config.json + model.safetensors that transformers loads with the same logits.
    arch: None = hf_arch(cfg) (llama / phi3); "glm" for partial rotary with rope scaling."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(model.cfg, arch=arch)    # refuses an impossible export before writing
    sd = to_hf_state_dict(model, dtype, arch)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    config = hf_config_dict(model.cfg, sd["model.embed_tokens.weight"].dtype, arch)
    write_json(out / "config.json", config, indent=2)
    return out


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """model.safetensors or a sharded model.safetensors.index.json; never pickle files."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for f in files for k, v in load_file(str(path / f)).items()}
    raise FileNotFoundError(f"{path}: no model.safetensors (pickle .bin checkpoints are not loaded)")


def load_hf(path: str | Path, **overrides) -> Transformer:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: not found")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: line {e.lineno}: invalid JSON: {e.msg}") from None
    return from_hf(config, read_hf_weights(path), **overrides)
