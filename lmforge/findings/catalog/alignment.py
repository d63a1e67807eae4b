"""Finding 11: SFT and DPO against their start model. One start model per seed (pretrained
without the instruction domain, so the held-out conversations are new to it), SFT from it, DPO
from the SFT model; every arm's final model scored on the same held-out conversations (reply
loss) and the same held-out preference pairs (preference accuracy)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lmforge import config
from lmforge.align.preference_data import load_pairs
from lmforge.align.sft_data import load_conversations
from lmforge.eval.effect import mean_target_nll, paired_effect, target_logps
from lmforge.findings.catalog.phases import finished_checkpoint
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding
from lmforge.io.atomic import write_text
from lmforge.io.documents import ErrorSink
from lmforge.model.load import load_checkpoint
from lmforge.stagekit.source import InitConfig, load_source
from lmforge.stages import dpo, sft

# Fixed before the run.
START_MIX = {"prose": 0.35, "zh": 0.35, "code": 0.30, "instruct": 0.0}   # no dialogs in pretraining
HELDOUT = 0.05            # of the SFT conversations (by id hash), with every preference pair built on them
# steps as a share of the start model's: 40 and 30 at the toy scale's 200
SFT = {"steps": 0.2, "lr": 5e-4}                 # constant LR (Yi), plain SFT (no pretraining-text mix)
DPO = {"steps": 0.15, "lr": 5e-4, "beta": 0.1}   # recipes/tiny.yaml's toy DPO settings (beta: Zephyr, StableLM 2)
SALT = "lmforge-findings-alignment"


def conv_id(rec: dict) -> str:
    """The SFT conversation a record belongs to (a pair's id is '<conversation id>:<k>')."""
    rid = str(rec.get("id", ""))
    return rid.rsplit(":", 1)[0] if "prompt" in rec else rid


def held(cid: str) -> bool:
    h = int.from_bytes(hashlib.blake2b(f"{SALT}:{cid}".encode(), digest_size=8).digest(), "big")
    return h / 2 ** 64 < HELDOUT


def split(ctx) -> dict[str, Path]:
    """sft/dpo x train/heldout files under work/split (the same for every seed and arm): a held-out
    conversation's preference pairs are held out too, so DPO never trains on its reply."""
    out = ctx.work("split")
    paths = {f"{k}_{s}": out / f"{k}_{s}.jsonl" for k in ("sft", "dpo") for s in ("train", "heldout")}
    if all(p.exists() for p in paths.values()):
        return paths
    for kind in ("sft", "dpo"):
        lines = Path(ctx.cfg.corpus, f"{kind}.jsonl").read_text(encoding="utf-8").splitlines()
        parts = {"train": [], "heldout": []}
        for line in lines:
            if line.strip():
                parts["heldout" if held(conv_id(json.loads(line))) else "train"].append(line)
        for s, rows in parts.items():
            write_text(paths[f"{kind}_{s}"], "\n".join(rows) + "\n")
    return paths


def chat_train(ctx, seed: int, steps: int, lr: float, mbs: int) -> dict:
    return {"seq_len": ctx.scale.seq_len, "micro_batch_size": mbs, "seed": seed, "device": ctx.scale.device,
            "optim": {"lr": lr}, "ckpt_every": steps, "keep_last": 1, "eval_batches": 2,
            "log_every": max(1, steps // 10)}


def start_run(ctx, seed: int) -> Path:
    out = ctx.work("start", f"seed{seed}")
    ctx.pretrain(out, seed, mixture={"weights": START_MIX})
    return finished_checkpoint(out, "shared start-model")


def sft_run(ctx, seed: int, paths) -> Path:
    out = ctx.work("sft", f"seed{seed}")
    if (out / "DONE.json").exists():       # its start model may be dropped by now
        return finished_checkpoint(out, "SFT")
    n = max(1, round(SFT["steps"] * ctx.steps))
    spec = {"data": [str(paths["sft_train"])], "out_dir": str(out),
            "init": {"from_checkpoint": str(start_run(ctx, seed))}, "max_steps": n,
            "train": chat_train(ctx, seed, n, SFT["lr"], ctx.scale.micro_batch_size)}
    sft.run(config.from_dict(sft.SFTConfig, spec, source="findings alignment"), progress=False)
    return finished_checkpoint(out, "SFT")


def dpo_run(ctx, seed: int, paths) -> Path:
    out = ctx.work("sft+dpo", f"seed{seed}")
    n = max(1, round(DPO["steps"] * ctx.steps))
    spec = {"data": [str(paths["dpo_train"])], "out_dir": str(out), "beta": DPO["beta"], "reference": "model",
            "init": {"from_checkpoint": str(sft_run(ctx, seed, paths))}, "max_steps": n,
            "train": {**chat_train(ctx, seed, n, DPO["lr"], max(1, ctx.scale.micro_batch_size // 2)),
                      "schedule": {"kind": "cosine", "warmup_steps": 0, "min_ratio": 0.0}}}
    dpo.run(config.from_dict(dpo.DPOConfig, spec, source="findings alignment"), progress=False)
    return finished_checkpoint(out, "DPO")


def heldout(ctx, run_dir: Path, paths) -> tuple:
    """The held-out conversations and pairs, encoded with the run's tokenizer."""
    src = load_source(InitConfig(from_checkpoint=str(run_dir)), "")
    convs, _ = load_conversations([str(paths["sft_heldout"])], src.tok, ctx.scale.seq_len, 8, ErrorSink())
    pairs, _ = load_pairs([str(paths["dpo_heldout"])], src.tok, ctx.scale.seq_len, ErrorSink())
    return [(c.ids, c.mask) for c in convs], pairs


def scores(run_dir: Path, convs, pairs) -> dict:
    model, _ = load_checkpoint(run_dir)
    chosen, _ = target_logps(model, [(p.chosen, p.chosen_mask) for p in pairs])
    rejected, _ = target_logps(model, [(p.rejected, p.rejected_mask) for p in pairs])
    return {"reply": mean_target_nll(model, convs), "margin": chosen - rejected}


def run(ctx, arm: str, seed: int) -> dict:
    paths = split(ctx)
    run_dir = {"start": start_run, "sft": sft_run, "sft+dpo": dpo_run}[arm](ctx, seed, *(() if arm == "start"
                                                                                        else (paths,)))
    convs, pairs = heldout(ctx, run_dir, paths)
    got = scores(run_dir, convs, pairs)
    notes = {}
    if arm == "sft+dpo":      # DPO against its own start (the SFT model), paired over the held-out pairs
        before = scores(ctx.work("sft", f"seed{seed}"), [], pairs)["margin"]
        notes["dpo_vs_sft_accuracy"] = paired_effect("held-out preference accuracy", (before > 0).astype(float),
                                                     (got["margin"] > 0).astype(float), True)
        notes["dpo_vs_sft_margin"] = paired_effect("held-out log-prob margin (nats)", before, got["margin"], True)
    if arm == "sft":
        ctx.drop(ctx.work("start", f"seed{seed}"))
    if arm == "sft+dpo":      # the sft arm's weights were kept for this arm
        ctx.drop(ctx.work("sft", f"seed{seed}"))
        ctx.drop(run_dir)
    curves = {} if arm == "start" else {"train loss": curve(run_dir, "loss")}
    return {"metrics": {"reply_loss": float(np.mean(got["reply"])), "pref_acc": float(np.mean(got["margin"] > 0)),
                        "pref_margin": float(np.mean(got["margin"])), "heldout_convs": len(convs),
                        "heldout_pairs": len(pairs)},
            "curves": curves, "notes": notes}


FINDING = Finding(
    name="alignment", source="Yi, Index-1.9B, StableLM 2 (SFT, then DPO, on a pretrained model)",
    claim="SFT lowers the loss of held-out replies against its start model, and DPO after SFT raises the "
          "held-out preference accuracy over the SFT model while keeping SFT's gain",
    metric="held-out reply loss (nats / reply token) on 5% of the SFT conversations, never trained on",
    key="reply_loss", higher_is_better=False, baseline="start", expect={"sft": "better", "sft+dpo": "better"},
    prepare=split, run=run, needs=("data", "corpus"), secondary=("pref_acc", "pref_margin", "heldout_convs", "heldout_pairs"),
    curve_label="train loss", curve_x="step (of the arm's own stage)",
    scale_note="1.6M parameters: 60% of the corpus's pairs reject a reply from another conversation, which "
               "needs the prompt understood (recipes/tiny.yaml's header: a 5M model stays near chance on those)",
    deviations="one primary metric (reply loss) for all arms, since the framework compares every arm with one "
               "baseline; DPO's own claim (preference accuracy against the SFT model) is the secondary pref_acc "
               "per arm plus a paired per-pair effect (lmforge/eval/effect.py) in the sft+dpo arm's notes; the "
               "start model is pretrained without the instruct domain (the dialogs as plain text) so the held-out "
               "replies are unseen; SFT for 20% of the start model's steps (40 of 200) at a constant 5e-4, no "
               "pretraining-text mix; DPO for 15% (30), "
               "beta 0.1, lr 5e-4 (tiny.yaml's toy settings, not Index's beta 1 / lr 1e-6)")
