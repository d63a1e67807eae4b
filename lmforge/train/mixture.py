"""Domain mixtures and stage curricula for the pretraining loader.

A mixture gives each domain a share of the training TOKENS:
- `weights`: explicit shares (normalised): the FINAL token shares, nothing multiplies them;
  empty = the data's natural token proportions;
- `repeat`: epochs of a source: with natural proportions (no `weights`), a domain's token
  count is counted `repeat` times, so it is seen `repeat` times per pass over the others
  (Skywork upsamples encyclopedia x5). With `weights` it is refused: multiplying shares that
  are already final silently rescales every other domain (the Skywork recipe once had
  curated at .488 instead of its .16: the header's en/zh/code table no longer held);
- `ramp`: one domain's share moves linearly from `start` to `end` over the stage while
  the others keep their relative weights (Skywork stage 3: domain data 10% -> 40%).

Stages (`StageConfig`) each have a step count, a mixture and an LR schedule (Index-1.9B:
the WSD decay stage shifts toward curated data and adds ~7% instruction data).

The sampler draws a domain per document with probability proportional to
share / mean document length (so that shares hold in tokens, not documents), then the
next document of that domain's own shuffled pass. Its RNG state and each domain's
position are part of the loader state, so a resume continues the same draw.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmforge.config import ConfigError, check
from lmforge.shards import TokenDataset
from lmforge.train.loader import ShuffledDocs
from lmforge.train.schedules import ScheduleConfig


@dataclass
class RampConfig:
    domain: str = ""
    start: float = 0.1
    end: float = 0.4

    def __post_init__(self):
        check(bool(self.domain), "domain", "name the domain whose share ramps")
        check(0 <= self.start <= 1 and 0 <= self.end <= 1, "start", "shares must be in [0, 1]")


@dataclass
class MixtureConfig:
    weights: dict[str, float] = field(default_factory=dict)
    repeat: dict[str, float] = field(default_factory=dict)
    ramp: RampConfig | None = None

    def __post_init__(self):
        for k, v in self.weights.items():
            check(v >= 0, f"weights.{k}", "must be >= 0")
        if self.weights:
            check(sum(self.weights.values()) > 0, "weights", "must sum to a positive number")
        for k, v in self.repeat.items():
            check(v > 0, f"repeat.{k}", "must be > 0")
        check(not (self.weights and self.repeat), "repeat",
              "repeat (epochs of a source) multiplies the data's natural token counts; with explicit "
              "weights the shares are final: write the upsampled share into weights instead")


@dataclass
class StageConfig:
    name: str = ""
    steps: int = 0
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(kind="constant"))

    def __post_init__(self):
        check(self.steps > 0, "steps", "each stage needs steps > 0")
        check(self.schedule.kind != "multistage", "schedule.kind", "a stage's schedule cannot itself be multistage")


def domain_token_counts(ds: TokenDataset) -> dict[str, int]:
    lens = np.concatenate([np.diff(s.starts) for s in ds.shards]) if ds.shards else np.zeros(0)
    counts = np.bincount(ds.doc_domain, weights=lens, minlength=len(ds.domain_names))
    return {name: int(c) for name, c in zip(ds.domain_names, counts)}


def validate(mix: MixtureConfig, counts: dict[str, int], key: str) -> None:
    """One-line errors for a mixture that names unknown or empty domains."""
    named = list(mix.weights) + list(mix.repeat) + ([mix.ramp.domain] if mix.ramp else [])
    for d in named:
        if d not in counts:
            raise ConfigError(f"{key}: unknown domain {d!r} (the data has: {', '.join(sorted(counts))})")
    wanted = mix.weights or counts
    for d, w in wanted.items():
        if w > 0 and counts.get(d, 0) == 0:
            raise ConfigError(f"{key}: domain {d!r} has a positive share but no training tokens")
    if not any(counts.get(d, 0) > 0 and w > 0 for d, w in wanted.items()):
        raise ConfigError(f"{key}: no domain with both a positive share and training tokens")


def shares(mix: MixtureConfig, counts: dict[str, int], progress: float = 0.0) -> dict[str, float]:
    """Token share per domain at `progress` (0..1) through the stage; sums to 1."""
    base = {d: float(mix.weights.get(d, 0.0)) if mix.weights else float(c) for d, c in counts.items()}
    base = {d: w * mix.repeat.get(d, 1.0) for d, w in base.items()}
    total = sum(base.values())
    out = {d: w / total for d, w in base.items()}
    if mix.ramp:
        r = mix.ramp
        target = r.start + (r.end - r.start) * min(max(progress, 0.0), 1.0)
        rest = total - base[r.domain]
        out = {d: (target if d == r.domain else (1 - target) * (w / rest if rest > 0 else 0.0))
               for d, w in base.items()}
    return out


class MixtureSampler:
    """Draws documents so that each domain gets its configured share of tokens."""

    def __init__(self, ds: TokenDataset, seed: int):
        self.ds, self.seed = ds, seed
        self.counts = domain_token_counts(ds)
        self.names = list(ds.domain_names)
        self.by_domain = {}
        self.mean_len = np.ones(len(self.names))
        for d, name in enumerate(self.names):
            ids = np.flatnonzero(ds.doc_domain == d)
            if len(ids):
                self.by_domain[name] = ShuffledDocs(ids, seed * 1000 + d)
                self.mean_len[d] = self.counts[name] / len(ids)
        self.rng = np.random.Generator(np.random.PCG64([seed, 7]))
        self.probs = np.zeros(len(self.names))
        self.set_shares(shares(MixtureConfig(), self.counts))

    def set_shares(self, share: dict[str, float]) -> None:
        p = np.array([share.get(n, 0.0) for n in self.names]) / self.mean_len
        self.probs = p / p.sum()

    def next_doc(self) -> int:
        d = int(self.rng.choice(len(self.names), p=self.probs))
        return self.by_domain[self.names[d]].next_doc()

    def epochs(self) -> dict[str, int]:
        return {n: s.epoch for n, s in self.by_domain.items()}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "domains": {n: s.state_dict() for n, s in self.by_domain.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        for n, s in state["domains"].items():
            self.by_domain[n].load_state_dict(s)


def plan(stages: list[StageConfig], counts: dict[str, int], tokens_per_step: int) -> list[dict]:
    """Per stage: target share, planned tokens and epochs over each domain's data."""
    rows = []
    for st in stages:
        mid = shares(st.mixture, counts, 0.5)  # a linear ramp's mean share is its midpoint
        planned = {d: s * st.steps * tokens_per_step for d, s in mid.items()}
        rows.append({"stage": st.name, "steps": st.steps, "share": mid, "tokens": planned,
                     "epochs": {d: (planned[d] / counts[d] if counts[d] else 0.0) for d in counts}})
    return rows


def format_plan(rows: list[dict]) -> str:
    lines = [f"{'stage':<12}{'domain':<16}{'share':>8}{'tokens':>14}{'epochs':>8}"]
    for r in rows:
        for d, s in r["share"].items():
            if s > 0:
                lines.append(f"{r['stage']:<12}{d:<16}{s:>8.3f}{r['tokens'][d]:>14.0f}{r['epochs'][d]:>8.2f}")
    return "\n".join(lines)
