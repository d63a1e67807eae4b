"""Dedup benchmark: lmforge MinHash LSH vs datasketch, and exact-substring dedup MB/s.

    .venv/bin/python bench/dedup.py [--docs 4000] [--substring-mb 8] [--workers 2]

MinHash: the same generated corpus (planted near-copies with 1% of units edited, 20%
CJK) and the same settings (threshold 0.8, 128 permutations, word 5-grams / CJK
character 5-grams; datasketch picks the same bands x rows) for both; datasketch's
candidates are clustered the same way (union-find, lowest index survives), so the
recall/precision columns show the comparison is at equal recall.

Substring: the suffix-array path against a pure-Python reference (a set of every
K-byte window, the definition itself) on a slice small enough for the reference.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lmforge.data.config import MinhashConfig
from lmforge.data.dedup import minhash, substring
from lmforge.data.dedup.synthetic import near_duplicates
from lmforge.data.text import units  # noqa: E402


def quality(keep: np.ndarray, orig: np.ndarray) -> tuple[float, float]:
    removed, planted = ~keep, orig >= 0
    hit = (removed & planted).sum()
    return hit / max(planted.sum(), 1), hit / max(removed.sum(), 1)


def run_datasketch(texts: list[str], cfg: MinhashConfig) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    src, dst = [], []
    for i, t in enumerate(texts):
        u = units(t, lowercase=True)
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


def bench_minhash(n_docs: int, workers: int) -> None:
    texts, orig = near_duplicates(n_docs, dup_fraction=0.2, edit=0.01, seed=0)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    cfg = MinhashConfig(threshold=0.8, num_perm=128, ngram=5)
    rows = []
    for name, fn in [("datasketch MinHash+MinHashLSH", lambda: run_datasketch(texts, cfg)),
                     ("lmforge, 1 process", lambda: minhash.dedup_texts(texts, cfg, 1)),
                     (f"lmforge, {workers} processes", lambda: minhash.dedup_texts(texts, cfg, workers))]:
        t = time.perf_counter()
        keep = fn()
        dt = time.perf_counter() - t
        rows.append((name, dt, *quality(keep, orig)))
    base = rows[0][1]
    print(f"\nMinHash LSH: {n_docs} docs, {mb:.1f} MB, threshold 0.8, 128 perms, "
          f"bands x rows = {minhash.bands_rows(cfg)}")
    print(f"{'implementation':34s} {'seconds':>8s} {'docs/s':>9s} {'speedup':>8s} {'recall':>7s} {'precision':>9s}")
    for name, dt, rec, prec in rows:
        print(f"{name:34s} {dt:8.2f} {n_docs / dt:9.0f} {base / dt:7.1f}x {rec:7.3f} {prec:9.3f}")


def brute_force(texts: list[str], k: int) -> int:
    seen, removed = set(), 0
    for t in texts:
        d = t.encode()
        rm = bytearray(len(d))
        for i in range(len(d) - k + 1):
            w = d[i:i + k]
            if w in seen:
                rm[i:i + k] = b"\x01" * k
            seen.add(w)
        removed += sum(rm)
    return removed


def bench_substring(target_mb: float, k: int = 100) -> None:
    texts, _ = near_duplicates(200, dup_fraction=0.3, seed=1)
    boiler = "Select month: January February March April May June July August September " \
             "October November December. "
    corpus, size = [], 0
    rng = np.random.default_rng(0)
    while size < target_mb * 1e6:  # repeats across and within documents, like web pages
        t = texts[int(rng.integers(len(texts)))]
        doc = boiler + t[: int(rng.integers(min(200, len(t)), len(t) + 1))] + " " + str(size)
        corpus.append(doc)
        size += len(doc.encode())
    small = corpus[: max(1, len(corpus) // 40)]
    small_mb = sum(len(t.encode()) for t in small) / 1e6
    t = time.perf_counter()
    brute_force(small, k)
    bt = time.perf_counter() - t
    t = time.perf_counter()
    substring.dedup_texts(small, k)
    st = time.perf_counter() - t
    t = time.perf_counter()
    out = substring.dedup_texts(corpus, k)
    ft = time.perf_counter() - t
    kept = sum(len(o.encode()) for o in out) / 1e6
    print(f"\nExact substring dedup, K = {k} bytes")
    print(f"{'implementation':34s} {'MB':>6s} {'seconds':>8s} {'MB/s':>7s} {'speedup':>8s}")
    print(f"{'python set of K-windows (ref)':34s} {small_mb:6.2f} {bt:8.2f} {small_mb / bt:7.2f} {1:7.1f}x")
    print(f"{'lmforge suffix array':34s} {small_mb:6.2f} {st:8.2f} {small_mb / st:7.2f} {bt / st:7.1f}x")
    print(f"{'lmforge suffix array':34s} {size / 1e6:6.2f} {ft:8.2f} {size / 1e6 / ft:7.2f} "
          f"{(size / 1e6 / ft) / (small_mb / bt):7.1f}x   ({kept:.2f} MB kept)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--substring-mb", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    bench_minhash(a.docs, a.workers)
    bench_substring(a.substring_mb)


if __name__ == "__main__":
    main()
