"""FP8 training (`train.precision: fp8`): torchao's float8 linear layers, bf16 elsewhere.

torchao (pytorch/ao, `torchao.float8`) swaps chosen `nn.Linear` modules for `Float8Linear`,
whose matmuls run in float8 with dynamic scales; weights, optimizer state and checkpoints stay in
their usual dtype, so resume and export are unchanged. It needs a GPU with float8 tensor cores
(compute capability >= 8.9: H100/H200, L4, Ada); anywhere else the setting is refused in one
line before training starts (LLaMA-Factory users found FP8 silently falling back to bf16).

Which layers: the plan below, decided here so that it can be read and tested without a GPU.
- never the LM head (`lm_head`): the output layer stays in bf16, as torchtitan's float8
  default (`filter_fqns: ["output"]`) and for the same reason: the logits' precision matters
  most and the vocabulary-sized matmul is a small share of a deep model's FLOPs;
- both dimensions multiples of 16 (the float8 GEMM's hardware requirement);
- large enough to gain: torchao's thresholds, measured on H100 for each recipe
  (torchao 0.18 `_auto_filter_for_recipe`; weight shape N x K = out x in):
  tensorwise skips K <= 4096 and N <= 1024; rowwise skips N <= 2048, K <= 1024, and
  N <= 4096 and K <= 2048.
The trainer prints the plan's count on the first line of the run (converted / kept, by reason).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config import ConfigError

RECIPES = ("tensorwise", "rowwise")
MIN_CAPABILITY = (8, 9)


@dataclass
class Decision:
    name: str
    shape: tuple[int, int]          # (out, in) = (N, K)
    convert: bool
    reason: str


def _too_small(n: int, k: int, recipe: str) -> bool:
    if recipe == "tensorwise":
        return k <= 4096 and n <= 1024
    return n <= 2048 or k <= 1024 or (n <= 4096 and k <= 2048)


def decide(name: str, layer: nn.Linear, recipe: str) -> Decision:
    n, k = layer.weight.shape
    if name == "lm_head" or name.endswith(".lm_head"):
        return Decision(name, (n, k), False, "output layer (kept in bf16)")
    if n % 16 or k % 16:
        return Decision(name, (n, k), False, "a dimension not a multiple of 16")
    if _too_small(n, k, recipe):
        return Decision(name, (n, k), False, f"below the {recipe} size threshold")
    return Decision(name, (n, k), True, "converted")


def plan(model: nn.Module, recipe: str = "tensorwise") -> list[Decision]:
    return [decide(name, m, recipe) for name, m in model.named_modules() if type(m) is nn.Linear]


def summary(decisions: list[Decision], recipe: str) -> str:
    kept: dict[str, int] = {}
    for d in decisions:
        if not d.convert:
            kept[d.reason] = kept.get(d.reason, 0) + 1
    n = sum(d.convert for d in decisions)
    why = ", ".join(f"{c} {r}" for r, c in kept.items())
    return f"fp8 ({recipe}): {n} of {len(decisions)} linear layers converted" + (f"; kept: {why}" if why else "")


def check_supported(device: torch.device) -> None:
    """One line, before any work, where float8 training cannot engage."""
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise ConfigError("train.precision: fp8 needs torchao: pip install -e '.[fp8]'") from None
    if device.type != "cuda":
        raise ConfigError(f"train.precision: fp8 needs a CUDA GPU with float8 tensor cores "
                          f"(compute capability >= 8.9: H100, H200, L4); this run is on {device.type}")
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY:
        raise ConfigError(f"train.precision: fp8 needs compute capability >= 8.9 (H100, H200, L4); "
                          f"{torch.cuda.get_device_name(device)} has {cap[0]}.{cap[1]}")


def convert(model: nn.Module, recipe: str, emulate: bool = False) -> list[Decision]:
    """Swap the planned layers for torchao's Float8Linear; returns the plan. Checks that
    exactly the planned layers were converted (a conversion that did not engage is an error,
    not a silent bf16 run). `emulate`: torchao's CPU emulation (the same float8 casts, fp32
    matmuls), for tests and the throughput bench's CPU run; training never sets it."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear
    decisions = plan(model, recipe)
    chosen = {d.name for d in decisions if d.convert}
    cfg = Float8LinearConfig.from_recipe_name(recipe)
    if emulate:
        cfg = dataclasses.replace(cfg, emulate=True)
    convert_to_float8_training(model, module_filter_fn=lambda m, fqn: fqn in chosen, config=cfg)
    done = {name for name, m in model.named_modules() if isinstance(m, Float8Linear)}
    if done != chosen:
        raise RuntimeError(f"fp8: torchao converted {len(done)} layers, the plan has {len(chosen)}")
    return decisions
