"""Effects of the scoring stages (eval, needle): the finished model against chance on the
stage's own items, in the effect dict of lmforge.eval.effect (rate_effect: the accuracy as a
rate of hits, its binomial standard error, chance taken as exact). These stages train
nothing: their "before" is what guessing scores, so a gain says the model knows something
the items test, not that the stage changed the model."""
from __future__ import annotations

from lmforge.eval.effect import rate_effect


def mcq_effect(mcq: dict, continuation: dict | None = None) -> dict | None:
    """One row per benchmark at its most shots (accuracy by summed log-likelihood vs 1 / choices);
    the first row is the headline, the rest go in `more`. With a continuation-choice result
    (lmforge.eval.continuation: held-out text, a task a small model can learn) that row comes
    first: the benchmarks' rows follow it."""
    rows = []
    if continuation and continuation.get("n"):
        rows.append(rate_effect("continuation choice on held-out text (4 spans): accuracy vs chance",
                                int(continuation["hits"]), int(continuation["n"]), float(continuation["chance"])))
    for name, res in mcq.items():
        results = res.get("results") or {}
        if not results:
            continue
        r = results[max(results, key=lambda k: int(k))]
        n = int(r.get("n") or 0)
        if n and r.get("chance") is not None and r.get("acc") is not None:
            rows.append(rate_effect(f"multiple choice {name}, {r['shots']}-shot: accuracy vs chance",
                                    round(r["acc"] * n), n, float(r["chance"])))
    return {**rows[0], "more": rows[1:]} if rows else None


def needle_effect(cells: list[dict], distractors: int) -> dict | None:
    """The true value ranked above `distractors` random values of its shape vs 1 / (distractors + 1),
    with the greedy exact retrieval (chance ~0) in `more`."""
    n = len(cells)
    if not n or distractors <= 0:
        return None
    exact = rate_effect("needle: greedy answer exactly the value (chance ~0)", sum(bool(c["exact"]) for c in cells), n, 0.0)
    return {**rate_effect(f"needle: the value ranked first among {distractors + 1} candidates vs chance",
                          sum(c["rank"] == 0 for c in cells), n, 1.0 / (distractors + 1)), "more": [exact]}
