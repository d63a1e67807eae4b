"""A stage's summary dict as one readable line: validation loss first, then a few numbers.

    val loss 5.702 (mean of 5 domains) | train loss 5.81 | step 600 | 1.23M tokens

`lmforge STAGE` prints it when the stage ends and `lmforge run` puts it on each stage's
"-- NAME: done" line; the whole summary stays in the stage's DONE.json (and recipe.json).
"""
from __future__ import annotations

import math

# the stage's validation loss, in order of preference: the LM objectives' mean over domains,
# SFT / C-RLFT reply loss, DPO's loss on held-out pairs
VAL_LOSS_KEYS = ("val/mean", "val/sft_loss", "val/loss", "val/dpo_loss")
LEADING = {"final_loss": "train loss", "final_lm_loss": "train LM loss", "val/accuracy": "val acc",
           "val/margin": "val margin", "ppl": "ppl", "bpb": "bits/byte", "step": "step", "tokens_seen": "tokens",
           "docs": "docs", "bytes": "bytes", "train_tokens": "train tokens", "val_tokens": "val tokens"}
HIDDEN = ("final_distill", "skipped", "checkpoint", "bad_steps", "seconds", "cpu_seconds", "account")


def val_loss(summary: dict) -> tuple[str, float] | None:
    """(key, value) of the stage's validation loss, when it has one."""
    for key in VAL_LOSS_KEYS:
        if _number(summary.get(key)):
            return key, float(summary[key])
    for key, v in summary.items():
        if key.startswith("val/") and "loss" in key and _number(v):
            return key, float(v)
    return None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def human(v, key: str = "") -> str:
    """A number for reading: 4 significant digits, big counts as k / M / G, bytes as kB / MB / GB."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if key == "bytes" or key.endswith("_bytes"):
        for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(v) >= scale:
                return f"{v / scale:.3g} {unit}"
        return f"{v} B"
    if isinstance(v, int):
        # counts below 10,000 stay whole; above, k / M / G of 1e3 / 1e6 / 1e9
        for unit, scale, least in (("G", 1e9, 1e9), ("M", 1e6, 1e6), ("k", 1e3, 1e4)):
            if abs(v) >= least:
                return f"{v / scale:.3g}{unit}"
        return str(v)
    return f"{v:.4g}"


def summary_line(summary: dict, limit: int = 5) -> str:
    """At most `limit` items: the validation loss, then the usual headline numbers, then the
    first other scalars (paths, per-domain values and bookkeeping left out)."""
    items: list[str] = []
    used: set[str] = set(HIDDEN)
    v = val_loss(summary)
    if v is not None:
        key, value = v
        domains = [k for k in summary if k.startswith("val/") and k not in ("val/mean", "val/ppl")
                   and "/" not in k[4:] and key == "val/mean"]
        where = f"mean of {len(domains)} domain{'' if len(domains) == 1 else 's'}" if key == "val/mean" else key
        items.append(f"val loss {value:.4g} ({where})")
        used.add(key)
    mixed = _number(summary.get("final_lm_loss"))   # distillation: the loss is LM + distillation terms
    for key, label in LEADING.items():
        if key == "final_loss" and mixed:
            label = "train loss (LM + distill)"
        if _number(summary.get(key)) and key not in used:
            items.append(f"{label} {human(summary[key], key)}")
            used.add(key)
    for key, value in summary.items():
        if len(items) >= limit:
            break
        if key in used or key.startswith(("val/", "val_bpb/")):
            continue
        if _number(value) or (isinstance(value, str) and "/" not in value and len(value) <= 40):
            items.append(f"{key} {human(value, key)}")
    return " | ".join(items[:limit])
