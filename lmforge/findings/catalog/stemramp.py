"""Finding 8 (Skywork-13B): stage 2's STEM share raised gradually (10% -> 40% over the stage)
against a step change to the stage's final share at the boundary, from the same stage-1
model (one per seed, shared by both arms), at equal tokens."""
from __future__ import annotations

import numpy as np

from lmforge.findings.catalog.phases import finished_checkpoint, later_phase, stage
from lmforge.findings.context import curve, metrics_of
from lmforge.findings.spec import Finding

# Fixed before the run. "code" stands in for SkyPile-STEM (as in recipes/skywork-13b.yaml);
# the other domains keep stage 1's relative weights, as Skywork's ramp does.
DOMAIN = "code"
STAGE1 = {"prose": 0.45, "zh": 0.45, "code": 0.10}
START, END = 0.10, 0.40
STAGE2_FRACTION = 0.4     # stage 2 = 40% of stage 1's steps
LR_RATIO = 0.1            # stage 2 at a constant 10% of the peak: where stage 1's cosine ended (Skywork: 6e-5)
EVAL_EVERY = 0.05         # stage 2 is evaluated every 5% of its steps ...
EARLY = 0.25              # ... and the "jump" is read over its first quarter
STAGE2_EVAL_BATCHES = 4  # per domain (at most the scale's eval_batches)


def eval_batches(ctx) -> int:
    return min(STAGE2_EVAL_BATCHES, ctx.scale.eval_batches)


def stage1_run(ctx, seed: int):
    out = ctx.work("stage1", f"seed{seed}")
    sched = {"kind": "cosine", "warmup_steps": max(1, ctx.steps // 10), "min_ratio": LR_RATIO}
    # evaluated on the same batches as stage 2, so the boundary value is comparable
    ctx.pretrain(out, seed, train={"eval_batches": eval_batches(ctx)},
                 stages=[stage("stage1", ctx.steps, STAGE1, sched)])
    return finished_checkpoint(out, "shared stage-1")


def other_loss(row: dict) -> float:
    return float(np.mean([row[f"val/{d}"] for d in STAGE1 if d != DOMAIN]))


def run(ctx, arm: str, seed: int) -> dict:
    s1 = stage1_run(ctx, seed)
    at_boundary = [r for r in metrics_of(s1) if "val/mean" in r][-1]
    n = max(2, round(STAGE2_FRACTION * ctx.steps))
    every = max(1, round(EVAL_EVERY * n))
    sched = {"kind": "constant", "warmup_steps": 0, "lr": ctx.scale.lr * LR_RATIO}
    st = (stage("ramp", n, STAGE1, sched, ramp={"domain": DOMAIN, "start": START, "end": END}) if arm == "ramp"
          else stage("step", n, {**{d: w * (1 - END) / (1 - STAGE1[DOMAIN]) for d, w in STAGE1.items()},
                                 DOMAIN: END}, sched))
    out = ctx.work(arm, f"seed{seed}")
    summary = ctx.pretrain(out, seed, train={"eval_every": every, "eval_batches": eval_batches(ctx)}, stages=[st],
                           init=later_phase(s1))
    rows = [r for r in metrics_of(out) if "val/mean" in r]
    early = [r for r in rows if r["step"] <= EARLY * n] or rows[:1]
    ctx.drop(out)
    if arm == FINDING.arms[-1]:
        ctx.drop(s1)
    base = other_loss(at_boundary)
    other = [[float(ctx.steps + r["step"]), other_loss(r)] for r in rows]
    return {"metrics": {"jump": float(np.mean([other_loss(r) for r in early])) - base,
                        "other_final": other_loss(summary), "code_final": summary[f"val/{DOMAIN}"],
                        "val_loss": summary["val/mean"]},
            "curves": {"validation loss, prose + zh (nats / token)": [[float(ctx.steps), base], *other],
                       f"validation loss, {DOMAIN} (nats / token)":
                           curve(out, f"val/{DOMAIN}", offset=ctx.steps)}}


FINDING = Finding(
    name="stemramp", source="Skywork-13B, section 3 (two-stage pretraining: stage 2's STEM share 10% -> 40%)",
    claim="raising the STEM share gradually over stage 2 (10% -> 40%) shifts the distribution smoothly, "
          "without the jump in the general domains' loss that switching the mixture at once causes",
    metric="jump: mean general-domain (prose, zh) validation loss over stage 2's first quarter minus its "
           "value at the boundary (nats / token)",
    key="jump", higher_is_better=False, baseline="step", expect={"ramp": "better"}, run=run,
    secondary=("other_final", "code_final", "val_loss"), curve_label="validation loss, prose + zh (nats / token)",
    scale_note="a 1.6M-parameter model still learning at the boundary (its losses fall in stage 2 whatever "
               "the mixture): a jump shows as a smaller fall, not a rise; Skywork's stage 1 was 3T tokens",
    deviations=f"the step arm switches to stage 2's final share ({END:.0%} {DOMAIN}) at the boundary, so it "
               f"trains on more {DOMAIN} tokens (40% vs the ramp's mean 25%) at equal total tokens; stage 2 "
               f"is {STAGE2_FRACTION:.0%} of stage 1's steps at a constant {LR_RATIO:g} x the peak LR (stage 1's "
               f"cosine end), evaluated every {EVAL_EVERY:.0%} of its steps on {STAGE2_EVAL_BATCHES} batches "
               "per domain; stage 1 is one run per seed shared by both arms; code stands in for STEM")
