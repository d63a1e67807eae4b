"""Finding 7 (Yi): depth up-scaling by duplicating the block of layers whose input and output are
most alike, against duplicating another block and against the grown depth trained from
scratch, at equal extra tokens."""
from __future__ import annotations

import json
import random
import shutil

from lmforge import checkpoint as ckpt
from lmforge import config
from lmforge.findings.catalog.common import final_train_loss, train_losses
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding
from lmforge.stages import grow

ADD = 0.5          # layers added, as a fraction of the base model's (Yi-9B: 16 onto 32)
EXTRA = 0.5        # the continued training's steps, as a fraction of a pretraining arm's (equal in every arm)
CALIB_TOKENS = 8192


def base_model(ctx, seed: int):
    """The model to grow: trained once per seed, shared by the arms."""
    out = ctx.work("base", f"seed{seed}")
    if (out / "DONE.json").exists() and ckpt.latest(out / "checkpoints") is None:
        shutil.rmtree(out)      # finished but its weights were dropped: train it again (same seed, same model)
    ctx.pretrain(out, seed)
    return out


def grown(ctx, seed: int, src, out, block: list[int] | None) -> dict:
    """The grow stage: layer similarity on held-out text, then the block duplicated (the most
    similar one when `block` is None)."""
    n = ctx.model()["n_layers"]
    spec = {"init": {"from_checkpoint": str(src)}, "data": ctx.cfg.data, "out_dir": str(out),
            "add_layers": max(1, round(n * ADD)), "calib_tokens": CALIB_TOKENS, "seq_len": ctx.scale.seq_len,
            "device": ctx.scale.device}
    if block is not None:
        spec["block"] = block
    cfg = config.from_dict(grow.GrowConfig, spec, source=f"findings {ctx.cfg.name}")
    grow.run(cfg, progress=False)
    return json.loads((out / "grow.json").read_text())


def other_block(info: dict, seed: int) -> list[int]:
    """A block of the same size drawn at random (by the seed) among those that are NOT the most similar."""
    size = info["n_layers_after"] - info["n_layers_before"]
    starts = [s for s in range(info["n_layers_before"] - size + 1) if s != info["best_block"][0]]
    start = random.Random(seed).choice(starts)
    return [start, start + size]


def run(ctx, arm: str, seed: int) -> dict:
    extra = max(2, round(ctx.steps * EXTRA))
    out = ctx.work(arm, f"seed{seed}")
    base = base_model(ctx, seed)
    n = ctx.model()["n_layers"]
    notes = {}
    if arm == "scratch":
        summary = ctx.pretrain(out / "train", seed, model={"n_layers": n + max(1, round(n * ADD))},
                               train={"steps": extra})
    else:
        similar = grown(ctx, seed, base, ctx.work("similar", f"seed{seed}", "grow"), None)
        info = similar if arm == "similar" else grown(ctx, seed, base, out / "grow", other_block(similar, seed))
        summary = ctx.pretrain(out / "train", seed, init={"from_checkpoint": str(out / "grow")},
                               train={"steps": extra})
        notes = {"block": info["block"], "block_rank_by_similarity": info["rank"]}
    if arm == FINDING.arms[-1]:
        ctx.drop(base)
    for d in (out / "grow", out / "train"):
        ctx.drop(d)
    losses = train_losses(out / "train")
    return {"metrics": {"val_loss": summary["val/mean"], "final_train_loss": final_train_loss(out / "train"),
                        "first_train_loss": losses[0]},
            "curves": {"train loss after growth (nats / token)": curve(out / "train", "loss"),
                       "validation loss (nats / token)": curve(out / "train", "val/mean")},
            "notes": notes}


FINDING = Finding(
    name="growth", source="Yi technical report, section 7.3 (depth up-scaling, Yi-9B)",
    claim="duplicating the block of layers whose input and output are most similar (cosine) and continuing "
          "to train recovers the loss faster than duplicating another block, and far faster than training "
          "the grown depth from scratch, at equal extra tokens",
    metric="validation loss after the continued training (nats / token)", key="val_loss", higher_is_better=False,
    baseline="similar", expect={"random": "worse", "scratch": "worse"}, run=run,
    secondary=("final_train_loss", "first_train_loss"), curve_label="train loss after growth (nats / token)",
    scale_note="4 -> 6 layers (Yi-9B: 32 -> 48), blocks of 2 layers: 3 candidates, so 'another block' is one "
               "of 2; 1.6M parameters, the base trained for one pretraining arm's steps",
    deviations=f"the added block is {ADD:.0%} of the layers (Yi: 16 of 32, the same half); the continued "
               f"training is {EXTRA:.0%} of a pretraining arm's steps for every arm (a fresh cosine schedule at "
               "the scale's peak LR; Yi's 800B extra tokens are not scaled down in proportion); the 'random' "
               "arm draws its block by the seed among the blocks that are not the most similar one (a draw "
               "that could hit the chosen block would make the arms identical for that seed); similarity "
               f"is measured on {CALIB_TOKENS} held-out tokens; chosen before the run")
