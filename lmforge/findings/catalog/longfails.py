"""Finding 6 (Index-1.9B-32K's failed experiments): context-length warmup in the long continued
pretraining; packing vs one conversation per row in long SFT; a 1 per mille share of long
instructions in SFT. The report found none of them helped (packing: "less than 1%" apart), so
each is expected to come out equal to its reference arm.

Per seed: one short-context base model, the long stage from it (`straight`: packed rows at the
long length; `seq-warmup`: rows growing to it), and four SFT runs from `straight`'s model at the
long length: the long-SFT mix (long + general instructions, Index's 3:5) packed or not, and a
general SFT set with 1 per mille long instructions or none. The instruction sets:
catalog/longinstruct.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lmforge import checkpoint as ckpt
from lmforge import config
from lmforge.findings.catalog import longinstruct
from lmforge.findings.catalog.longrun import (LONG, LONG_LR, base_model, context_losses, drop_base, long_len,
                                              long_steps, long_train, short_theta)
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding
from lmforge.io.atomic import read_json

ROPE_MULT = 32.0      # Index-32K's base: 32x the short model's
WARMUP = 0.5          # the context-length warmup grows the rows over the first half of the long stage

# The SFT arms, fixed before the run.
SFT_LR = 0.5          # of the long stage's peak LR (Index: long SFT 5e-6, long pretraining 1e-5)
SETS = {"long_train": 48, "long_heldout": 30,     # long instructions (train documents / held-out documents)
        "general_long": 80,                       # general ones beside them: Index's ~30K long : ~50K general
        "general_permille": 2000,                 # the general SFT set of the 1 per mille share (toy: all 1856)
        "context": (0.45, 0.8)}                   # a long instruction's context, in long lengths (230-410 tokens)
LONG_EPOCHS = 2       # Index's long SFT: 2 epochs
GENERAL_EPOCHS = 1    # the 1 per mille runs: one pass over the 2000 general conversations
PER_MILLE = 0.001
# arm -> (general set, long share: None = every long instruction once, 0 = none, packing)
SFT_ARMS = {"sft-pack": ("general_long", None, True), "sft-nopack": ("general_long", None, False),
            "sft-none": ("general_permille", 0, True), "sft-permille": ("general_permille", PER_MILLE, True)}
CURVE = "train loss of the arm's own stage (nats / token)"


def arm_settings(ctx, arm: str) -> dict:
    if arm == "seq-warmup":
        S = ctx.scale.seq_len
        return {"seq_warmup": {"start": S, "steps": max(1, round(long_steps(ctx) * WARMUP)), "multiple": min(64, S)}}
    return {}


def set_sizes(ctx) -> dict:
    """SETS with the training sets scaled by the run's steps against the scale's budget (a smoke
    run's few steps get a few conversations); the held-out sets stay whole."""
    r = ctx.steps / ctx.scale.steps
    return {**SETS, **{k: max(2, round(SETS[k] * r)) for k in ("long_train", "general_long", "general_permille")}}


def sets(ctx) -> dict[str, Path]:
    return longinstruct.build(ctx, ctx.work("sftdata"), set_sizes(ctx), long_len(ctx))


def unless_dropped(out: Path) -> Path:
    """A finished run whose weights were dropped (an arm rerun after its record was lost) is
    trained again from scratch: same seed, same numbers."""
    if (out / "DONE.json").exists() and ckpt.latest(out / "checkpoints") is None:
        shutil.rmtree(out)
    return out


def long_model(ctx, seed: int) -> Path:
    """`straight`'s long-stage run (trained once per seed; again if its weights were dropped)."""
    out = unless_dropped(ctx.work("straight", f"seed{seed}"))
    if not (out / "DONE.json").exists():
        long_train(ctx, out, seed, base_model(ctx, seed), short_theta(ctx) * ROPE_MULT)
    return out


def sft_arm(ctx, arm: str, seed: int, files: dict[str, Path]) -> Path:
    """The sft stage from `straight`'s model at the long length, the same rows per step as the
    long stage, cosine from SFT_LR x its LR; the steps follow from the data and epochs."""
    from lmforge.stages import sft
    general, share, packing = SFT_ARMS[arm]
    out = unless_dropped(ctx.work(arm, f"seed{seed}"))
    L = long_len(ctx)
    long = {} if share == 0 else {"data": [str(files["long_train"])], "share": share}
    spec = {"data": [str(files[general])], "out_dir": str(out), "long": long, "packing": packing,
            "init": {"from_checkpoint": str(long_model(ctx, seed))},
            "epochs": LONG_EPOCHS if general == "general_long" else GENERAL_EPOCHS,
            "train": {"seq_len": L, "micro_batch_size": max(1, ctx.scale.micro_batch_size * ctx.scale.seq_len // L),
                      "seed": seed, "device": ctx.scale.device, "optim": {"lr": ctx.scale.lr * LONG_LR * SFT_LR},
                      "schedule": {"kind": "cosine", "warmup_steps": 0, "min_ratio": 0.1},
                      "ckpt_every": 0, "keep_last": 1, "eval_batches": 1, "log_every": 1}}
    sft.run(config.from_dict(sft.SFTConfig, spec, source=f"findings {ctx.cfg.name}"), progress=False)
    return out


def reply_losses(run_dir: Path, files: dict[str, Path], L: int) -> dict[str, float | int]:
    """Mean held-out reply loss (nats / reply token, averaged over conversations) on the long and
    the short held-out instructions, all of them scored (none is dropped as too long)."""
    from lmforge.align.sft_data import load_conversations
    from lmforge.eval.effect import mean_target_nll
    from lmforge.io.documents import ErrorSink
    from lmforge.model.load import load_checkpoint
    from lmforge.stagekit.source import InitConfig, load_source

    src = load_source(InitConfig(from_checkpoint=str(run_dir)), "", own_format=True)
    model, _ = load_checkpoint(run_dir)
    out = {}
    for name in ("long", "short"):
        path = files[f"{name}_heldout"]
        convs, st = load_conversations([str(path)], src.tok, L, 0, ErrorSink(), chat=src.chat)
        if st["kept"] != st["records"]:
            raise RuntimeError(f"{path}: {st['records'] - st['kept']} held-out conversations not scored ({st})")
        out[f"{name}_reply_loss"] = float(np.mean(mean_target_nll(model, [(c.ids, c.mask) for c in convs])))
        out[f"heldout_{name}"] = len(convs)
    return out


def run(ctx, arm: str, seed: int) -> dict:
    S, L = ctx.scale.seq_len, long_len(ctx)
    files = sets(ctx)
    notes = {}
    if arm == "straight":
        out = long_model(ctx, seed)
    elif arm == "seq-warmup":
        out = unless_dropped(ctx.work(arm, f"seed{seed}"))
        long_train(ctx, out, seed, base_model(ctx, seed), short_theta(ctx) * ROPE_MULT, **arm_settings(ctx, arm))
        drop_base(ctx, seed)          # the last arm that starts from the base model
    else:
        out = sft_arm(ctx, arm, seed, files)
        st = read_json(out / "stats.json")
        notes = {"steps": st.get("planned_steps"), "rows": st.get("rows"),
                 "long_used": (st.get("long") or {}).get("used", 0),
                 "long_share": (st.get("long") or {}).get("share", 0.0)}
    losses = context_losses(ctx, out, [S, L])
    replies = reply_losses(out, files, L)
    if arm != "straight":
        ctx.drop(out)
    if arm == FINDING.arms[-1]:       # no later arm of this seed starts from straight's model
        ctx.drop(ctx.work("straight", f"seed{seed}"))
    return {"metrics": {"long_loss": losses[L], "loss_at_pretrain_len": losses[S], **replies},
            "curves": {CURVE: curve(out, "loss")}, "notes": notes}


FINDING = Finding(
    name="longfails", source="Index-1.9B-32K technical report (failed attempts: context length warmup, packing "
                             "vs non-packing, 1 per mille long instruction SFT)",
    claim="context-length warmup did not help the long continued pretraining; in long SFT, packing or not made "
          "less than 1% difference; a 1 per mille share of long instructions in SFT (as in LLaMA 3) gave a "
          "negative result",
    metric=f"held-out loss at the long length ({LONG}x the pretraining length: 512 tokens at toy scale; nats / "
           "token) for seq-warmup vs straight; held-out long-instruction reply loss (nats / reply token) for the "
           "SFT comparisons",
    key="long_loss", higher_is_better=False, baseline="straight",
    expect={"seq-warmup": "equal", "sft-nopack": "equal", "sft-permille": "equal"},
    against={"sft-nopack": "sft-pack", "sft-permille": "sft-none"},
    keys={"sft-nopack": "long_reply_loss", "sft-permille": "long_reply_loss"},
    tolerance=0.01, run=run, prepare=sets, needs=("data", "corpus"),
    secondary=("loss_at_pretrain_len", "short_reply_loss", "heldout_long", "heldout_short"),
    curve_label=CURVE, curve_x="step (of the arm's own stage)",
    scale_note="1.6M parameters; 128 -> 512 tokens over a quarter of a pretraining arm's steps (Index: 4096 -> "
               "32768 over 10B tokens); the long instructions are retrieval tasks over 230-410-token contexts "
               "(Index: up to 32K) and a 1.6M model may learn their format more than the retrieval; 1 per mille "
               "of the toy corpus's general SFT set (1856 conversations, many repeated) is 2 long instructions; "
               "held out: 30 long instructions from documents no arm trained on and only 6 short dialogs (of "
               "the 20 the encode stage kept out of pretraining, the others repeat training documents), so "
               "the short reply loss is noisy",
    deviations="the long stage is ropebase's 32x arm (the same base model, steps, LR and RoPE base); the warmup "
               "grows rows from the pretraining length to the long one over the first half of the stage at "
               "about equal tokens per step (the report grew the length over a sorted dataset). The corpus has "
               "no long instructions: they are built from the token set's documents (catalog/longinstruct.py: "
               "quote / locate / fact retrieval over passages), 48 from training documents, 30 held out from "
               "validation documents. Long SFT: 48 long + 80 general conversations (Index's 3:5), 2 epochs, "
               "from straight's model at 512 tokens, 2 rows per step, cosine from half the long stage's LR "
               "(Index: 5e-6 vs 1e-5), no warmup. Packing is compared at equal tokens (the same conversations "
               "and epochs), not equal steps: unpacked, each row holds one conversation, so the arm takes more, "
               "mostly padded, steps; at equal steps it would see about 40% of the data and the comparison would "
               "measure the data, not the packing. The 1 per mille arms train one epoch on up to 2000 general "
               "conversations (the toy corpus has 1856 once the held-out ones are left out) with 2 long ones "
               "added (0.1% by count, about 1% by tokens) or none, and are "
               "compared with each other (the brief's reading of 'no gain'; the report's own baseline for its "
               "'negative' result was its full long SFT, shown here as sft-pack but not a declared comparison: "
               "it trains on other general data). 'Equal' is within 0.01 nats (1% perplexity, the report's "
               "'<1% apart'), chosen before the run")
