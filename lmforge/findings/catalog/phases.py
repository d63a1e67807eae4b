"""Helpers of the findings whose arms share a first training phase and differ in a later one
(decaydata, stemramp, alignment) or in their data (dedup): a curriculum stage, a later phase
started from a finished run's checkpoint, and a model's loss on a held-out token set that
every arm is scored on. (The runs themselves: lmforge.findings.context.Ctx.pretrain.)"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from lmforge.findings.catalog.common import domain_batches
from lmforge.model.load import load_checkpoint


def stage(name: str, steps: int, weights: dict[str, float], schedule: dict, ramp: dict | None = None) -> dict:
    """One curriculum stage (lmforge.train.mixture.StageConfig) as a config dict."""
    mix = {"weights": weights, **({"ramp": ramp} if ramp else {})}
    return {"name": name, "steps": steps, "mixture": mix, "schedule": schedule}


def later_phase(run_dir: Path) -> dict:
    """The `init` of a phase that goes on from a finished run: its weights and optimizer state."""
    return {"from_checkpoint": str(run_dir), "load_optimizer": True}


def finished_checkpoint(run_dir: Path, who: str) -> Path:
    """A shared phase's run folder, which later arms start from; a clear error when its weights
    were dropped (an interrupted finding rerun after the last arm that needed them)."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        raise RuntimeError(f"{run_dir}: the {who} weights are gone; delete {run_dir} and its arms' "
                           f"arms/*/seed*.json to rerun them")
    return Path(run_dir)


@torch.no_grad()
def heldout_loss(run_dir, data: str, split: str, seq_len: int, batches: int, batch_size: int = 8) -> dict:
    """Mean loss per token of a run's final checkpoint on each domain of a token set's `split`
    (up to `batches` batches per domain, in order: the same tokens for every arm), and the
    mean over domains ("mean", as the trainer's val/mean)."""
    model, _ = load_checkpoint(run_dir)
    sums: dict[str, list[float]] = {}
    for domain, batch in domain_batches(data, split, seq_len, batches, batch_size):
        loss_sum, _ = model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"],
                            labels=batch["labels"])
        acc = sums.setdefault(domain, [0.0, 0])
        acc[0], acc[1] = acc[0] + float(loss_sum), acc[1] + int((batch["labels"] != -100).sum())
    out = {domain: total / n for domain, (total, n) in sums.items() if n}
    out["mean"] = sum(out.values()) / len(out) if out else math.nan
    return out
