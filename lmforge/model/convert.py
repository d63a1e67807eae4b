"""Round trip with Hugging Face checkpoints (config.json + model.safetensors).

Export folds what HF does not have into plain weights: Norm-Head rows are written
normalised into lm_head.weight, and the padded vocabulary rows are sliced off (HF's
vocab_size is the real one). Import pads them back (zero rows, masked to -inf anyway).

Which architecture carries which ModelConfig is hf_archs.py's table (llama, mistral,
qwen2, qwen3, phi3, glm, stablelm, gemma); export writes the first one that computes the
same logits (`export_arch`). Our parameter names are HF Llama's without the "model."
prefix, so the weights are a renaming plus three layouts:

- Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj (GLM fuses gate/up).
- Partial rotary: LlamaForCausalLM (checked in 5.23) ignores `partial_rotary_factor` and
  rotates the whole head, so a model with rotary_pct < 1 is exported as Phi3ForCausalLM
  (same block, fused projections, rotates the first partial_rotary_factor of each head);
  Phi3Config refuses every rope_type but default/longrope, so partial rotary WITH rope
  scaling goes to GlmForCausalLM (any rope type) or, with LayerNorm, StableLmForCausalLM.
- GLM rotates INTERLEAVED pairs (2i, 2i+1) where we rotate (i, i + rotary_dim/2) at the
  same frequency i, so the q/k projection rows (and biases) of each head's rotary part are
  permuted on export and back on import. One permutation applied to both q and k leaves
  every attention score q.k unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.checkpoint import CorruptCheckpoint, read_safetensors
from lmforge.config import ConfigError
from lmforge.io.atomic import atomic_path, write_json
from lmforge.io.jsonl import parse_error
from lmforge.model import hf_archs
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def export_arch(cfg: ModelConfig) -> str:
    """The HF model_type written for cfg: the first of hf_archs.EXPORT_ORDER with exact logits."""
    return hf_archs.choose(cfg)


def hf_arch(cfg: ModelConfig) -> str:
    """Same as export_arch (kept for callers of the older name)."""
    return export_arch(cfg)


def _glm_rotary_perm(cfg: ModelConfig) -> torch.Tensor:
    """Row order of one head for GLM: new dim 2i <- ours i, 2i+1 <- ours i + rotary_dim/2."""
    half = cfg.rotary_dim // 2
    rot = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    return torch.cat([rot, torch.arange(cfg.rotary_dim, cfg.head_dim)])


def _permute_heads(w: torch.Tensor, perm: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Reorder the output rows of a q/k projection weight [heads * head_dim, d] (or bias) inside every head."""
    return w.reshape(-1, head_dim, *w.shape[1:])[:, perm].reshape(w.shape)


def _partial_factor(cfg: ModelConfig) -> float:
    """rotary_dim / head_dim, nudged so that transformers' int(head_dim * f) gives rotary_dim back."""
    f = cfg.rotary_dim / cfg.head_dim
    while int(cfg.head_dim * f) < cfg.rotary_dim:
        f = float(torch.nextafter(torch.tensor(f, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)))
    return f


def _check_arch(cfg: ModelConfig, arch: str | None) -> str:
    arch = arch or export_arch(cfg)
    if arch not in hf_archs.ARCHS:
        raise ValueError(f"arch {arch!r} is not one of {', '.join(hf_archs.ARCHS)}")
    reason = hf_archs.why_not(arch, cfg)
    if reason:
        raise ValueError(f"{hf_archs.ARCHS[arch].class_name} cannot express this model ({reason}); "
                         "export_arch(cfg) names one that can")
    return arch


def hf_max_length(cfg: ModelConfig) -> int:
    """The length HF tools should let the model run at (tokenizer model_max_length, lm-eval).

    Plain RoPE and llama3 scaling: max_seq_len. A training-free extension (dynamic NTK,
    linear) stretches the original length by its factor (Index-32K: 8 x 4K = 32K), and
    never less than the trained length.
    """
    rs = cfg.rope_scaling
    if rs is None or rs.type == "llama3":
        return cfg.max_seq_len
    return max(cfg.max_seq_len, int(rs.factor * cfg.rope_original_len))


def _rope_parameters(cfg: ModelConfig, arch: str) -> dict:
    rope = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    rs = cfg.rope_scaling
    if rs is not None:
        rope.update(rope_type=rs.type, factor=float(rs.factor))
        if rs.type == "llama3":
            rope.update(low_freq_factor=rs.low_freq_factor, high_freq_factor=rs.high_freq_factor,
                        original_max_position_embeddings=cfg.rope_original_len)
    if arch in ("phi3", "glm", "stablelm"):
        rope["partial_rotary_factor"] = _partial_factor(cfg)
    return rope


def hf_config_dict(cfg: ModelConfig, dtype: torch.dtype = torch.float32, arch: str | None = None) -> dict:
    """config.json for `arch` (default export_arch(cfg)); ValueError if it cannot carry cfg exactly."""
    arch = _check_arch(cfg, arch)
    spec = hf_archs.ARCHS[arch]
    rope = _rope_parameters(cfg, arch)
    rs = cfg.rope_scaling
    dynamic = rs is not None and rs.type == "dynamic"
    out = {
        "architectures": [spec.class_name],
        "model_type": arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        # transformers' dynamic NTK scales relative to max_position_embeddings (5.23 ignores
        # original_max_position_embeddings for it), so for exact logits that key must hold
        # the original length; linear scaling does not read it: the extended length goes there
        "max_position_embeddings": cfg.rope_original_len if dynamic else hf_max_length(cfg),
        spec.eps_key: cfg.norm_eps,
        "initializer_range": cfg.init_std,
        "rope_parameters": rope,
        "rope_theta": float(cfg.rope_theta),      # the pre-5.0 spelling, for older readers
        **({"rope_scaling": {"type": rs.type, **{k: v for k, v in rope.items()
                                                 if k not in ("rope_theta", "partial_rotary_factor")}}}
           if rs else {}),
        # a folded Norm-Head cannot share its matrix with the embedding
        "tie_word_embeddings": cfg.tie_embeddings and not cfg.norm_head,
        "attention_dropout": 0.0,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,  # export/ sets these from the tokenizer
        "use_cache": True,
        "dtype": _DTYPE_NAMES[dtype],
        "torch_dtype": _DTYPE_NAMES[dtype],       # the pre-5.0 spelling
    }
    if dynamic:
        # lm-eval's HFLM takes the first of n_positions, max_position_embeddings as the model's
        # length: without this a dynamic-NTK export would be cut at its original length
        out["n_positions"] = hf_max_length(cfg)
    if "partial_rotary_factor" in rope:
        out["partial_rotary_factor"] = rope["partial_rotary_factor"]
    out.update(hf_archs.arch_config(arch, cfg))
    return out


def to_hf_state_dict(model: Transformer, dtype: torch.dtype | None = None,
                     arch: str | None = None) -> dict[str, torch.Tensor]:
    """Our weights under HF names: vocab sliced to the real size, Norm-Head folded, Phi-3/GLM
    fusing (and GLM's interleaved rotary order)."""
    cfg = model.cfg
    arch = _check_arch(cfg, arch)
    spec = hf_archs.ARCHS[arch]
    V = cfg.vocab_size
    sd = {k: v.detach() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    out = {f"model.{k}": v for k, v in sd.items()}
    out["model.embed_tokens.weight"] = sd["embed_tokens.weight"][:V]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        if spec.interleaved_rotary:
            for n in "qk":
                for kind in ("weight", "bias"):
                    key = f"{p}self_attn.{n}_proj.{kind}"
                    if key in out:
                        out[key] = _permute_heads(out[key], _glm_rotary_perm(cfg), cfg.head_dim)
        if spec.fused_qkv:
            qkv = [out.pop(f"{p}self_attn.{n}_proj.weight") for n in "qkv"]
            out[f"{p}self_attn.qkv_proj.weight"] = torch.cat(qkv, dim=0)
        if spec.fused_gate_up:
            gate_up = [out.pop(f"{p}mlp.{n}_proj.weight") for n in ("gate", "up")]
            out[f"{p}mlp.gate_up_proj.weight"] = torch.cat(gate_up, dim=0)
    if not (cfg.tie_embeddings and not cfg.norm_head):
        with torch.no_grad():
            out["lm_head.weight"] = model.head_weight()[:V]
    dtype = dtype or sd["embed_tokens.weight"].dtype
    # contiguous clones: safetensors refuses views and shared storage
    return {k: v.to(dtype).contiguous().clone() for k, v in out.items()}


MAX_PARAMS = 10 ** 12   # a config.json claiming more is broken (or not a model this toolkit can hold)


def _model_config_from_hf(config: dict, overrides: dict) -> ModelConfig:
    cfg = ModelConfig(**{**hf_archs.fields_from_hf(config), **overrides})
    if cfg.n_params() > MAX_PARAMS:   # before anything is allocated: huge sizes end in an allocator error
        raise ValueError(f"{cfg.n_params():.3g} parameters (d_model {cfg.d_model}, ffn {cfg.ffn_dim}, "
                         f"vocab {cfg.vocab_size}, {cfg.n_layers} layers): over {MAX_PARAMS:.0e}")
    return cfg


def read_hf_config(path: str | Path) -> dict:
    """A Hugging Face folder's config.json as a dict; ConfigError naming the file when it is not
    UTF-8, not JSON, nested too deeply or not an object."""
    f = Path(path) / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not found")
    try:
        config = json.loads(f.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{f}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{f}: line {e.lineno}: invalid JSON: {e.msg}") from None
    except (ValueError, RecursionError) as e:   # a 5000-digit number, [[[[... 100k deep
        raise ConfigError(f"{f}: {parse_error(e)}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{f}: not a JSON object")
    return config


def model_config_of_hf(path: str | Path, overrides: dict | None = None) -> ModelConfig:
    """Our ModelConfig for a HF folder's config.json; ConfigError naming the file and the key."""
    f = Path(path) / "config.json"
    config = read_hf_config(path)
    try:
        return _model_config_from_hf(config, overrides or {})
    except KeyError as e:
        raise ConfigError(f"{f}: missing key {e.args[0]}") from None
    except ConfigError as e:
        raise ConfigError(f"{f}: {e}") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise ConfigError(f"{f}: {str(e).splitlines()[0][:200]}") from None


def _ours_from_hf_keys(hf: dict[str, torch.Tensor], cfg: ModelConfig, arch: str,
                       expected: list[str]) -> dict[str, torch.Tensor]:
    """HF names -> ours, splitting fused projections; refuses missing/extra keys."""
    spec = hf_archs.ARCHS[arch]
    hf = {k: v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}
    q, kv, f = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.ffn_dim
    try:
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            if spec.fused_qkv:
                parts = hf.pop(f"{p}self_attn.qkv_proj.weight").split([q, kv, kv], dim=0)
                hf.update({f"{p}self_attn.{n}_proj.weight": w for n, w in zip("qkv", parts)})
            if spec.fused_gate_up:
                gate, up = hf.pop(f"{p}mlp.gate_up_proj.weight").split([f, f], dim=0)
                hf.update({f"{p}mlp.gate_proj.weight": gate, f"{p}mlp.up_proj.weight": up})
            if spec.interleaved_rotary:   # back from GLM's interleaved rotary order
                inverse = torch.argsort(_glm_rotary_perm(cfg))
                for key in [f"{p}self_attn.{n}_proj.{kind}" for n in "qk" for kind in ("weight", "bias")]:
                    if key in hf:
                        hf[key] = _permute_heads(hf[key], inverse, cfg.head_dim)
    except KeyError as e:
        raise ValueError(f"HF weights: missing {e.args[0]}") from None
    out = {(k if k == "lm_head.weight" else k.removeprefix("model.")): v for k, v in hf.items()}
    if cfg.tie_embeddings:
        expected = [k for k in expected if k != "lm_head.weight"]
        out.pop("lm_head.weight", None)   # a tied checkpoint may still store the head; the tie wins
    missing = [k for k in expected if k not in out]   # in the model's order: the first layer first
    if missing:
        k = missing[0]
        raise ValueError(f"HF weights: missing {k if k == 'lm_head.weight' else 'model.' + k}")
    extra = sorted(set(out) - set(expected))
    if extra:
        raise ValueError(f"HF weights: unexpected keys {extra[:5]}")
    return out


def from_hf(config: dict, state_dict: dict[str, torch.Tensor], **overrides) -> Transformer:
    """Our Transformer from an HF config dict (any hf_archs.ARCHS model_type) and its weights
    (vocab padded back).

    overrides set ModelConfig fields the HF config does not carry (pad_vocab_multiple,
    attn_backend, norm_head: harmless on imported heads whose rows already have unit norm).
    """
    cfg = _model_config_from_hf(config, overrides)
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device="cpu")
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight   # to_empty does not keep the tie
    expected = model.state_dict()
    sd = _ours_from_hf_keys(state_dict, cfg, config["model_type"], list(expected))
    V, Vp = cfg.vocab_size, cfg.padded_vocab_size
    for key in ("embed_tokens.weight", "lm_head.weight"):
        if key in sd:
            w = sd[key]
            if w.shape != (V, cfg.d_model):
                raise ValueError(f"HF weights: {key} has shape {tuple(w.shape)}, expected {(V, cfg.d_model)}")
            sd[key] = torch.cat([w, w.new_zeros(Vp - V, cfg.d_model)])   # padded rows: never used
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
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
    arch: None = export_arch(cfg); any hf_archs.ARCHS name that can carry the model."""
    from safetensors.torch import save_file

    from lmforge.io.atomic import with_default_mode

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(model.cfg, arch=arch)    # refuses an impossible export before writing
    sd = to_hf_state_dict(model, dtype, arch)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
        with_default_mode(tmp)   # safetensors creates it 0600
    config = hf_config_dict(model.cfg, sd["model.embed_tokens.weight"].dtype, arch)
    write_json(out / "config.json", config, indent=2)
    return out


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """model.safetensors or a sharded model.safetensors.index.json; never pickle files."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as e:
            raise CorruptCheckpoint(f"{index}: unreadable ({type(e).__name__}: {str(e)[:150]})") from None
        return {k: v for f in files for k, v in read_safetensors(path / f).items()}
    raise FileNotFoundError(f"{path}: no model.safetensors (pickle .bin checkpoints are not loaded)")


def load_hf(path: str | Path, **overrides) -> Transformer:
    path = Path(path)
    config = read_hf_config(path)
    model_config_of_hf(path, overrides)   # a bad config.json is refused before the weights are read
    return from_hf(config, read_hf_weights(path), **overrides)
