"""Diversity sampling (Index-1.9B: clustering to increase the diversity of the SFT set).

Prompts are turned into vectors (TF-IDF here, or sentence embeddings that the caller
passes in: any matrix with one row per prompt works), clustered with k-means, and a target number of
conversations is drawn *evenly across clusters*: every cluster gets the same quota,
clusters smaller than the quota give all they have and the rest is shared among the
larger ones (water-filling). Within a cluster the best-scored conversations go first
when there are scores (so this composes with reward filtering), else a seeded draw.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def tfidf(texts: Sequence[str], tokenizer: Callable[[str], list[str]] | None = None,
          max_features: int = 20000):
    """(sparse TF-IDF rows, l2-normalised and sublinear tf; the term of each column).
    Without a tokenizer: character 2-4-grams inside word boundaries, which work for any
    script (CJK included)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    kw = dict(tokenizer=tokenizer, token_pattern=None, lowercase=True) if tokenizer else \
        dict(analyzer="char_wb", ngram_range=(2, 4), lowercase=True)
    try:  # drop the very rare and the very common terms ...
        vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True, min_df=2, max_df=0.7, **kw)
        X = vec.fit_transform(texts)
    except ValueError:  # ... unless nothing would be left (tiny or uniform sets)
        vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True, **kw)
        X = vec.fit_transform(texts)
    return X, list(vec.get_feature_names_out())


def kmeans(X, k: int, seed: int) -> np.ndarray:
    """Cluster label per row (k clamped to the number of distinct rows)."""
    from sklearn.cluster import KMeans

    n = X.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = max(1, min(k, n))
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(X).astype(np.int64)


def even_quotas(sizes: Sequence[int], target: int) -> list[int]:
    """How many to take from each cluster so the total is min(target, sum) and the takes are
    as even as the sizes allow: take_i = min(size_i, L) for a common level L; the leftover
    units go one each to the largest clusters with room (ties: lower index)."""
    sizes = [int(s) for s in sizes]
    target = min(int(target), sum(sizes))
    lo, hi = 0, max(sizes, default=0)
    while lo < hi:  # largest integer level whose total does not exceed the target
        mid = (lo + hi + 1) // 2
        if sum(min(s, mid) for s in sizes) <= target:
            lo = mid
        else:
            hi = mid - 1
    take = [min(s, lo) for s in sizes]
    rest = target - sum(take)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        if rest == 0:
            break
        if take[i] < sizes[i]:
            take[i] += 1
            rest -= 1
    return take


def sample_evenly(labels: np.ndarray, target: int, priority: Sequence[int]) -> np.ndarray:
    """Boolean keep mask: `target` rows spread evenly over the clusters in `labels`; inside
    a cluster, rows are taken in `priority` order (a permutation of the row indices)."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    sizes = [int((labels == c).sum()) for c in ids]
    quota = dict(zip(ids.tolist(), even_quotas(sizes, target)))
    keep = np.zeros(len(labels), dtype=bool)
    for r in priority:
        c = int(labels[r])
        if quota[c] > 0:
            keep[r] = True
            quota[c] -= 1
    return keep


def cluster_sizes(labels: np.ndarray, keep: np.ndarray | None = None) -> dict[str, int]:
    labels = np.asarray(labels)
    sel = labels if keep is None else labels[keep]
    return {str(c): int((sel == c).sum()) for c in np.unique(labels)}


def top_terms(X, labels: np.ndarray, names: Sequence[str], n: int = 5) -> dict[str, list[str]]:
    """The heaviest TF-IDF terms of each cluster's mean row (to tell clusters apart in a report)."""
    out = {}
    for c in np.unique(labels):
        mean = np.asarray(X[labels == c].mean(axis=0)).ravel()
        out[str(c)] = [names[j] for j in np.argsort(-mean)[:n] if mean[j] > 0]
    return out


def central(M, labels: np.ndarray, texts: Sequence[str], max_chars: int = 160) -> dict[str, str]:
    """Each cluster's most central member: the row closest (dot product) to its cluster's mean row
    in the space the clustering used. A label that needs no vocabulary, so it reads as well for
    embedding clusters as for TF-IDF ones; cut to `max_chars`."""
    out = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rows = M[members]
        mean = np.asarray(rows.mean(axis=0)).ravel()
        sims = np.asarray(rows @ mean).ravel()
        text = " ".join(str(texts[members[int(np.argmax(sims))]]).split())
        out[str(c)] = text if len(text) <= max_chars else text[:max_chars - 3] + "..."
    return out
