"""What the long-context findings (ropebase, longfails) share, in Index-1.9B-32K's order: a
short-context base model trained once per seed at the scale's length, continued pretraining
of it at LONG x that length (the longctx stage), and held-out loss by context length measured
as the longstudy stage measures it (lmforge.eval.context_ppl: one causal window per sequence
of L + 1 held-out tokens)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from lmforge import checkpoint as ckpt
from lmforge import config
from lmforge.config import ConfigError
from lmforge.device import resolve_device
from lmforge.model.config import ModelConfig
from lmforge.shards import TokenDataset
from lmforge.stages import longctx

LONG = 4               # the long length, in multiples of the scale's (toy: 128 -> 512; Index-32K: 4096 -> 32768)
LONG_STEPS = 0.25      # the long stage's steps, as a fraction of a pretraining arm's (Index: 10B of 2.8T tokens)
LONG_LR = 1 / 3        # its peak LR, as a fraction of the scale's (Index: 1e-5, far below pretraining's)
MAX_SEQS, MIN_DOCS = 8, 4   # held-out sequences per length (documents that long, else concatenated)

# Index-1.9B: head dim 128, RoPE base 10000, extended to 32768 positions. What decides whether a
# base "reaches" a length is the slowest rotary wavelength against it (2 pi theta^((d-2)/d));
# the base model here gets the base whose wavelength has Index's ratio to the long length.
INDEX_THETA, INDEX_HEAD_DIM, INDEX_LONG = 10000.0, 128, 32768


def index_ratio() -> float:
    return 2 * math.pi * INDEX_THETA ** ((INDEX_HEAD_DIM - 2) / INDEX_HEAD_DIM) / INDEX_LONG


def short_theta(ctx) -> float:
    """The base model's RoPE base: its slowest wavelength is index_ratio() x the long length."""
    d = ModelConfig(**ctx.model()).rotary_dim
    return round((index_ratio() * long_len(ctx) / (2 * math.pi)) ** (d / (d - 2)), 1)


def long_len(ctx) -> int:
    return ctx.scale.seq_len * LONG


def long_steps(ctx) -> int:
    return max(2, round(ctx.steps * LONG_STEPS))


def base_model(ctx, seed: int) -> Path:
    """The short-context model every arm of this seed starts from (trained once, then reused)."""
    out = ctx.work("base", f"seed{seed}")
    if (out / "DONE.json").exists() and ckpt.latest(out / "checkpoints") is None:
        shutil.rmtree(out)      # finished but its weights were dropped: train it again (same seed, same model)
    ctx.pretrain(out, seed, model={"rope_theta": short_theta(ctx)})
    return out


def drop_base(ctx, seed: int) -> None:
    """After the finding's last arm of a seed (arms run arm-major: no later arm needs it)."""
    ctx.drop(ctx.work("base", f"seed{seed}"))


def long_train(ctx, out: Path, seed: int, src: Path, rope_theta: float, **over) -> dict:
    """The longctx stage from `src` at LONG x the length, a new RoPE base, the same tokens per step."""
    steps, L = long_steps(ctx), long_len(ctx)
    rows = max(1, ctx.scale.micro_batch_size * ctx.scale.seq_len // L)
    train = ctx.train(seed, steps=steps, seq_len=L, micro_batch_size=rows, optim={"lr": ctx.scale.lr * LONG_LR},
                      schedule={"kind": "cosine", "warmup_steps": max(1, steps // 10), "min_ratio": 0.1})
    spec = {"data": ctx.cfg.data, "out_dir": str(out), "init": {"from_checkpoint": str(src)},
            "model": {"rope_theta": float(rope_theta), "max_seq_len": L}, "train": train, **over}
    cfg = config.from_dict(longctx.LongCtxConfig, spec, source=f"findings {ctx.cfg.name}")
    return longctx.run(cfg, progress=False)


_SEQUENCES: dict = {}


def sequences(data: str, length: int) -> list:
    key = (str(data), length)
    if key not in _SEQUENCES:
        from lmforge.eval.context_ppl import long_sequences
        try:
            val = TokenDataset(data, "val")
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data: {e}") from None
        _SEQUENCES[key] = long_sequences(val, length, MAX_SEQS, MIN_DOCS)[0]
    return _SEQUENCES[key]


def context_losses(ctx, run_dir: Path, lengths: list[int], rope: str = "naive", factor: float = 8.0) -> dict[int, float]:
    """Held-out loss (nats / token) at each length of the run's latest checkpoint, its RoPE run as
    longstudy runs a setting: `naive` (plain RoPE as trained, extrapolated past its length),
    `dynamic` (Dynamic NTK by `factor`) or `linear`."""
    from lmforge.eval.context_ppl import ppl_at_length
    from lmforge.stages.longstudy import StudySetting, load_model, prepare

    p = prepare(StudySetting(name=rope, checkpoint=str(run_dir), rope=rope, factor=factor), "checkpoint")
    device = resolve_device(ctx.scale.device)
    model = load_model(p, device)
    out = {}
    for L in lengths:
        r = ppl_at_length(model, sequences(ctx.cfg.data, L), device)
        if r["loss"] is None:
            raise ConfigError(f"data: {ctx.cfg.data} has no held-out text for {L}-token sequences")
        out[L] = r["loss"]
    return out
