"""Learning-rate schedules: pure functions of the step.

All schedules are `lr_at(cfg, step, total_steps, peak_lr) -> lr`, with no state, so a
resumed run recomputes exactly the LR it would have had.

- constant: warmup, then peak.
- linear / cosine: warmup, then from peak down to `min_ratio * peak` at the last step.
- wsd (warmup-stable-decay, Index-1.9B): warmup, a flat stable phase, then a decay over
  the last `decay_fraction` of the steps down to `min_ratio * peak`, with a linear,
  cosine or "1-sqrt" shape (Hägele et al. 2024: lr = peak * (1 - (1-m) * sqrt(t))).
- multistage: a list of stages, each with its own kind, step count and peak LR (e.g.
  Skywork: cosine 6e-4 -> 6e-5, then constant 6e-5). The step restarts at 0 in each
  stage; a stage without `lr` uses the run's peak LR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lmforge.config import check


@dataclass
class ScheduleConfig:
    kind: Literal["constant", "linear", "cosine", "wsd", "multistage"] = "cosine"
    warmup_steps: int = 0
    min_ratio: float = 0.1          # final LR as a fraction of the peak
    decay_fraction: float = 0.2     # wsd: share of the steps spent decaying
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"
    steps: int | None = None        # length of this stage inside a multistage schedule
    lr: float | None = None         # peak LR of this stage (multistage); None = the run's LR
    stages: list[ScheduleConfig] = field(default_factory=list)

    def __post_init__(self):
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0.0 <= self.min_ratio <= 1.0, "min_ratio", "must be in [0, 1]")
        check(0.0 <= self.decay_fraction <= 1.0, "decay_fraction", "must be in [0, 1]")
        check(self.lr is None or self.lr >= 0, "lr", "must be >= 0")
        if self.kind == "multistage":
            check(len(self.stages) > 0, "stages", "multistage needs at least one stage")
            for i, s in enumerate(self.stages):
                check(s.steps is not None and s.steps > 0, f"stages[{i}].steps", "each stage needs steps > 0")
                check(s.kind != "multistage", f"stages[{i}].kind", "stages cannot nest")
        else:
            check(not self.stages, "stages", f"only a multistage schedule has stages (kind is {self.kind})")

    def total_steps(self, default: int) -> int:
        if self.kind == "multistage":
            return sum(s.steps for s in self.stages)
        return self.steps or default


def _decay(shape: str, t: float, min_ratio: float) -> float:
    """Factor at decay progress t in [0, 1]: 1 at t=0, min_ratio at t=1."""
    t = min(max(t, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - (1.0 - min_ratio) * t
    if shape == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    if shape == "1-sqrt":
        return 1.0 - (1.0 - min_ratio) * math.sqrt(t)
    raise ValueError(f"unknown decay shape {shape!r}")


def _factor(cfg: ScheduleConfig, step: int, total: int) -> float:
    """Multiplier of the peak LR for a single (non-multistage) schedule."""
    w = cfg.warmup_steps
    if w > 0 and step < w:
        return (step + 1) / w  # step 0 trains at peak/w, not at zero
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind in ("linear", "cosine"):
        span = max(total - w - 1, 1)
        return _decay(cfg.kind, (step - w) / span, cfg.min_ratio)
    if cfg.kind == "wsd":
        n_decay = round(cfg.decay_fraction * total)
        decay_start = total - n_decay
        if step < decay_start or n_decay == 0:
            return 1.0
        return _decay(cfg.decay_shape, (step - decay_start + 1) / n_decay, cfg.min_ratio)
    raise ValueError(f"unknown schedule kind {cfg.kind!r}")


def stage_at(cfg: ScheduleConfig, step: int) -> tuple[int, int]:
    """(stage index, step inside the stage) for a multistage schedule; past the end: last stage."""
    start = 0
    for i, s in enumerate(cfg.stages):
        if step < start + s.steps or i == len(cfg.stages) - 1:
            return i, step - start
        start += s.steps
    raise AssertionError("unreachable")


def lr_at(cfg: ScheduleConfig, step: int, total_steps: int, peak_lr: float) -> float:
    if cfg.kind == "multistage":
        i, local = stage_at(cfg, step)
        stage = cfg.stages[i]
        return lr_at(stage, min(local, stage.steps - 1), stage.steps,
                     stage.lr if stage.lr is not None else peak_lr)
    peak = cfg.lr if cfg.lr is not None else peak_lr
    return peak * _factor(cfg, step, total_steps)
