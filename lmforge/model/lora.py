"""LoRA (Hu et al. 2021): low-rank adapters on the block's linear layers, merged on export.

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: [r, in], B: [out, r]

A starts Kaiming-uniform and B at zero (as `peft` initialises them), so an adapted model
starts exactly at its base. Only A and B train; every base weight is frozen.

Why not `peft` itself: `peft.inject_adapter_in_model` works on our Transformer, but it
moves every adapted base weight to `...q_proj.base_layer.weight`, so a LoRA checkpoint
would no longer load where a plain one does (and every loader would need a renaming), and
it makes transformers + accelerate runtime dependencies. Here the adapted layer IS an
nn.Linear with the same `weight`/`bias` names plus `lora_A`/`lora_B`, so base weights load
into an adapted model unchanged, a checkpoint holds base + adapters in one safetensors
file, and `merge_lora` gives back a plain model. The forward pass and the merged weights
equal peft's for the same A and B (tests/test_lora.py checks them against peft).

Which layers: `target_modules` names the block's projections (default: all seven, as
QLoRA and LLaMA-Factory's `lora_target: all`); the embedding and LM head are not adapted.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmforge.config import check

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRAConfig:
    """`lora:` on sft / dpo: train low-rank adapters instead of the full weights."""
    r: int = 8
    alpha: float = 16.0                # scale = alpha / r (LLaMA-Factory's default alpha = 2 r)
    dropout: float = 0.0               # on the adapter's input only
    target_modules: list[str] = field(default_factory=lambda: list(TARGETS))

    def __post_init__(self):
        check(self.r >= 1, "r", "must be >= 1")
        check(self.alpha > 0, "alpha", "must be > 0")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        check(len(self.target_modules) > 0, "target_modules", "name at least one layer")
        for t in self.target_modules:
            check(t in TARGETS, "target_modules", f"{t!r} is not one of {', '.join(TARGETS)}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Linear):
    """An nn.Linear (same weight/bias parameters, frozen) plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, cfg: LoRAConfig):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        kw = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(cfg.r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, cfg.r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # peft's init_lora_weights=True
        self.scale = cfg.scale
        self.lora_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.adapters_on = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.adapters_on:
            return y
        return y + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scale

    def merged_weight(self) -> torch.Tensor:
        """W + scale * B A, computed in float32 and cast back."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
        return (self.weight.float() + delta).to(self.weight.dtype)


def is_lora_key(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B"))


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def attach_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Replace the targeted nn.Linear layers by LoRALinear and freeze everything but A and B."""
    targets = [(n, m) for n, m in model.named_modules()
               if type(m) is nn.Linear and n.rpartition(".")[2] in cfg.target_modules]
    if not targets:
        raise ValueError(f"lora.target_modules: no layer named {cfg.target_modules} in the model")
    for name, lin in targets:
        _set_child(model, name, LoRALinear(lin, cfg))
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_key(name))
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight; the model becomes plain (nn.Linear) again,
    trainable as a whole."""
    for name, m in lora_layers(model):
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                        device=m.weight.device, dtype=m.weight.dtype)
        lin.weight.copy_(m.merged_weight())
        if m.bias is not None:
            lin.bias.copy_(m.bias)
        _set_child(model, name, lin)
    model.requires_grad_(True)
    return model


@contextmanager
def adapters_disabled(model: nn.Module):
    """Run the base model: every adapter off inside the block (the DPO reference with LoRA)."""
    layers = [m for _, m in lora_layers(model)]
    before = [m.adapters_on for m in layers]
    for m in layers:
        m.adapters_on = False
    try:
        yield model
    finally:
        for m, on in zip(layers, before):
            m.adapters_on = on


class BaseOf(nn.Module):
    """The base of an adapted model as a frozen reference, sharing its weights (no copy).

    The policy is held outside the module tree, so .eval(), .requires_grad_(False) and .to()
    on the reference leave the policy's adapters and mode alone."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self._policy = [policy]

    def forward(self, *args, **kwargs):
        policy = self._policy[0]
        with adapters_disabled(policy):
            return policy(*args, **kwargs)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone (what LoRA training changes)."""
    return {k: v for k, v in model.state_dict().items() if is_lora_key(k)}


def load_base_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Plain (base) weights into a model that may carry adapters: only adapter keys may be missing."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not is_lora_key(k)]
    if missing or unexpected:
        raise ValueError(f"weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
