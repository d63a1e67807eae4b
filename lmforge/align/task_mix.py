"""Task-mix grid search (Yi: the SFT task-mix ratios were chosen by grid search).

A grid point is a share per task. Every point trains on the same number of conversations
(`size`), drawn from each task's training pool in proportion to its share, so points
differ only in their mix; a task short of conversations for its share is repeated
(whole passes over a seeded shuffle, then part of one). Each task keeps its own held-out
conversations, never trained on, for the evaluation. The best point is picked by a
stated rule:

    mean_loss   lowest mean over tasks of the held-out reply loss (nats per reply token),
                every task counting once whatever its size
    max_loss    lowest worst-task held-out reply loss (no task left behind)
    mcq         highest mean over the tasks given an MCQ file of acc_norm
                (ties and missing MCQ fall back to mean_loss)

Ties go to the earlier point in grid order.
"""
from __future__ import annotations

import itertools
import math
import zlib
from typing import Sequence

import numpy as np

RULES = {
    "mean_loss": "lowest mean over tasks of the held-out reply loss (nats/token); ties: earlier point",
    "max_loss": "lowest worst-task held-out reply loss (nats/token); ties: earlier point",
    "mcq": "highest mean MCQ acc_norm over the tasks with an MCQ file; ties: lower mean held-out loss, "
           "then the earlier point",
}


def normalise_point(weights: dict[str, float], tasks: Sequence[str]) -> dict[str, float]:
    total = sum(max(0.0, float(weights.get(t, 0.0))) for t in tasks)
    if total <= 0:
        raise ValueError(f"grid point {weights} has no positive weight on the tasks {list(tasks)}")
    return {t: max(0.0, float(weights.get(t, 0.0))) / total for t in tasks}


def grid_points(tasks: Sequence[str], weights: dict[str, list[float]] | None = None,
                points: Sequence[dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Shares per task for every grid point: the explicit `points`, else the product of the
    per-task `weights` lists (a task not listed has weight 1), normalised; points with the
    same shares (to 1e-9) are kept once, all-zero points dropped."""
    if points:
        raw = [dict(p) for p in points]
    else:
        axes = [list(weights.get(t, [1.0])) if weights else [1.0] for t in tasks]
        raw = [dict(zip(tasks, combo)) for combo in itertools.product(*axes)]
    out, seen = [], set()
    for p in raw:
        if sum(max(0.0, float(v)) for k, v in p.items() if k in tasks) <= 0:
            continue
        shares = normalise_point(p, tasks)
        key = tuple(round(shares[t], 9) for t in tasks)
        if key not in seen:
            seen.add(key)
            out.append(shares)
    return out


def counts_for(shares: dict[str, float], size: int) -> dict[str, int]:
    """Conversations per task at a point: round(share * size) by largest remainder (sums to size)."""
    exact = {t: s * size for t, s in shares.items()}
    counts = {t: int(math.floor(v)) for t, v in exact.items()}
    rest = size - sum(counts.values())
    for t in sorted(exact, key=lambda t: (-(exact[t] - counts[t]), list(exact).index(t)))[:rest]:
        counts[t] += 1
    return counts


def draw(pool: Sequence, count: int, rng: np.random.Generator) -> list:
    """`count` members of `pool`: whole passes over fresh shuffles, then part of one."""
    out = []
    while len(out) < count and pool:
        perm = rng.permutation(len(pool))[:count - len(out)]
        out += [pool[k] for k in perm]
    return out


def split_heldout(by_task: dict[str, list], n: int, seed: int) -> tuple[dict[str, list], dict[str, list]]:
    """(train pools, held-out) per task: a seeded `n` of each task held out."""
    train, held = {}, {}
    for t, items in by_task.items():
        if len(items) <= n:
            raise ValueError(f"task {t!r} has {len(items)} conversations; holding out {n} leaves none to train "
                             f"on (lower heldout or add data)")
        perm = np.random.default_rng([seed, 5, zlib.crc32(t.encode())]).permutation(len(items))
        held[t] = [items[k] for k in sorted(perm[:n].tolist())]
        train[t] = [items[k] for k in sorted(perm[n:].tolist())]
    return train, held


def point_data(pools: dict[str, list], shares: dict[str, float], size: int, seed: int) -> tuple[list, dict]:
    """(the point's training records in a seeded order, conversations per task)."""
    rng = np.random.default_rng([seed, 31])
    counts = counts_for(shares, size)
    recs = []
    for t in pools:
        recs += draw(pools[t], counts.get(t, 0), rng)
    order = rng.permutation(len(recs))
    return [recs[k] for k in order], counts


def mean_loss(res: dict) -> float:
    losses = [v["loss"] for v in res["heldout"].values()]
    return float(np.mean(losses)) if losses else math.inf


def rule_key(res: dict, rule: str) -> tuple:
    """Sort key of a point's result under `rule`: smaller is better."""
    if rule == "mean_loss":
        return (mean_loss(res),)
    if rule == "max_loss":
        return (max(v["loss"] for v in res["heldout"].values()), mean_loss(res))
    if rule == "mcq":
        accs = [v["acc_norm"] for v in (res.get("mcq") or {}).values()]
        return (-float(np.mean(accs)) if accs else math.inf, mean_loss(res))
    raise ValueError(f"unknown rule {rule!r} (known: {', '.join(RULES)})")


def choose(results: Sequence[dict], rule: str) -> int:
    """Index of the best point under `rule` (ties: the earlier point)."""
    keys = [rule_key(r, rule) for r in results]
    return min(range(len(results)), key=lambda i: (keys[i], i))


def label(shares: dict[str, float]) -> str:
    return " ".join(f"{t}:{s:.2f}" for t, s in shares.items())
