"""AdamW with the reports' defaults (Index-1.9B: b1 0.9, b2 0.95, eps 1e-8, wd 0.1, clip 1.0)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.config import check


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: list[float] = (0.9, 0.95)  # type: ignore[assignment]  # YAML gives a list
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0           # 0 disables clipping (the norm is still measured)
    fused: bool | None = None        # None: fused kernel on CUDA, plain loop on CPU

    def __post_init__(self):
        self.betas = list(self.betas)
        check(0 <= self.lr <= 10, "lr", "must be in [0, 10] (AdamW diverges long before; 1e300 overflows)")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two values in [0, 1)")
        check(self.eps > 0, "eps", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables)")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (ndim >= 2); norms' gains and any biases are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    fused = cfg.fused
    if fused is None:
        fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, fused=fused)
