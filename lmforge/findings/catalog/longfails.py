"""Finding 6 (Index-1.9B-32K's failed experiments): context-length warmup, and packing vs one
document per row, in the long continued pretraining. The report found neither helped (<1%
apart), so both are expected to come out equal to straight packed training at the long length."""
from __future__ import annotations

from lmforge.findings.catalog.longrun import (LONG, base_model, context_losses, drop_base, long_len, long_steps,
                                              long_train, short_theta)
from lmforge.findings.catalog.common import final_train_loss
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding

ROPE_MULT = 32.0      # Index-32K's base: 32x the short model's
WARMUP = 0.5          # the context-length warmup grows the rows over the first half of the long stage


def arm_settings(ctx, arm: str) -> dict:
    if arm == "seq-warmup":
        S = ctx.scale.seq_len
        return {"seq_warmup": {"start": S, "steps": max(1, round(long_steps(ctx) * WARMUP)), "multiple": min(64, S)}}
    if arm == "no-packing":
        return {"packing": False}
    return {}


def run(ctx, arm: str, seed: int) -> dict:
    S, L = ctx.scale.seq_len, long_len(ctx)
    base = base_model(ctx, seed)
    out = ctx.work(arm, f"seed{seed}")
    long_train(ctx, out, seed, base, short_theta(ctx) * ROPE_MULT, **arm_settings(ctx, arm))
    losses = context_losses(ctx, out, [S, L])
    ctx.drop(out)
    if arm == FINDING.arms[-1]:
        drop_base(ctx, seed)
    return {"metrics": {"long_loss": losses[L], "loss_at_pretrain_len": losses[S],
                        "final_train_loss": final_train_loss(out)},
            "curves": {"long-stage train loss (nats / token)": curve(out, "loss")}}


FINDING = Finding(
    name="longfails", source="Index-1.9B-32K technical report (experiments that did not help)",
    claim="context-length warmup and training without packing gave no gain over plain packed training at the "
          "long length: the results were under 1% apart",
    metric=f"held-out loss at the long length ({LONG}x the pretraining length: 512 tokens at toy scale; nats / token)",
    key="long_loss", higher_is_better=False, baseline="straight",
    expect={"seq-warmup": "equal", "no-packing": "equal"}, tolerance=0.01, run=run,
    secondary=("loss_at_pretrain_len", "final_train_loss"), curve_label="long-stage train loss (nats / token)",
    scale_note="1.6M parameters; 128 -> 512 tokens over a quarter of a pretraining arm's steps (Index: 4096 -> "
               "32768 over 10B tokens); 6 held-out documents are 512+ tokens long (the same for every arm)",
    deviations="the two ablations are run in the long continued pretraining (lmforge longctx's seq_warmup and "
               "packing switches), not in long SFT: the toy corpus has no long instructions to build a long SFT "
               "set from, and for the same reason the third failed experiment (a 1 per mille share of long "
               "instructions in SFT) is not run: at toy scale 1 per mille of a few hundred thousand tokens is "
               "less than one conversation. The long stage is ropebase's 32x arm (the same base model, steps, "
               "LR and RoPE base); the warmup grows rows from the pretraining length to the long one over the "
               "first half of the stage at about equal tokens per step; without packing each row holds one "
               "document (documents of 128+ tokens) padded, so at equal steps it sees fewer real tokens "
               "(the report's comparison is read as equal steps, equal compute). 'Equal' means within 0.01 nats (1% perplexity, the report's '<1% apart'), "
               "chosen before the run")
