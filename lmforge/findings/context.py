"""What a finding's arms run on: the scale (model shape, length, batch, step budget), the
token data, and helpers that run the existing stages (pretraining here) into an arm's work
folder. Every arm of a finding gets the same settings except what the arm varies."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge import config
from lmforge.config import ConfigError
from lmforge.shards import TokenDataset
from lmforge.stages import pretrain


@dataclass(frozen=True)
class Scale:
    name: str
    model: dict
    seq_len: int
    micro_batch_size: int
    steps: int          # a pretraining arm's budget (a finding may use multiples of it)
    lr: float
    device: str
    eval_batches: int


SCALES = {
    # 1.6M parameters (0.5M in the 4096-row embedding, tied head): ~200 steps of 1024 tokens in
    # about half a minute on 2 CPU cores.
    "toy": Scale("toy", dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=352, tie_embeddings=True),
                 seq_len=128, micro_batch_size=8, steps=200, lr=3e-3, device="cpu", eval_batches=8),
    # the same comparisons at 125M on a GPU (not run on CPU: hours per arm)
    "small-125m": Scale("small-125m", dict(preset="small-125m"), seq_len=1024, micro_batch_size=16, steps=2000,
                        lr=1e-3, device="auto", eval_batches=16),
}


def pad64(n: int) -> int:
    return (n + 63) // 64 * 64


class Ctx:
    """One finding's run: its config (seeds, scale, data), its out folder and the stage runners."""

    def __init__(self, cfg, out: Path):
        self.cfg, self.out = cfg, out
        self.scale = SCALES[cfg.scale]
        self.steps = cfg.steps or self.scale.steps
        self._vocab = None

    def vocab(self) -> int:
        if self._vocab is None:
            try:
                self._vocab = pad64(TokenDataset(self.cfg.data, "train").vocab_size)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"data: {e}") from None
        return self._vocab

    def work(self, *parts) -> Path:
        return self.out.joinpath("work", *[str(p) for p in parts])

    def drop(self, run_dir: Path) -> None:
        """Drop a recorded arm's weights (tens of MB per run) unless keep_checkpoints."""
        if not self.cfg.keep_checkpoints:
            drop_checkpoints(run_dir)

    def model(self, **over) -> dict:
        m = {**self.scale.model, "vocab_size": self.vocab(), "max_seq_len": self.scale.seq_len}
        m.update(over)
        return m

    def train(self, seed: int, steps: int | None = None, **over) -> dict:
        steps = steps or self.steps
        t = {"steps": steps, "seq_len": self.scale.seq_len, "micro_batch_size": self.scale.micro_batch_size,
             "seed": seed, "device": self.scale.device, "optim": {"lr": self.scale.lr},
             "schedule": {"kind": "cosine", "warmup_steps": max(1, steps // 10), "min_ratio": 0.1},
             "eval_batches": self.scale.eval_batches, "ckpt_every": steps, "keep_last": 1,
             "log_every": max(1, steps // 10)}
        if (over.get("schedule") or {}).get("kind") == "multistage":   # replaces the default, not merged
            t.pop("schedule")
        return config.deep_merge(t, over)

    def pretrain(self, out: Path, seed: int, model: dict | None = None, train: dict | None = None,
                 data: str | None = None, **top) -> dict:
        """Run the pretrain stage (resumable, skipped when finished) and return its summary.

        `top`: the stage's other keys. With `stages` (curriculum stages, each its own mixture
        and LR schedule) the run's steps are their total and the default schedule is left out;
        with `init` no model shape is given (the checkpoint's)."""
        train = dict(train or {})
        stages = top.get("stages")
        if stages:
            train.setdefault("steps", sum(s["steps"] for s in stages))
        t = self.train(seed, **train)
        if stages:
            t.pop("schedule")          # each stage carries its schedule
            t.pop("steps")             # ... and the run is their total
        spec = {"data": data or self.cfg.data, "out_dir": str(out), "train": t, **top}
        if model is not None or "init" not in top:
            spec["model"] = self.model(**(model or {}))
        cfg = config.from_dict(pretrain.PretrainConfig, spec, source=f"findings {self.cfg.name}")
        return pretrain.run(cfg, progress=False)


def metrics_of(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curve(run_dir: Path, key: str = "loss", offset: int = 0, points: int = 50) -> list[list[float]]:
    """[step, value] of `key` in a run's metrics.jsonl, as means over blocks of consecutive steps
    (about `points` blocks): per-step train loss swings with each batch's domain mix, block means
    show the trend without hiding a spike longer than a block."""
    rows = [(r["step"] + offset, r[key]) for r in metrics_of(run_dir) if key in r and r[key] is not None]
    if len(rows) <= points:
        return [[float(s), float(v)] for s, v in rows]
    edges = np.linspace(0, len(rows), points + 1).astype(int)
    return [[float(rows[b - 1][0]), float(np.mean([v for _, v in rows[a:b]]))] for a, b in zip(edges[:-1], edges[1:])]


def drop_checkpoints(run_dir: Path) -> None:
    """An arm's weights are not needed once its numbers are recorded (tens of MB per run)."""
    shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
