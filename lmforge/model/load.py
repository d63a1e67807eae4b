"""Load a trained model (and find its tokenizer) from any stage's checkpoint.

Every training stage saves `trainer.json` with the run config, whose `model` key is the
ModelConfig, and keeps a copy of the tokenizer folder as `RUN_DIR/tokenizer/`, so a
checkpoint is self-contained: `load_checkpoint(path)` needs nothing else.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lmforge.config import from_dict
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.train import checkpoint as ckpt


def resolve_checkpoint(path: str | Path) -> Path:
    """A step-N folder as given, or the newest complete checkpoint under a run folder."""
    p = Path(path)
    if ckpt.is_complete(p):
        return p
    for cand in (p / "checkpoints", p):
        found = ckpt.latest(cand)
        if found:
            return found
    raise FileNotFoundError(f"{path}: no complete checkpoint found (a step-N folder with meta.json, "
                            f"or a run folder holding checkpoints/)")


def run_dir_of(step_dir: Path) -> Path:
    return step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir.parent


def model_config_of(step_dir: Path) -> ModelConfig:
    state = json.loads((step_dir / "trainer.json").read_text())
    model = state.get("config", {}).get("model")
    if model is None:
        raise ValueError(f"{step_dir}/trainer.json: no model config recorded")
    model = {k: v for k, v in model.items() if k != "preset"}  # already expanded
    return from_dict(ModelConfig, model, source=f"{step_dir}/trainer.json", prefix="config.model")


def tokenizer_dir_of(step_dir: Path) -> Path | None:
    d = run_dir_of(step_dir) / "tokenizer"
    return d if (d / "tokenizer.json").is_file() else None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, Path]:
    """(model in eval mode with the checkpoint's weights, the step folder it came from)."""
    step_dir = resolve_checkpoint(path)
    model = Transformer(model_config_of(step_dir)).to(device)
    ckpt.load_weights(step_dir, model)
    return model.eval(), step_dir


def copy_tokenizer(src_dir: str | Path | None, run_dir: str | Path) -> Path | None:
    """Keep a copy of the tokenizer folder beside the run's checkpoints (idempotent)."""
    if not src_dir or not (Path(src_dir) / "tokenizer.json").is_file():
        return None
    dst = Path(run_dir) / "tokenizer"
    if Path(src_dir).resolve() != dst.resolve():
        dst.mkdir(parents=True, exist_ok=True)
        for f in Path(src_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, dst / f.name)
    return dst
