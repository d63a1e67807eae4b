"""The verdict rule of every finding, written once.

Arms are run with the same seeds (the seed sets the initialisation and the data order), so
a variant is compared with the baseline seed by seed: d_i = variant_i - baseline_i, the
difference is mean(d) and its standard error std(d) / sqrt(n) (paired: what the seed changes
in both arms cancels). With `good` = the difference in the metric's good direction:

    expect "better":  agrees when good > 2 SE, disagrees when good < -2 SE, else inconclusive
    expect "worse":   the mirror image
    expect "equal":   agrees when |d| + 2 SE <= tolerance (the whole interval inside the band),
                      disagrees when |d| - 2 SE > tolerance, else inconclusive

Fewer than 2 paired seeds give "too few seeds" (no noise estimate, no verdict).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z = 2.0
EXPECTATIONS = ("better", "worse", "equal")


def arm_stats(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    return {"mean": float(v.mean()) if n else None, "std": float(v.std(ddof=1)) if n > 1 else None,
            "n": n, "values": [float(x) for x in v]}


def rule(expect: str, diff: float, stderr: float, higher_is_better: bool, tolerance: float = 0.0) -> str:
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect: {expect!r} is not one of {', '.join(EXPECTATIONS)}")
    if expect == "equal":
        if abs(diff) + Z * stderr <= tolerance:
            return "agrees"
        if abs(diff) - Z * stderr > tolerance:
            return "disagrees"
        return "inconclusive"
    good = diff if higher_is_better else -diff
    if expect == "worse":
        good = -good
    if good > Z * stderr and good > 0:
        return "agrees"
    if -good > Z * stderr and good < 0:
        return "disagrees"
    return "inconclusive"


def compare(baseline: dict[int, float], variant: dict[int, float], expect: str, higher_is_better: bool,
            tolerance: float = 0.0) -> dict:
    """The paired comparison of a variant with the baseline over the seeds both have (seed -> value)."""
    seeds = sorted(set(baseline) & set(variant))
    d = np.array([variant[s] - baseline[s] for s in seeds], dtype=np.float64)
    n = len(d)
    out = {"expect": expect, "n": n, "seeds": seeds, "tolerance": tolerance}
    if n < 2 or not np.all(np.isfinite(d)):
        return {**out, "diff": float(d.mean()) if n else None, "stderr": None, "verdict": "too few seeds"}
    diff, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    return {**out, "diff": diff, "stderr": se, "verdict": rule(expect, diff, se, higher_is_better, tolerance)}
