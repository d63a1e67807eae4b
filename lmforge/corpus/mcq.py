"""Multiple-choice items: one right answer plus three distractors, shuffled by a seed.

An item is `{"id", "question", "choices": [4 strings], "answer": index, "meta": {...}}`;
the eval stage scores each choice by log-likelihood. Distractors come from a pool of
other answers of the same kind (same quiz file, same column; poets; poem lines of the
same length), never equal to any accepted form of the right answer.
"""
from __future__ import annotations

from .common import rng

N_CHOICES = 4


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def make_item(item_id: str, question: str, answer: str, pool: list[str],
              seed_key: str, meta: dict, accepted: list[str] | None = None) -> dict | None:
    """Build one item, or None when the pool has fewer than three usable distractors.

    pool: candidate distractors (sorted, so the draw is deterministic);
    accepted: other forms of the right answer, which must not appear as distractors.
    """
    banned = {_norm(answer)} | {_norm(a) for a in (accepted or [])}
    if not answer.strip():
        return None
    r = rng(seed_key)
    picked: list[str] = []
    seen = set(banned)

    def consider(c: str) -> None:
        key = _norm(c)
        if c.strip() and key not in seen:
            seen.add(key)
            picked.append(c)

    # random draws first: pools can hold tens of thousands of lines, items as many
    for _ in range(8 * N_CHOICES):
        if len(picked) == N_CHOICES - 1 or not pool:
            break
        consider(pool[r.randrange(len(pool))])
    if len(picked) < N_CHOICES - 1:  # a small or crowded pool: scan it in a shuffled order
        order = list(range(len(pool)))
        r.shuffle(order)
        for i in order:
            if len(picked) == N_CHOICES - 1:
                break
            consider(pool[i])
    if len(picked) < N_CHOICES - 1:
        return None
    choices = picked + [answer]
    r.shuffle(choices)
    return {"id": item_id, "question": question, "choices": choices,
            "answer": choices.index(answer), "meta": meta}


def check_item(item: dict) -> str | None:
    """Why an item is invalid, or None: 4 distinct choices, answer an index among them."""
    choices = item.get("choices")
    if not isinstance(item.get("question"), str) or not item["question"].strip():
        return "no question"
    if not isinstance(choices, list) or len(choices) != N_CHOICES:
        return "not 4 choices"
    if len({_norm(c) for c in choices}) != N_CHOICES:
        return "choices not distinct"
    ans = item.get("answer")
    if not isinstance(ans, int) or not 0 <= ans < N_CHOICES:
        return "answer not an index of the choices"
    return None
