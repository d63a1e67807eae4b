"""Writing a training checkpoint (the format itself is lmforge.checkpoint).

Under torchrun every rank takes part: each writes its DCP shards (model + optimizer,
reshardable to any world size), rank 0 also the full safetensors weights and the rest.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file, save_model

from lmforge import checkpoint as fmt
from lmforge.io.atomic import write_failure
from lmforge.train import distributed


def save(ckpt_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         trainer_state: dict, dist_info=None) -> Path:
    """Write step-N atomically. Under torchrun every rank calls this: each writes its DCP
    shards (model + optimizer, reshardable), rank 0 also the full safetensors and the rest."""
    ckpt_dir = Path(ckpt_dir)
    main = dist_info is None or dist_info.is_main
    tmp = ckpt_dir / f".tmp-step-{step}"
    try:
        return _write(tmp, step, model, optimizer, trainer_state, dist_info, main)
    except BaseException as e:
        # a full disk or a kill signal: leave no half-written .tmp-step-N behind (the previous
        # complete checkpoint is untouched); the error itself goes on to the CLI boundary,
        # naming the folder being written (a full disk's ENOSPC names no file)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        named = write_failure(e, tmp)
        if named is not e:
            raise named from e
        raise


def _write(tmp: Path, step: int, model, optimizer, trainer_state: dict, dist_info, main: bool) -> Path:
    ckpt_dir, final = tmp.parent, tmp.parent / f"step-{step}"
    if main:
        fmt.temp_dir(ckpt_dir, step)
    if dist_info is not None and dist_info.enabled:
        distributed.barrier(dist_info)
        distributed.save_sharded(tmp / "dcp", model, optimizer)
        full = distributed.full_model_state(model)  # collective: every rank takes part
        if main:
            if getattr(getattr(model, "cfg", None), "tie_embeddings", False):
                full.pop("lm_head.weight", None)  # stored once, as save_model does
            save_file({k: v.contiguous() for k, v in full.items()}, str(tmp / "model.safetensors"))
    else:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) weights
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if main:
        final = fmt.commit(tmp, step, trainer_state)
    if dist_info is not None:
        distributed.barrier(dist_info)
    return final
