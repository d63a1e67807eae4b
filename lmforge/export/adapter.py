"""A LoRA checkpoint -> its base model as a Hugging Face folder plus its adapters as a PEFT
adapter folder (`lmforge export CKPT BASE_DIR --adapter ADAPTER_DIR`).

    BASE_DIR/      the usual export (lmforge.export.hf) of the base weights: adapters off, not
                   merged; lmforge_export.json names the adapter folder
    ADAPTER_DIR/   adapter_model.safetensors  base_model.model.<HF module>.lora_A.weight / .lora_B.weight
                   adapter_config.json        peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
                                              lora_dropout, target_modules, ...; base_model_name_or_path
                                              = BASE_DIR (absolute)

so `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE_DIR), ADAPTER_DIR)`
computes the adapted model's logits and its `merge_and_unload()` gives the weights of the
merged export (`lmforge export CKPT OUT`, no --adapter). How the adapters follow the base
export's layout (GLM's q/k row order, Phi-3 / GLM fused projections): lmforge.model.lora_hf.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError
from lmforge.export.hf import DTYPES, export_info
from lmforge.io.atomic import atomic_path, with_default_mode, write_json
from lmforge.model.convert import export_arch
from lmforge.model.load import OURS, open_source
from lmforge.model.lora import attach_lora, is_lora_key
from lmforge.model.lora_hf import base_shapes, check_against_base, hf_adapter, peft_config
from lmforge.model.transformer import Transformer

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
FILES = (WEIGHTS, CONFIG)


def load_adapted(checkpoint: str | Path):
    """(our model with its adapters attached, unmerged; the ModelSource). A checkpoint without
    adapters is refused in one line."""
    src = open_source(checkpoint)
    if src.format != OURS or src.lora is None:
        raise ConfigError(f"{src.path}: no LoRA adapters to export (its run was not trained with `lora:`); "
                         f"export it without --adapter")
    model = attach_lora(Transformer(src.model_cfg), src.lora)
    ckpt.load_weights(src.path, model)
    return model.eval(), src


def base_of(adapted: torch.nn.Module) -> Transformer:
    """A plain Transformer holding the adapted model's base weights (the adapters dropped)."""
    base = Transformer(adapted.cfg)
    base.load_state_dict({k: v for k, v in adapted.state_dict().items() if not is_lora_key(k)})
    return base.eval()


def write_adapter(adapter, cfg, out_dir: str | Path, base_dir: str | Path, dtype: str | None = None) -> Path:
    """adapter_model.safetensors + adapter_config.json (each written to a temp name and renamed)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(DTYPES[dtype]) if dtype else v).contiguous().clone() for k, v in adapter.tensors.items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})   # as peft saves it
        with_default_mode(tmp)   # safetensors creates it 0600
    write_json(out / CONFIG, peft_config(cfg, adapter, str(Path(base_dir).resolve())), indent=2)
    return out


def export_with_adapter(checkpoint, out_dir, adapter_dir, dtype=None, tokenizer=None) -> dict:
    """The base export to out_dir and the PEFT adapter to adapter_dir; returns the base
    export's info plus the adapter's (adapter, r, modules). Refuses before writing anything."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    adapted, src = load_adapted(checkpoint)
    arch = export_arch(src.model_cfg)
    adapter = hf_adapter(adapted, src.lora, arch)
    check_against_base(adapter, base_shapes(src.model_cfg, arch), arch)
    out, adapter_out = Path(out_dir), Path(adapter_dir)
    info = export_info(src.path, out, dtype, tokenizer, model=base_of(adapted))
    write_adapter(adapter, src.lora, adapter_out, out, dtype)
    info.update(weights="base (LoRA adapters off, not merged)", adapter=str(adapter_out.resolve()),
                lora_r=src.lora.r, lora_alpha=src.lora.alpha, target_modules=adapter.target_modules,
                rank_pattern=adapter.rank_pattern, adapter_modules=len(adapter.tensors) // 2)
    write_json(out / "lmforge_export.json", info, indent=2)
    return info
