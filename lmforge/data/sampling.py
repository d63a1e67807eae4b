"""Deterministic sampling shared by the data steps: reservoirs and per-document draws."""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import numpy as np


def keep_draw(seed: int | str, doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, document id)."""
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def reservoir(docs, k: int, seed: int) -> list[str]:
    """k texts sampled uniformly from a stream (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i, d in enumerate(docs):
        if len(out) < k:
            out.append(d["text"])
        else:
            j = int(rng.integers(0, i + 1))
            if j < k:
                out[j] = d["text"]
    return out


def stratified_reservoir(docs: Iterable[dict], key: Callable[[dict], str], k: int, seed: int,
                         max_chars: int) -> tuple[dict[str, list[tuple[str, str]]], dict[str, int]]:
    """Up to k (id, text[:max_chars]) per key, uniform within each key; and the count per key."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, str]]] = {}
    seen: dict[str, int] = {}
    for d in docs:
        g = key(d)
        i = seen.get(g, 0)
        seen[g] = i + 1
        bucket = out.setdefault(g, [])
        if i < k:
            bucket.append((str(d["id"]), d["text"][:max_chars]))
        else:
            j = int(rng.integers(0, i + 1))
            if j < k:
                bucket[j] = (str(d["id"]), d["text"][:max_chars])
    return out, seen
