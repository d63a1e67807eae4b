"""A LoRA model's adapters as PEFT stores them for the Hugging Face export of its base
(what `lmforge export CKPT BASE_DIR --adapter DIR` writes; lmforge.export.adapter).

PEFT keys an adapter by the HF module it adapts:
`base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r], scale
lora_alpha / r, so that peft's merge gives W_hf + scale * B A. For that to be our merged
export, the adapters follow every change convert.to_hf_state_dict makes to the weights:

- names: `layers.i.X` -> `model.layers.i.X` (peft then prefixes `base_model.model.`).
- GLM's interleaved rotary permutes the q/k output rows of each head, so B's rows of
  q_proj and k_proj are permuted the same way. A is untouched: its input, the hidden
  state, is not permuted.
- fused projections (Phi-3 qkv_proj and gate_up_proj, GLM gate_up_proj): the fused weight
  stacks the parts' rows, so its update must stack the parts' updates B_p A_p. One LoRA of
  rank k r does that exactly: A = [A_1; ...; A_k] and B block-diagonal (B_p in its part's
  rows and its own r columns; an untargeted part's rows stay zero). PEFT carries the
  larger rank in `rank_pattern` and keeps the scale with `alpha_pattern` = k alpha, so
  (k alpha) / (k r) = alpha / r; a reader that ignores both patterns (vLLM's PEFTHelper
  takes one alpha / r for every module and the rank from the tensors) gets the same scale.

Every adapted module and shape is checked against the base export's own state dict, so a
layout this mapping does not know is refused in one line instead of written wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.config import ConfigError
from lmforge.model import hf_archs
from lmforge.model.config import ModelConfig
from lmforge.model.convert import _glm_rotary_perm, _permute_heads, to_hf_state_dict
from lmforge.model.lora import TARGETS, LoRAConfig, lora_layers
from lmforge.model.transformer import Transformer

PREFIX = "base_model.model."
# fused HF module -> (the block it sits in, the parts it stacks, in row order)
FUSED = {"qkv_proj": ("self_attn", ("q_proj", "k_proj", "v_proj")),
         "gate_up_proj": ("mlp", ("gate_proj", "up_proj"))}


@dataclass
class HFAdapter:
    """The adapter under HF module names: what adapter_model.safetensors and the rank keys
    of adapter_config.json hold."""
    tensors: dict[str, torch.Tensor]      # PEFT keys -> contiguous tensors
    target_modules: list[str]             # HF leaf names (qkv_proj for Phi-3, ...)
    rank_pattern: dict[str, int]          # fused module -> k r (only where k > 1)
    alpha_pattern: dict[str, float]       # fused module -> k alpha (scale stays alpha / r)


def fused_modules(arch: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The fused projections of an export architecture (hf_archs.Arch flags)."""
    spec = hf_archs.ARCHS[arch]
    return {name: FUSED[name] for name, on in (("qkv_proj", spec.fused_qkv), ("gate_up_proj", spec.fused_gate_up))
            if on}


def hf_target_modules(cfg: LoRAConfig, arch: str) -> list[str]:
    """cfg.target_modules as the architecture's HF leaf names, in the block's order."""
    part_of = {part: name for name, (_, parts) in fused_modules(arch).items() for part in parts}
    return list(dict.fromkeys(part_of.get(t, t) for t in TARGETS if t in cfg.target_modules))


def _stack(parts: list[tuple[int, tuple[torch.Tensor, torch.Tensor] | None]], r: int):
    """One (A, B) whose B A stacks each part's B_p A_p (zero rows for a part with no adapter).
    parts: (the part's output rows, its (A, B) or None), in the fused weight's row order."""
    adapted = [ab for _, ab in parts if ab is not None]
    A = torch.cat([a for a, _ in adapted], dim=0)
    B = adapted[0][1].new_zeros(sum(rows for rows, _ in parts), r * len(adapted))
    row = col = 0
    for rows, ab in parts:
        if ab is not None:
            B[row:row + rows, col:col + r] = ab[1]
            col += r
        row += rows
    return A, B


def hf_adapter(model: torch.nn.Module, cfg: LoRAConfig, arch: str) -> HFAdapter:
    """The adapters of `model` (attach_lora'd with cfg) in PEFT's layout for `arch`'s export."""
    mcfg = model.cfg
    spec = hf_archs.ARCHS[arch]
    ab = {name: (m.lora_A.detach(), m.lora_B.detach()) for name, m in lora_layers(model)}
    if spec.interleaved_rotary:
        perm = _glm_rotary_perm(mcfg)
        for name, (a, b) in ab.items():
            if name.endswith(("self_attn.q_proj", "self_attn.k_proj")):
                ab[name] = (a, _permute_heads(b, perm, mcfg.head_dim))
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rank_pattern, alpha_pattern = {}, {}
    fused = fused_modules(arch)
    for i in range(mcfg.n_layers):
        for fname, (block, parts) in fused.items():
            names = [f"layers.{i}.{block}.{p}" for p in parts]
            if not any(n in ab for n in names):
                continue
            rows = [model.get_submodule(n).out_features for n in names]
            a, b = _stack([(o, ab.pop(n, None)) for o, n in zip(rows, names)], cfg.r)
            modules[f"layers.{i}.{block}.{fname}"] = (a, b)
            k = a.shape[0] // cfg.r
            if k > 1:
                rank_pattern[fname], alpha_pattern[fname] = k * cfg.r, _number(k * cfg.alpha)
    modules.update(ab)
    tensors = {}
    for name, (a, b) in modules.items():
        tensors[f"{PREFIX}model.{name}.lora_A.weight"] = a.contiguous()
        tensors[f"{PREFIX}model.{name}.lora_B.weight"] = b.contiguous()
    return HFAdapter(tensors, hf_target_modules(cfg, arch), rank_pattern, alpha_pattern)


def check_against_base(adapter: HFAdapter, base_shapes: dict[str, torch.Size], arch: str) -> None:
    """Every adapted module is a weight of the base export (HF key -> shape), with matching
    shapes; ConfigError (a ValueError) in one line otherwise: the CLI boundary prints it."""
    for key, t in adapter.tensors.items():
        module, _, kind = key.removeprefix(PREFIX).rpartition(".lora_")
        shape = base_shapes.get(f"{module}.weight")
        what = f"{hf_archs.ARCHS[arch].class_name} cannot carry the adapter on {module}"
        if shape is None:
            raise ConfigError(f"{what}: its base export has no such weight")
        dim, want = (1, shape[1]) if kind == "A.weight" else (0, shape[0])
        if t.shape[dim] != want:
            raise ConfigError(f"{what}: lora_{kind} has shape {tuple(t.shape)}, the weight {tuple(shape)}")


def base_shapes(cfg: ModelConfig, arch: str) -> dict[str, torch.Size]:
    """The base export's HF keys and shapes for a ModelConfig, computed on the meta device (no memory)."""
    with torch.device("meta"):
        shell = Transformer(cfg)
    return {k: v.shape for k, v in to_hf_state_dict(shell, arch=arch).items()}


def _number(x: float) -> int | float:
    """An integral float as int (peft and vLLM type lora_alpha as int)."""
    return int(x) if float(x).is_integer() else float(x)


def peft_config(cfg: LoRAConfig, adapter: HFAdapter, base: str | None) -> dict:
    """adapter_config.json: the LoraConfig keys peft has written since 0.9 (newer peft fills the
    rest with its defaults; older peft refuses keys it does not know, so none are added)."""
    return {
        "alpha_pattern": adapter.alpha_pattern,
        "auto_mapping": None,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": _number(cfg.alpha),
        "lora_dropout": cfg.dropout,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": cfg.r,
        "rank_pattern": adapter.rank_pattern,
        "revision": None,
        "target_modules": adapter.target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }
