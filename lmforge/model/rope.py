"""Rotary position embedding, Hugging Face / GPT-NeoX "rotate_half" convention.

Only the first `rotary_dim` dims of each head are rotated (partial rotary, StableLM 2:
25%); the rest pass through unchanged. Within the rotated part, dim i pairs with dim
i + rotary_dim/2 (not interleaved pairs as in Meta's original Llama code), which is the
layout Hugging Face Llama/Phi-3/GPT-NeoX checkpoints expect.

Angles are computed in float32 from explicit position ids, so packed rows whose
positions restart at every document work unchanged.
"""
from __future__ import annotations

import torch

from lmforge.model.config import ModelConfig


def base_inv_freq(rotary_dim: int, theta: float, device=None) -> torch.Tensor:
    """1 / theta^(2i / rotary_dim) for i < rotary_dim/2, float32."""
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device) / rotary_dim
    return 1.0 / (theta ** exponent)


def compute_inv_freq(cfg: ModelConfig, seq_len: int | None = None, device=None) -> torch.Tensor:
    """Inverse frequencies for a forward pass over `seq_len` tokens.

    The seam for context extension: a Dynamic-NTK variant (Index-32K compares against
    it) changes theta here as a function of seq_len / cfg.max_seq_len. Plain RoPE
    ignores seq_len.
    """
    return base_inv_freq(cfg.rotary_dim, cfg.rope_theta, device)


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
