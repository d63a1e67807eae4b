"""Training FLOPs per token and the peak throughput of known accelerators (for MFU)."""
from __future__ import annotations

import torch

from lmforge.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul: every block's projections and the LM head
    (over the padded vocabulary, which is computed too); not the embedding lookup."""
    return cfg.n_layers * cfg.layer_matmul_params() + cfg.d_model * cfg.padded_vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """FLOPs of one training step (forward + backward) per token:

        6 * N_matmul + 12 * n_layers * (n_heads * head_dim) * seq_len

    6 N: 2 FLOPs per weight per token forward, 4 backward. The second term is attention's
    QK^T scores and the weighted sum of V (PaLM, appendix B; n_heads * head_dim is d_model
    unless the head size is decoupled, as in Qwen3 / Gemma); causal masking and a sliding
    window are not subtracted, as in PaLM's MFU accounting.
    """
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


# bf16 dense peak (no sparsity), FLOP/s; first substring match of the device name wins
_PEAKS = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),   # SXM
    ("H200", 989e12),
    ("A100", 312e12),
]


def peak_flops(device) -> float | None:
    """bf16 dense peak of the GPU `device` (torch.device or str), None on CPU / unknown GPUs."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_by_name(torch.cuda.get_device_name(device))


def peak_flops_by_name(name: str) -> float | None:
    lowered = name.lower()
    for key, peak in _PEAKS:
        if key.lower() in lowered:
            return peak
    return None
