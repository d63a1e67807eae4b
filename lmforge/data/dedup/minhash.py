"""Document-level near-duplicate removal with MinHash LSH (Yi).

1. Shingles: n-grams of units (words; single characters in CJK text, so Chinese gets
   character n-grams). Each unit is hashed once (xxh32, cached); an n-gram's hash is a
   vectorised polynomial of its units' hashes, kept to 32 bits.
2. Signatures: num_perm universal hashes (a*x + b) mod (2^61 - 1) with a, b < 2^32,
   x < 2^32 (so a*x + b < 2^64: exact in uint64), low 32 bits, minimum per document.
   Vectorised over all shingles of a batch of documents; batches run in worker processes.
3. LSH: b bands of r rows, (b, r) minimising the weighted false positive + false
   negative area around the threshold (as datasketch's _optimal_param does). Documents
   sharing a band are linked to the band bucket's first document; with `verify`, a
   link whose signature agreement is below the threshold is dropped.
4. Connected components (scipy csgraph = union-find); the lowest global index of each
   cluster survives. Everything depends only on the seed: same seed, same removals.

Memory: 4 * num_perm bytes per document for the signatures (512 B at 128).

Signatures come from the compiled kernel (minhash_kernels.py, bit-identical to Shingler +
MinHasher here). `clusters` runs 3-4 on one process over an in-memory matrix; the
pipeline step (minhash_step.py) runs the same LSH and components as distributed stages.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..text import UNIT_RE

MERSENNE = np.uint64((1 << 61) - 1)
MAX32 = np.uint64(0xFFFFFFFF)
EMPTY = np.uint32(0xFFFFFFFF)
_CHUNK = 1 << 14  # shingles per vectorised batch: num_perm * _CHUNK * 8 bytes of scratch (16 MB)
# fixed odd 64-bit multipliers for combining unit hashes into n-gram hashes
_POLY = np.random.default_rng(0x5EED).integers(1, 1 << 63, size=64, dtype=np.uint64) | np.uint64(1)


# ------------------------------------------------------------------ parameters


def _integrate(f, a: float, b: float, n: int = 200) -> float:
    if b <= a:
        return 0.0
    x = np.linspace(a, b, n)
    y = f(x)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


@lru_cache(maxsize=64)
def optimal_param(threshold: float, num_perm: int, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising
    fp_weight * P(candidate | s < t) area + fn_weight * P(miss | s > t) area."""
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = _integrate(lambda s: (1 - s ** r) ** b, threshold, 1.0)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


# ------------------------------------------------------------------ shingles


class Shingler:
    def __init__(self, ngram: int = 5, lowercase: bool = True):
        import xxhash

        self.ngram, self.lowercase = ngram, lowercase
        self._h = xxhash.xxh32_intdigest
        self._cache: dict[str, int] = {}

    def _unit_hashes(self, text: str) -> np.ndarray:
        cache, h = self._cache, self._h
        if len(cache) > 2_000_000:
            cache.clear()
        out = []
        for u in UNIT_RE.findall(text.lower() if self.lowercase else text):
            v = cache.get(u)
            if v is None:
                v = cache[u] = h(u.encode("utf-8"))
            out.append(v)
        return np.asarray(out, dtype=np.uint64)

    def __call__(self, text: str) -> np.ndarray:
        """32-bit shingle hashes (as uint64) of one text; empty if it has no units."""
        u = self._unit_hashes(text)
        n = min(self.ngram, len(u))
        if n == 0:
            return u
        m = len(u) - n + 1
        acc = np.zeros(m, dtype=np.uint64)
        for k in range(n):  # wrapping uint64 arithmetic is intended
            acc += u[k:k + m] * _POLY[k % len(_POLY)]
        return acc >> np.uint64(32)


# ------------------------------------------------------------------ signatures


class MinHasher:
    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)[:, None]
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)[:, None]

    def _permute(self, x: np.ndarray) -> np.ndarray:
        """(num_perm, len(x)) uint32: ((a*x + b) mod (2^61-1)) & (2^32-1)."""
        v = self.a * x[None, :]
        v += self.b
        hi = v >> np.uint64(61)
        v &= MERSENNE
        v += hi  # Mersenne reduction: now v < 2p; one subtraction finishes the modulo:
        np.minimum(v, v - MERSENNE, out=v)  # v - p wraps to a huge value when v < p
        return v.astype(np.uint32)  # truncation = the low 32 bits

    def signatures(self, shingles: list[np.ndarray]) -> np.ndarray:
        """(n_docs, num_perm) uint32; a document without shingles gets all EMPTY."""
        out = np.full((len(shingles), self.num_perm), EMPTY, dtype=np.uint32)
        batch, idx, size = [], [], 0

        def flush():
            nonlocal batch, idx, size
            if not batch:
                return
            lens = np.array([len(s) for s in batch])
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            mins = np.minimum.reduceat(self._permute(np.concatenate(batch)), starts, axis=1)
            out[idx] = mins.T
            batch, idx, size = [], [], 0

        for i, s in enumerate(shingles):
            if len(s) == 0:
                continue
            if len(s) > _CHUNK:  # a long document on its own, in chunks
                sig = np.full(self.num_perm, EMPTY, dtype=np.uint32)
                for j in range(0, len(s), _CHUNK):
                    sig = np.minimum(sig, self._permute(s[j:j + _CHUNK]).min(axis=1))
                out[i] = sig
                continue
            if size + len(s) > _CHUNK:
                flush()
            batch.append(s)
            idx.append(i)
            size += len(s)
        flush()
        return out


def signatures_of_texts(texts, cfg, batch_bytes: int = 1 << 24) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures by the compiled kernel (minhash_kernels.py),
    bit-identical to MinHasher(...).signatures([Shingler(...)(t) for t in texts]), in
    batches of about `batch_bytes` of UTF-8 so its buffer stays bounded."""
    from . import minhash_kernels as K

    mh = MinHasher(cfg.num_perm, cfg.seed)
    a, b, classes = mh.a.ravel(), mh.b.ravel(), K.char_classes()
    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    i = 0
    while i < len(texts):
        chunk, size = [], 0
        while i + len(chunk) < len(texts) and (not chunk or size < batch_bytes):
            t = texts[i + len(chunk)]
            chunk.append((t.lower() if cfg.lowercase else t).encode("utf-8", "surrogatepass"))
            size += len(chunk[-1])
        offsets = np.zeros(len(chunk) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in chunk], out=offsets[1:])
        buf = np.frombuffer(b"".join(chunk), dtype=np.uint8)
        K.signatures(buf, offsets, classes, cfg.ngram, _POLY, a, b, out[i:i + len(chunk)])
        i += len(chunk)
    return out


def _sig_chunk(texts, cfg):
    return signatures_of_texts(texts, cfg)


def parallel_signatures(texts: list[str], cfg, workers: int = 1, chunk: int = 2000) -> np.ndarray:
    """Signatures of many texts, computed in `workers` processes (same result as 1)."""
    if workers <= 1 or len(texts) <= chunk:
        return signatures_of_texts(texts, cfg)
    from lmforge.workers import worker_pool

    parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    with worker_pool(workers) as pool:   # quiet workers; Ctrl-C cannot leave it half started
        sigs = pool.starmap(_sig_chunk, [(p, cfg) for p in parts])
    return np.concatenate(sigs)


# ------------------------------------------------------------------ LSH + clusters


def bands_rows(cfg) -> tuple[int, int]:
    if cfg.bands is not None:
        return cfg.bands, cfg.rows
    return optimal_param(cfg.threshold, cfg.num_perm, cfg.fp_weight, cfg.fn_weight)


def _band_keys(sig: np.ndarray) -> np.ndarray:
    """One uint64 per row of a (n, r) band; collisions are ~2^-64 and `verify` catches them."""
    key = np.zeros(len(sig), dtype=np.uint64)
    for k in range(sig.shape[1]):
        key = key * np.uint64(0x100000001B3) + sig[:, k].astype(np.uint64)
    return key


def bucket_pairs(keys: np.ndarray, max_bucket: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Index pairs (i < j) that share a key: every pair of a bucket of up to max_bucket
    members; in a larger bucket each member (in index order) pairs with the next
    max_bucket - 1. Returns (i, j, number of capped buckets, largest bucket)."""
    order = np.argsort(keys, kind="stable")  # stable: members in index order
    ks = keys[order]
    new = np.ones(len(ks), dtype=bool)
    new[1:] = ks[1:] != ks[:-1]
    start = np.flatnonzero(new)
    size = np.diff(np.append(start, len(ks)))
    member_end = np.repeat(start + size, size)
    live = np.flatnonzero(member_end - np.arange(len(ks)) > 1)  # sorted positions with a later member
    src, dst = [], []
    d = 1
    while len(live) and d < max_bucket:  # pairs at distance d inside a bucket
        live = live[live + d < member_end[live]]
        src.append(order[live])
        dst.append(order[live + d])
        d += 1
    capped, largest = int((size > max_bucket).sum()), int(size.max()) if len(size) else 0
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), capped, largest
    return (np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64), capped,
            largest)


def candidate_pairs(sigs: np.ndarray, docs: np.ndarray, bands: int, rows: int,
                    max_bucket: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unique (src < dst) document pairs that share at least one band bucket."""
    codes, capped, largest = [], 0, 0
    n = np.int64(len(sigs))
    for band in range(bands):
        keys = _band_keys(sigs[docs, band * rows:(band + 1) * rows])
        i, j, c, big = bucket_pairs(keys, max_bucket)
        capped, largest = capped + c, max(largest, big)
        a, b = docs[i], docs[j]
        codes.append(np.minimum(a, b) * n + np.maximum(a, b))
        codes = [np.unique(np.concatenate(codes))]  # bounded by the distinct pairs so far
    code = codes[0] if codes else np.zeros(0, np.int64)
    info = {"candidate_pairs": int(len(code)), "largest_bucket": largest,
            "capped_buckets": capped}
    return code // n, code % n, info


def agreement(sigs: np.ndarray, src: np.ndarray, dst: np.ndarray, chunk: int = 1 << 15
              ) -> np.ndarray:
    """Estimated Jaccard (share of equal signature entries) of each pair, in chunks so
    memory stays at chunk x num_perm x 9 bytes."""
    out = np.empty(len(src), dtype=np.float32)
    for k in range(0, len(src), chunk):
        out[k:k + chunk] = (sigs[src[k:k + chunk]] == sigs[dst[k:k + chunk]]).mean(axis=1)
    return out


HIST_EDGES = np.round(np.linspace(0.0, 1.0, 21), 2)  # 0.05-wide similarity bins


def _histogram(values: np.ndarray) -> list[int]:
    return np.histogram(np.clip(values, 0.0, 1.0), bins=HIST_EDGES)[0].astype(int).tolist()


def clusters(sigs: np.ndarray, bands: int, rows: int, threshold: float | None = None,
             max_bucket: int = 100, info: dict | None = None) -> np.ndarray:
    """Cluster representative (lowest index in its cluster) for each document.

    Candidates: every pair of documents sharing a band bucket (capped, bucket_pairs).
    With a threshold, a pair is linked only if its estimated Jaccard reaches it; the
    clusters are the connected components (union-find) of the links. Documents without
    shingles (all-EMPTY signatures) are their own cluster. `info`, if given, gets the
    pair counts and similarity histograms (removed documents: each one's highest
    estimated similarity to a document it is linked to; rejected candidate pairs).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(sigs)
    docs = np.flatnonzero(~np.all(sigs == EMPTY, axis=1))
    src, dst, stats = candidate_pairs(sigs, docs, bands, rows, max_bucket)
    sim = agreement(sigs, src, dst)
    keep = sim >= threshold if threshold is not None else np.ones(len(src), dtype=bool)
    graph = coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (src[keep], dst[keep])),
                       shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    rep = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(rep, labels, np.arange(n))
    rep = rep[labels]
    if info is not None:
        best = np.zeros(n, dtype=np.float32)  # highest linked similarity per document
        np.maximum.at(best, src[keep], sim[keep])
        np.maximum.at(best, dst[keep], sim[keep])
        removed = rep != np.arange(n)
        info.update(stats, linked_pairs=int(keep.sum()), similarity_histogram={
            "bin_edges": HIST_EDGES.tolist(), "removed_docs": _histogram(best[removed]),
            "rejected_candidate_pairs": _histogram(sim[~keep])})
    return rep


def dedup_signatures(sigs: np.ndarray, cfg, info: dict | None = None) -> np.ndarray:
    """Representative index per document; a document is kept iff rep[i] == i."""
    b, r = bands_rows(cfg)
    return clusters(sigs, b, r, cfg.threshold if cfg.verify else None, cfg.max_bucket, info)


def dedup_texts(texts: list[str], cfg, workers: int = 1, info: dict | None = None) -> np.ndarray:
    """Boolean keep mask over texts (first document of each near-duplicate cluster)."""
    rep = dedup_signatures(parallel_signatures(texts, cfg, workers), cfg, info)
    return rep == np.arange(len(texts))
