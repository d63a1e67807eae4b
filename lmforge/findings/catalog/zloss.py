"""Finding 9 (StableLM 2): PaLM's z-loss on vs off."""
from __future__ import annotations

from lmforge.findings.catalog.common import final_train_loss, mean_abs_log_z
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding

Z_LOSS = 1e-4   # PaLM's coefficient


def run(ctx, arm: str, seed: int) -> dict:
    out = ctx.work(arm, f"seed{seed}")
    summary = ctx.pretrain(out, seed, z_loss=Z_LOSS if arm == "z-loss" else 0.0)
    logz = mean_abs_log_z(out, ctx.cfg.data, ctx.scale.seq_len)
    ctx.drop(out)
    return {"metrics": {"val_loss": summary["val/mean"], "final_train_loss": final_train_loss(out), "mean_abs_log_z": logz},
            "curves": {"validation loss (nats / token)": curve(out, "val/mean"),
                       "train loss (nats / token)": curve(out, "loss")}}


FINDING = Finding(
    name="zloss", source="StableLM 2 1.6B technical report, section 2 (training)",
    claim="z-loss (1e-4 x log(Z)^2) neither helps nor hurts the loss (StableLM 2 kept it off), while it "
          "keeps the softmax normaliser log Z near 0",
    metric="validation loss at the end (nats / token)", key="val_loss", higher_is_better=False,
    baseline="off", expect={"z-loss": "equal"}, tolerance=0.02, run=run,
    secondary=("final_train_loss", "mean_abs_log_z"),
    curve_label="train loss (nats / token)",
    scale_note="1.6M parameters and 200 steps: log Z has little time to drift, so the z-loss term "
               "has little to correct",
    deviations="'equal' means within 0.02 nats (about 0.3% of the loss), chosen before the run")
