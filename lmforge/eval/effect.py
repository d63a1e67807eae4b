"""A stage's effect: one metric on held-out items, before (the stage's input model) and after
(its output model), with a noise estimate, in one uniform dict every stage writes under
`effect` in its DONE.json and the report renders as one table row.

    {"metric": "held-out reply loss (nats/token)", "before": 4.91, "after": 3.62,
     "delta": -1.29, "stderr": 0.05, "n": 50, "higher_is_better": false, "verdict": "gain"}

The noise is the paired standard error of the per-item change (the same items scored by both
models: item difficulty cancels), std(after_i - before_i) / sqrt(n). The verdict rule is
written here once: "gain" when the change in the good direction exceeds 2 standard errors,
"loss" when the change in the bad direction does, else "within noise". A constant change
(std 0) with n >= 2 counts as beyond noise when it is not 0.

Also the per-item scorers the stages use (layer 3: model forward passes only):
`target_logps` (sum of log p over a sequence's target tokens) and `mean_target_nll`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

Z = 2.0   # beyond noise: more than Z paired standard errors


def verdict(delta: float, stderr: float, n: int, higher_is_better: bool) -> str:
    if n < 2 or not math.isfinite(delta):
        return "too few items"
    good = delta if higher_is_better else -delta
    if good > Z * stderr and good > 0:
        return "gain"
    if -good > Z * stderr and good < 0:
        return "loss"
    return "within noise"


def paired_effect(metric: str, before: Sequence[float], after: Sequence[float], higher_is_better: bool,
                  **extra) -> dict:
    """The effect dict of per-item scores before and after (same items, same order)."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1:
        raise ValueError(f"paired_effect: before {b.shape} and after {a.shape} must be the same 1-d shape")
    n = int(len(b))
    d = a - b
    stderr = float(d.std(ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    delta = float(d.mean()) if n else float("nan")
    out = {"metric": metric, "before": float(b.mean()) if n else float("nan"),
           "after": float(a.mean()) if n else float("nan"), "delta": delta, "stderr": stderr, "n": n,
           "higher_is_better": higher_is_better, "verdict": verdict(delta, stderr, n, higher_is_better)}
    out.update(extra)
    # undefined figures (no items; one item has no spread) as null: DONE.json stays strict JSON
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def rate_effect(metric: str, hits: int, n: int, chance: float, **extra) -> dict:
    """The effect dict of a rate (hits of n items, e.g. a filter's recall of planted junk)
    against the rate `chance` that a blind rule scores (e.g. removing as many documents at
    random), taken as exact. The noise is the binomial standard error of the rate, with
    (hits + 1/2) / (n + 1) for p so that a perfect 40 of 40 still has a spread (it is then ~0.01)."""
    rate = hits / n if n else float("nan")
    q = (hits + 0.5) / (n + 1)
    stderr = math.sqrt(q * (1 - q) / n) if n else float("nan")
    delta = rate - chance
    out = {"metric": metric, "before": chance, "after": rate, "delta": delta, "stderr": stderr, "n": int(n),
           "higher_is_better": True, "verdict": verdict(delta, stderr, n, True), "hits": int(hits)}
    out.update(extra)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def bootstrap_margin(a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap of mean(a) - mean(b) over items: the margin, its bootstrap standard
    error and the share of resamples in which a's mean is below b's (a = the winner's
    per-item losses, b = the runner-up's: the share is how often the choice would flip)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(1)
    return {"margin": float(d.mean()), "stderr": float(means.std(ddof=1)), "flip_share": float((means > 0).mean())}


BATCH = 16   # items of one length scored together


@torch.no_grad()
def target_logps(model, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of log p of the target tokens, target count) per item; an item is (ids, mask) with
    mask[t] True when token t is a target (predicted from the tokens before it). Items of the
    same length go through one forward pass, up to BATCH at a time (held-out windows are mostly
    one length): no padding, so each item's scores are its own, as if scored alone."""
    model.eval()
    device = next(model.parameters()).device
    sums, counts = np.zeros(len(items)), np.zeros(len(items), dtype=np.int64)
    by_len: dict[int, list[int]] = {}
    for i, (ids, mask) in enumerate(items):
        if len(ids) >= 2 and bool(np.asarray(mask[1:], dtype=bool).any()):
            by_len.setdefault(len(ids), []).append(i)
    for group in by_len.values():
        for s in range(0, len(group), BATCH):
            idx = group[s:s + BATCH]
            x = torch.as_tensor(np.stack([np.asarray(items[i][0], dtype=np.int64) for i in idx]), device=device)
            tgt = torch.as_tensor(np.stack([np.asarray(items[i][1][1:], dtype=bool) for i in idx]), device=device)
            logp = torch.log_softmax(model(x[:, :-1]).float(), -1)
            lp = logp.gather(2, x[:, 1:, None])[..., 0] * tgt
            for b, i in enumerate(idx):
                sums[i], counts[i] = float(lp[b].sum()), int(tgt[b].sum())
    return sums, counts


def mean_target_nll(model, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Mean negative log-likelihood per target token of each item (nats/token)."""
    sums, counts = target_logps(model, items)
    return -sums / np.maximum(counts, 1)
