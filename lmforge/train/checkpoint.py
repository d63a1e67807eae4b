"""Checkpoints that survive kill -9 and load without executing code.

    checkpoints/step-N/
        model.safetensors   weights (safetensors: no pickle)
        optimizer.pt        optimizer state, loaded with torch.load(weights_only=True)
        rng.pt              torch (CPU, CUDA) RNG states, weights_only-loadable tensors
        trainer.json        step, counters, objective/loader position, data fingerprint, RNG of
                            numpy and python, the run config
        meta.json           written LAST: file sizes; its presence marks the folder complete

The folder is written as `.tmp-step-N` and renamed, so a crash leaves either no folder
or a complete one; a folder without a valid meta.json (or with a file whose size does
not match) is skipped by `latest()`.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_file, save_model

_STEP = re.compile(r"^step-(\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def rng_state() -> tuple[dict, dict]:
    """(tensors for rng.pt, JSON-able dict for trainer.json)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    np_state = np.random.get_state()
    py_state = random.getstate()
    plain = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, plain


def set_rng_state(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    n = plain["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save(ckpt_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         trainer_state: dict, dist_info=None) -> Path:
    """Write step-N atomically. Under torchrun every rank calls this: each writes its DCP
    shards (model + optimizer, reshardable), rank 0 also the full safetensors and the rest."""
    from lmforge.train import distributed

    ckpt_dir = Path(ckpt_dir)
    main = dist_info is None or dist_info.is_main
    final, tmp = ckpt_dir / f"step-{step}", ckpt_dir / f".tmp-step-{step}"
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
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
        tensors, plain = rng_state()
        torch.save(tensors, tmp / "rng.pt")
        (tmp / "trainer.json").write_text(json.dumps({**trainer_state, "step": step, "rng": plain}))
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        for p in tmp.rglob("*"):  # data on disk before the marker says it is
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        (tmp / "meta.json").write_text(json.dumps({"step": step, "complete": True, "files": sizes}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
    if dist_info is not None:
        distributed.barrier(dist_info)
    return final


def is_complete(path: Path) -> bool:
    meta = Path(path) / "meta.json"
    try:
        info = json.loads(meta.read_text())
        return bool(info.get("complete")) and all(
            (Path(path) / name).stat().st_size == size for name, size in info["files"].items())
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def list_complete(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest(ckpt_dir: Path) -> Path | None:
    done = list_complete(ckpt_dir)
    return done[-1] if done else None


def prune(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and stale temp folders."""
    ckpt_dir = Path(ckpt_dir)
    done = list_complete(ckpt_dir)
    for p in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_dir.glob(".tmp-step-*"):
        shutil.rmtree(p, ignore_errors=True)


def load_trainer_state(path: Path) -> dict:
    return json.loads((Path(path) / "trainer.json").read_text())


def load_weights(path: Path, model: torch.nn.Module, strict: bool = True) -> None:
    missing, unexpected = load_model(model, str(Path(path) / "model.safetensors"), strict=strict,
                                     device=str(next(model.parameters()).device))
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: weights do not match the model (missing {missing}, unexpected {unexpected})")


def is_sharded(path: Path) -> bool:
    return (Path(path) / "dcp").is_dir()


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    f = Path(path) / "optimizer.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: checkpoint has no optimizer state")
    state = torch.load(f, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state)


def load_rng(path: Path, plain: dict) -> None:
    tensors = torch.load(Path(path) / "rng.pt", map_location="cpu", weights_only=True)
    set_rng_state(tensors, plain)
