"""Topical coherence: are a document's consecutive passages about the same thing?

Article spinners and Markov chains splice fragments of several pages; each fragment reads
fluently, so the quality model's n-grams and dense measures pass them (an order-2 Markov
chain over English held-out text was kept 55-92%: docs/quality-topics.md). Neighbouring
passages of such text are about different things. The measure: the document's first
MAX_PASSAGES passages of WORDS words, embedded with the shipped sentence model
(all-MiniLM-L6-v2, embed.py), and the mean cosine of adjacent passages. An English model:
Chinese passages get character pieces and separate poorly, so the rule is set per language.
Documents with fewer than MIN_PASSAGES passages are not judged (None).
"""
from __future__ import annotations

import numpy as np

WORDS, CJK_CHARS, MAX_PASSAGES, MIN_PASSAGES = 24, 48, 8, 3


def passages(text: str) -> list[str]:
    """Consecutive passages of WORDS words (CJK-heavy text: CJK_CHARS characters)."""
    from .text import is_cjk

    flat = " ".join(text.split())
    if is_cjk(flat):
        return [flat[i:i + CJK_CHARS] for i in range(0, len(flat) - CJK_CHARS + 1, CJK_CHARS)][:MAX_PASSAGES]
    w = flat.split(" ")
    return [" ".join(w[i:i + WORDS]) for i in range(0, len(w) - WORDS + 1, WORDS)][:MAX_PASSAGES]


def adjacent_similarity(texts: list[str], batch_size: int = 64) -> list[float | None]:
    """Mean cosine of adjacent passages per text (None: under MIN_PASSAGES passages); one
    embedding call for all passages of all texts."""
    from .embed import embed

    parts = [passages(t) for t in texts]
    flat = [p for ps in parts for p in ps if len(ps) >= MIN_PASSAGES]
    E = embed(flat, batch_size=batch_size, max_chars=400)   # unit length
    out, at = [], 0
    for ps in parts:
        if len(ps) < MIN_PASSAGES:
            out.append(None)
            continue
        e = E[at:at + len(ps)]
        at += len(ps)
        out.append(float(np.mean(np.sum(e[1:] * e[:-1], axis=1))))
    return out
