"""Rotary position embedding, Hugging Face / GPT-NeoX "rotate_half" convention.

Only the first `rotary_dim` dims of each head are rotated (partial rotary, StableLM 2:
25%); the rest pass through unchanged. Within the rotated part, dim i pairs with dim
i + rotary_dim/2 (not interleaved pairs as in Meta's original Llama code), which is the
layout Hugging Face Llama/Phi-3/GPT-NeoX checkpoints expect.

Angles are computed in float32 from explicit position ids, so packed rows whose
positions restart at every document work unchanged.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from lmforge.model.config import MAX_POSITIONS, ModelConfig, RopeScaling


def base_inv_freq(rotary_dim: int, theta: float, device=None) -> torch.Tensor:
    """1 / theta^(2i / rotary_dim) for i < rotary_dim/2, float32."""
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device) / rotary_dim
    return 1.0 / (theta ** exponent)


def scaled_theta(cfg: ModelConfig, seq_len: int | None) -> float:
    """The RoPE base for a forward over `seq_len` tokens (Dynamic NTK raises it past the original length).

    Same formula as transformers' "dynamic" rope type (there orig = max_position_embeddings):
        base * (factor * L / orig - (factor - 1)) ** (d / (d - 2)),  L = max(seq_len, orig)
    so the lowest frequency is stretched by about L / orig while the highest barely moves.
    """
    rs = cfg.rope_scaling
    if rs is None or rs.type != "dynamic" or seq_len is None:
        return cfg.rope_theta
    orig = cfg.rope_original_len
    length = max(int(seq_len), orig)
    d = cfg.rotary_dim
    return cfg.rope_theta * ((rs.factor * length / orig) - (rs.factor - 1)) ** (d / (d - 2))


def compute_inv_freq(cfg: ModelConfig, seq_len: int | None = None, device=None) -> torch.Tensor:
    """Inverse frequencies for a forward pass over `seq_len` tokens.

    `seq_len` is the length the positions span (max position + 1): with a KV cache, the
    cached tokens plus the new ones. Plain RoPE ignores it; Dynamic NTK (cfg.rope_scaling
    type "dynamic") changes the base once seq_len exceeds the original length; linear
    scaling (position interpolation) divides every frequency by the factor.
    """
    inv_freq = base_inv_freq(cfg.rotary_dim, scaled_theta(cfg, seq_len), device)
    rs = cfg.rope_scaling
    if rs is not None and rs.type == "linear":
        inv_freq = inv_freq / rs.factor
    if rs is not None and rs.type == "llama3":
        inv_freq = llama3_inv_freq(inv_freq, rs, cfg.rope_original_len)
    return inv_freq


def llama3_inv_freq(inv_freq: torch.Tensor, rs: RopeScaling, orig: int) -> torch.Tensor:
    """Llama 3.1's frequency-dependent scaling of the plain inverse frequencies.

    A dimension whose wavelength 2 pi / f is shorter than orig / high_freq_factor keeps f
    (it turns many times within the original window); longer than orig / low_freq_factor
    is divided by `factor` (position interpolation); in between, the two are mixed with
    weight s = (orig / wavelength - low) / (high - low). Same float32 operations in the same
    order as transformers' `_compute_llama3_parameters`, so the angles agree bit for bit.
    """
    low, high, factor = rs.low_freq_factor, rs.high_freq_factor, rs.factor
    wavelen = 2 * math.pi / inv_freq
    long_wave = wavelen > orig / low
    out = torch.where(long_wave, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - low) / (high - low)
    mixed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < orig / high) * ~long_wave
    return torch.where(medium, mixed, out)


def rope_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin of shape [B, 1, T, rotary_dim] (broadcast over heads), cast to `dtype`."""
    freqs = position_ids[..., None].to(torch.float32) * inv_freq.to(torch.float32)   # [B, T, rd/2]
    emb = torch.cat((freqs, freqs), dim=-1)                                           # [B, T, rd]
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of x [B, H, T, head_dim]; keep the rest."""
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


EXTENSIONS = ("model", "naive", "dynamic", "linear")


def extension_config(cfg: ModelConfig, mode: str, factor: float = 8.0) -> ModelConfig:
    """The model config for a training-free way to run past the trained length.

    model:   as trained (its own rope_scaling, if any)
    naive:   plain RoPE extrapolated past max_seq_len (rope_scaling removed)
    dynamic: Dynamic NTK with `factor` relative to the trained length (Index-32K compared 8)
    linear:  position interpolation by `factor`
    """
    if mode not in EXTENSIONS:
        raise ValueError(f"unknown RoPE extension {mode!r} (known: {', '.join(EXTENSIONS)})")
    if mode == "model":
        return cfg
    if mode == "naive":
        return dataclasses.replace(cfg, rope_scaling=None)
    return dataclasses.replace(cfg, rope_scaling=RopeScaling(mode, float(factor), cfg.rope_original_len))


def usable_length(cfg: ModelConfig) -> int:
    """Positions a config is meant to run at: max_seq_len for plain RoPE (and for Llama 3's
    static scaling, whose max_seq_len is already the extended length); with a training-free
    extension (or when extrapolating on purpose) only the float32 angle limit applies."""
    rs = cfg.rope_scaling
    return cfg.max_seq_len if rs is None or rs.type == "llama3" else MAX_POSITIONS
