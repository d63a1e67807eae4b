"""The optimizer: AdamW with the reports' defaults (Index-1.9B: b1 0.9, b2 0.95, eps 1e-8,
wd 0.1, clip 1.0), or Muon on the hidden matrices with AdamW on the rest (`name: muon`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmforge.config import check

NS_DTYPES = ("auto", "bfloat16", "float32", "float64")


@dataclass
class MuonConfig:
    momentum: float = 0.95           # Nesterov momentum of the Muon matrices (torch.optim.Muon, modded-nanogpt)
    nesterov: bool = True            # Nesterov form g + mu*(m - g) (Keller Jordan's and torch's default)
    ns_steps: int = 5                # Newton-Schulz iterations (5 in every published implementation)
    lr_scale: str = "match_rms_adamw"  # match_rms_adamw: 0.2*sqrt(max(rows, cols)), reuses AdamW's lr and wd (Moonshot); original: sqrt(max(1, rows/cols)) (Keller Jordan)
    lr_mult: float = 1.0             # multiplies the schedule's LR on Muon matrices only (e.g. ~40 with lr_scale: original)
    ns_dtype: str = "auto"           # auto: bfloat16 on CUDA (as the reference code), float32 on CPU

    def __post_init__(self):
        check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        check(1 <= self.ns_steps < 100, "ns_steps", "must be in [1, 100)")
        check(self.lr_scale in ("match_rms_adamw", "original"), "lr_scale", "match_rms_adamw or original")
        check(self.lr_mult > 0, "lr_mult", "must be > 0")
        check(self.ns_dtype in NS_DTYPES, "ns_dtype", " | ".join(NS_DTYPES))


@dataclass
class OptimConfig:
    name: str = "adamw"              # adamw | muon (Muon on 2-D hidden weights, AdamW on embeddings, head, norms, biases)
    lr: float = 5e-4
    betas: list[float] = (0.9, 0.95)  # type: ignore[assignment]  # YAML gives a list
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0           # 0 disables clipping (the norm is still measured)
    fused: bool | None = None        # None: fused kernel on CUDA, plain loop on CPU
    muon: MuonConfig = field(default_factory=MuonConfig)

    def __post_init__(self):
        self.betas = list(self.betas)
        check(self.name in ("adamw", "muon"), "name", "adamw or muon")
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


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A 2-D weight inside a transformer block (attention and MLP projections, LoRA factors):
    what Muon optimises. Embeddings and the LM head are outside `layers.` and stay on AdamW."""
    return p.ndim == 2 and (name.startswith("layers.") or ".layers." in name)


def muon_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    m = cfg.muon
    ns_dtype = m.ns_dtype
    if ns_dtype == "auto":
        ns_dtype = "bfloat16" if next(model.parameters()).is_cuda else "float32"
    hidden = [p for n, p in model.named_parameters() if p.requires_grad and is_hidden_matrix(n, p)]
    ids = {id(p) for p in hidden}
    rest = param_groups(model, cfg.weight_decay)
    for g in rest:
        g["params"] = [p for p in g["params"] if id(p) not in ids]
    muon = {"params": hidden, "weight_decay": cfg.weight_decay, "muon": True, "momentum": m.momentum,
            "nesterov": m.nesterov, "ns_steps": m.ns_steps, "lr_scale": m.lr_scale, "lr_mult": m.lr_mult,
            "ns_dtype": ns_dtype}
    return [muon, *rest]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    fused = cfg.fused
    if fused is None:
        fused = next(model.parameters()).is_cuda
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)
    if cfg.name == "muon":
        from lmforge.train.muon import MuonAdamW
        return MuonAdamW(muon_groups(model, cfg), **kwargs)
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs)
