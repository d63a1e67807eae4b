"""System-prompt balance (Yi: a designed set of system instructions, balanced by a diversity
sampling algorithm, so that no instruction dominates what the model learns to follow).

Two parts, both optional:
- `assign`: conversations without a system message get one from a designed set, used in
  turn from a seeded shuffle so every instruction is used equally often (to within one).
- `balance`: group conversations by their system prompt (exact text, normalised, or a
  cluster of similar prompts computed by the caller) and cap every group at the same size
  c, the largest for which no group holds more than `max_share` of what is kept:
  c <= max_share * sum_g min(n_g, c). The conversations without a system prompt form a
  group of their own. Inside a group the best-scored (else a seeded draw) are kept.

When `max_share` is below 1 / (number of groups) no cap can meet it; the groups are then
made even (the share becomes 1 / groups), and the stats say so.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lmforge.align.curate import NO_SYSTEM, Drop, Item, StepResult, normalise, order_by_priority


def with_system(item: Item, prompt: str) -> Item:
    msgs = item.messages
    rest = msgs[1:] if msgs[0]["role"] == "system" else msgs
    rec = {**item.rec, "messages": [{"role": "system", "content": prompt}, *rest]}
    return Item(rec, item.where, item.task, item.source, item.score, item.cluster, item.origin)


def assign(items: list[Item], prompts: Sequence[str], share: float, seed: int) -> tuple[list[Item], dict]:
    """Give a `share` of the conversations that have no system message one of `prompts`,
    each prompt used equally often. (items, {prompt: times used})."""
    rng = np.random.default_rng([seed, 11])
    bare = [k for k, it in enumerate(items) if not it.system]
    chosen = sorted(rng.permutation(bare)[:round(share * len(bare))].tolist()) if bare and prompts else []
    order = [prompts[j] for j in rng.permutation(len(prompts))] if prompts else []
    used: dict[str, int] = {p: 0 for p in prompts}
    out = list(items)
    for n, k in enumerate(chosen):
        p = order[n % len(order)]
        out[k] = with_system(items[k], p)
        used[p] += 1
    return out, used


def group_keys(items: list[Item]) -> list[str]:
    return [normalise(it.system) if it.system else NO_SYSTEM for it in items]


def share_cap(sizes: Sequence[int], max_share: float) -> tuple[int, float]:
    """(cap per group, the share actually enforced). f(c) = s * sum min(n_g, c) - c is concave
    with f(0) = 0, so the feasible caps are an interval [0, c*]: binary search for c*."""
    sizes = [int(n) for n in sizes if n > 0]
    if not sizes:
        return 0, max_share
    share = max(max_share, 1.0 / len(sizes))

    def ok(c):
        return c <= share * sum(min(n, c) for n in sizes) + 1e-9

    lo, hi = min(sizes), max(sizes)  # f(min n) = min n * (share * groups - 1) >= 0: always feasible
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo, share


def balance(items: list[Item], max_share: float, seed: int, keys: Sequence[str] | None = None) -> StepResult:
    """Cap every system-prompt group (`keys`: one per item; default its normalised system
    prompt) so none exceeds `max_share` of what is kept."""
    keys = list(keys) if keys is not None else group_keys(items)
    groups: dict[str, list[int]] = {}
    for k, g in enumerate(keys):
        groups.setdefault(g, []).append(k)
    cap, share = share_cap([len(v) for v in groups.values()], max_share)
    keep = np.zeros(len(items), dtype=bool)
    for g, idx in groups.items():
        members = [items[k] for k in idx]
        for j in order_by_priority(members, seed)[:cap]:
            keep[idx[j]] = True
    dropped = [Drop(items[k], "system_prompt_cap", f"group {keys[k][:60]!r} capped at {cap} "
                                                    f"(max share {share:.3f})") for k in np.flatnonzero(~keep)]
    kept = [items[k] for k in np.flatnonzero(keep)]
    before = _dist([keys[k] for k in range(len(items))])
    after = _dist([keys[k] for k in np.flatnonzero(keep)])
    details = {"max_share": max_share, "enforced_share": share, "cap": cap, "groups": len(groups),
               "system_before": before, "system_after": after,
               "largest_share_before": max(before.values()) / len(items) if items else 0.0,
               "largest_share_after": max(after.values()) / len(kept) if kept else 0.0}
    return StepResult(kept, dropped, details=details)


def _dist(keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))
