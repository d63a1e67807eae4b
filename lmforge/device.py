"""Devices and precision (bottom layer): one place that decides where and in what dtype to run."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else CPU; anything else as torch spells it (cpu, cuda:1, mps)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a `precision` setting means on `device` (None: plain fp32)."""
    # fp8: torchao's float8 matmuls inside the converted linear layers, bf16 autocast around them
    if precision in ("bf16", "fp8") or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device, dtype: torch.dtype | None):
    """The precision path of a training step on `device`: autocast to `dtype`, or (None) off."""
    device = torch.device(device)
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
