"""Synthetic preference pairs for DPO, built from real dialogs.

For every assistant turn of every conversation: prompt = the messages before it,
chosen = the real reply, rejected = one of
- "other":     a reply from another conversation in the same language (off-topic),
- "truncated": the first half of the real reply (words, or characters for Chinese),
- "shuffled":  the real reply with its words (characters) in a shuffled order.
Scores are fixed by the kind (real 1.0; other 0.0, shuffled 0.1, truncated 0.25) so the
DPO stage's filters (ties, low-scored pairs) have something to act on. These pairs are
synthetic: they teach "answer this conversation, fluently and completely", nothing more.
"""
from __future__ import annotations

import random

SCORES = {"chosen": 1.0, "other": 0.0, "shuffled": 0.1, "truncated": 0.25}
KIND_WEIGHTS = (("other", 0.6), ("truncated", 0.2), ("shuffled", 0.2))


def _units(text: str, lang: str) -> tuple[list[str], str]:
    return (list(text), "") if lang == "zh" else (text.split(), " ")


def _truncated(text: str, lang: str) -> str | None:
    units, sep = _units(text, lang)
    if len(units) < 4:
        return None
    return sep.join(units[: len(units) // 2])


def _shuffled(text: str, lang: str, r) -> str | None:
    units, sep = _units(text, lang)
    if len(set(units)) < 3:
        return None
    for _ in range(5):
        r.shuffle(units)
        out = sep.join(units)
        if out != text:
            return out
    return None


def _other(chosen: str, conv_id: str, pool: list[tuple[str, str]], r) -> str | None:
    for _ in range(20):
        cid, reply = pool[r.randrange(len(pool))]
        if cid != conv_id and reply.strip() != chosen.strip():
            return reply
    return None


def _pick_kind(r) -> str:
    x, acc = r.random(), 0.0
    for kind, w in KIND_WEIGHTS:
        acc += w
        if x < acc:
            return kind
    return KIND_WEIGHTS[-1][0]


def make_pairs(conversations: list[dict], seed: str) -> list[dict]:
    """conversations: SFT records {"id", "messages", "meta": {"lang", ...}}."""
    pools: dict[str, list[tuple[str, str]]] = {}
    for c in conversations:
        for m in c["messages"]:
            if m["role"] == "assistant":
                pools.setdefault(c["meta"]["lang"], []).append((c["id"], m["content"]))
    pairs = []
    for c in conversations:
        lang = c["meta"]["lang"]
        for j, m in enumerate(c["messages"]):
            if m["role"] != "assistant" or not m["content"].strip():
                continue
            r = random.Random(f"{seed}:dpo:{c['id']}:{j}")
            kind = _pick_kind(r)
            rejected = None
            if kind == "truncated":
                rejected = _truncated(m["content"], lang)
            elif kind == "shuffled":
                rejected = _shuffled(m["content"], lang, r)
            if rejected is None or rejected.strip() == m["content"].strip():
                kind, rejected = "other", _other(m["content"], c["id"], pools[lang], r)
            if rejected is None:
                continue
            pairs.append({"id": f"{c['id']}:{j}", "prompt": c["messages"][:j],
                          "chosen": m["content"], "rejected": rejected,
                          "score_chosen": SCORES["chosen"], "score_rejected": SCORES[kind],
                          "meta": {**c["meta"], "rejected_kind": kind, "synthetic": True}})
    return pairs
