"""Scoring dedup against planted near-duplicates, and datasketch as the MinHash reference
(tests and bench/dedup.py; datasketch is a dev dependency)."""
from __future__ import annotations

import numpy as np

from ..text import units


def planted_quality(keep: np.ndarray, orig: np.ndarray) -> tuple[float, float]:
    """(recall, precision) of the removals: planted copies (orig >= 0) should go, nothing else."""
    removed, planted = ~keep, orig >= 0
    hit = int((removed & planted).sum())
    return hit / max(int(planted.sum()), 1), hit / max(int(removed.sum()), 1)


def true_jaccard(texts: list[str], orig: np.ndarray, ngram: int = 5) -> np.ndarray:
    """Exact Jaccard of each planted copy's shingle set with its source's (nan elsewhere)."""
    from .minhash import Shingler

    sh = Shingler(ngram)
    out = np.full(len(texts), np.nan)
    for i in np.flatnonzero(orig >= 0):
        a, b = set(sh(texts[i]).tolist()), set(sh(texts[orig[i]]).tolist())
        out[i] = len(a & b) / max(len(a | b), 1)
    return out


def datasketch_keep(texts: list[str], cfg) -> np.ndarray:
    """datasketch MinHash + MinHashLSH at cfg's threshold, num_perm, seed and n-grams of the
    same units; a document's query results are linked to it and the lowest index of each
    connected component survives (as lmforge does), so only candidates and checks differ.
    datasketch's LSH picks bands x rows with equal false positive / negative weights."""
    from datasketch import MinHash, MinHashLSH
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    src, dst = [], []
    for i, t in enumerate(texts):
        u = units(t, lowercase=cfg.lowercase)
        n = min(cfg.ngram, len(u))
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch([" ".join(u[j:j + n]).encode() for j in range(len(u) - n + 1)])
        for j in lsh.query(m):
            src.append(i)
            dst.append(j)
        lsh.insert(i, m)
    n = len(texts)
    g = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    rep = np.full(lab.max() + 1, n)
    np.minimum.at(rep, lab, np.arange(n))
    return rep[lab] == np.arange(n)
