"""Finding 3 (Index-1.9B): deep and narrow vs shallow and wide at equal (non-embedding) parameters."""
from __future__ import annotations

from lmforge.findings.catalog.common import final_train_loss
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding
from lmforge.model.config import ModelConfig

# 8 x 128 (head 32, GQA 4/2) and 2 x 256 (head 32, GQA 8/4): 1.47M non-embedding parameters each
# (the toy scale's 4 x 128 has half that). The wide model's embedding is twice as large (tied).
SHAPES = {
    "wide": dict(n_layers=2, d_model=256, n_heads=8, n_kv_heads=4, ffn_hidden=704),
    "deep": dict(n_layers=8, d_model=128, n_heads=4, n_kv_heads=2, ffn_hidden=352),
}


def non_embedding(ctx, arm: str) -> int:
    return ModelConfig(**{**ctx.model(), **SHAPES[arm]}).n_params(embeddings=False)


def run(ctx, arm: str, seed: int) -> dict:
    out = ctx.work(arm, f"seed{seed}")
    summary = ctx.pretrain(out, seed, model=SHAPES[arm])
    ctx.drop(out)
    return {"metrics": {"val_loss": summary["val/mean"], "final_train_loss": final_train_loss(out),
                        "non_embedding_params": non_embedding(ctx, arm)},
            "curves": {"train loss (nats / token)": curve(out, "loss")}}


FINDING = Finding(
    name="depthwidth", source="Index-1.9B, section 3 (model structure: 36 layers vs 9 at 1.01B)",
    claim="at equal parameters, a deep and narrow model reaches a lower loss than a shallow and wide one",
    metric="validation loss at the end (nats / token)", key="val_loss", higher_is_better=False,
    baseline="wide", expect={"deep": "better"}, run=run, secondary=("final_train_loss", "non_embedding_params"),
    curve_label="train loss (nats / token)",
    scale_note="1.5M non-embedding parameters, 8 vs 2 layers (Index: 36 vs 9 at 1.01B)",
    deviations="equal non-embedding parameters (1.47M each); the wide model's tied embedding is 2x larger "
               "(4096 x 256), so its total count and head FLOPs are higher")
