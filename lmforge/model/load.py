"""Load a trained model from any stage's checkpoint.

Every training stage saves `trainer.json` with the run config, whose `model` key is the
ModelConfig, and keeps a copy of the tokenizer folder as `RUN_DIR/tokenizer/`, so a
checkpoint is self-contained: `load_checkpoint(path)` needs nothing else. The folder
format itself (finding, validating, reading) is lmforge.checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lmforge import checkpoint as ckpt
from lmforge.config import from_dict, to_dict
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer

# the format's helpers, re-exported where model loading is what the caller thinks about
resolve_checkpoint = ckpt.resolve
tokenizer_dir_of = ckpt.tokenizer_dir_of
copy_tokenizer = ckpt.copy_tokenizer
run_dir_of = ckpt.run_dir_of


def model_config_of(step_dir: Path) -> ModelConfig:
    state = ckpt.load_trainer_state(step_dir)
    model = state.get("config", {}).get("model")
    if model is None:
        raise ValueError(f"{step_dir}/trainer.json: no model config recorded")
    model = {k: v for k, v in model.items() if k != "preset"}  # already expanded
    return from_dict(ModelConfig, model, source=f"{step_dir}/trainer.json", prefix="config.model")


def config_diff(given: ModelConfig, saved: ModelConfig) -> list[str]:
    """`key given (checkpoint: saved)` for every field that differs (preset aside: expanded)."""
    a, b = to_dict(given), to_dict(saved)
    return [f"{k} {a[k]!r} (checkpoint: {b.get(k)!r})" for k in sorted(a) if k != "preset" and a[k] != b.get(k)]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, Path]:
    """(model in eval mode with the checkpoint's weights, the step folder it came from)."""
    step_dir = resolve_checkpoint(path)
    model = Transformer(model_config_of(step_dir)).to(device)
    ckpt.load_weights(step_dir, model)
    return model.eval(), step_dir
