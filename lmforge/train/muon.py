"""Muon for the hidden weight matrices, AdamW for everything else, as one torch optimizer.

Muon (Keller Jordan, 2024; "Muon is Scalable for LLM Training", Liu et al. 2025) replaces each
2-D hidden weight's update by the orthogonalised Nesterov momentum: five Newton-Schulz
iterations map the momentum M = U S V^T to roughly U V^T. Embeddings, the LM head, norms and
biases are not hidden matrices (their rows are looked up or read out one token at a time) and
stay on AdamW, as in every published implementation (modded-nanogpt, Moonlight, torch.optim.Muon's
own docstring).

One optimizer object, not two: the trainer, the checkpoint format (`optimizer.pt`, DCP) and the
LR schedule see one `param_groups` list and one `state_dict`, so resume is exact as with AdamW.
The AdamW groups are stepped by torch's own AdamW code; the Muon groups by `muon_update`, which
follows torch.optim.Muon (2.13) step for step (equal to it bit for bit when the Newton-Schulz
dtype is bfloat16, as there), with the dtype a setting so that a float64 reference can check it.

Learning rate: `lr_scale: match_rms_adamw` (Moonshot's rule, the default) scales each matrix's
step by 0.2 * sqrt(max(rows, cols)) so that its update RMS matches AdamW's; the AdamW-tuned
learning rate and weight decay of a recipe then carry over unchanged. `original` is Keller
Jordan's sqrt(max(1, rows/cols)), which wants a much larger learning rate (0.02 in
modded-nanogpt): set it with `lr_mult`, which multiplies the schedule's LR on Muon groups only.

Under FSDP2 a weight is a DTensor sharded by rows; the orthogonalisation needs the whole matrix,
so every rank gathers the full momentum, orthogonalises it and keeps its own rows (the simple
variant: every rank repeats the Newton-Schulz work for every matrix; the sharded variant that
assigns matrices to ranks is not implemented).
"""
from __future__ import annotations

import math

import torch

# torch.optim.Muon's constants (from Keller Jordan's muon.py): quintic coefficients chosen for
# the steepest slope at zero, 5 steps.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def newton_schulz(g: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T (singular values end in about [0.7, 1.2], not 1:
    the coefficients trade exactness for speed, which does not hurt training)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:                       # iterate on the wide orientation: the Gram matrix is smaller
        x = x.T
    x = x / x.norm().clamp(min=NS_EPS)   # Frobenius norm >= spectral norm: singular values <= 1
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def lr_ratio(shape: torch.Size, rule: str) -> float:
    rows, cols = shape[0], shape[1]
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))      # "original"


def _orthogonalise(update: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(update, DTensor):
        # every rank orthogonalises the full matrix and keeps its own shard (no scatter: the
        # full result is the same on every rank, so src_data_rank=None slices it locally)
        full = newton_schulz(update.full_tensor(), steps, dtype)
        return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)
    return newton_schulz(update, steps, dtype)


@torch.no_grad()
def muon_update(p: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, group: dict) -> None:
    """One Muon step on one matrix (torch.optim.Muon's _single_tensor_muon, with our dtype)."""
    momentum = group["momentum"]
    buf.lerp_(grad, 1 - momentum)
    update = grad.lerp(buf, momentum) if group["nesterov"] else buf
    ortho = _orthogonalise(update, group["ns_steps"], getattr(torch, group["ns_dtype"]))
    lr = group["lr"] * group["lr_mult"]
    p.mul_(1 - lr * group["weight_decay"])
    p.add_(ortho.to(p.dtype), alpha=-lr * lr_ratio(p.shape, group["lr_scale"]))


class MuonAdamW(torch.optim.AdamW):
    """AdamW whose groups marked `muon: True` take Muon steps instead. Muon groups hold 2-D
    parameters only; their state is one `momentum_buffer` (and a step count) per matrix."""

    def __init__(self, groups: list[dict], **adamw_kwargs):
        super().__init__(groups, **adamw_kwargs)
        for g in self.param_groups:
            if g.get("muon"):
                bad = [tuple(p.shape) for p in g["params"] if p.ndim != 2]
                if bad:
                    raise ValueError(f"Muon groups take 2-D matrices only, got shapes {bad}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        for g in groups:
            if g.get("muon"):
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                        # a step count too: Adam's load_state_dict expects one in every state
                        state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["step"] += 1
                    muon_update(p, p.grad, state["momentum_buffer"], g)
        # AdamW on the other groups, by torch's own code (fused / foreach / single as configured)
        self.param_groups = [g for g in groups if not g.get("muon")]
        try:
            super().step()
        finally:
            self.param_groups = groups
        return loss
