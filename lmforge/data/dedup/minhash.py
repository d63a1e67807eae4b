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
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import Step, iter_shard
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


def signatures_of_texts(texts, cfg) -> np.ndarray:
    sh = Shingler(cfg.ngram, cfg.lowercase)
    return MinHasher(cfg.num_perm, cfg.seed).signatures([sh(t) for t in texts])


def _sig_chunk(texts, cfg):
    return signatures_of_texts(texts, cfg)


def parallel_signatures(texts: list[str], cfg, workers: int = 1, chunk: int = 2000) -> np.ndarray:
    """Signatures of many texts, computed in `workers` processes (same result as 1)."""
    if workers <= 1 or len(texts) <= chunk:
        return signatures_of_texts(texts, cfg)
    import multiprocessing as mp

    parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    with mp.get_context("fork").Pool(workers) as pool:
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


def clusters(sigs: np.ndarray, bands: int, rows: int, threshold: float | None = None
             ) -> np.ndarray:
    """Cluster representative (lowest index in its cluster) for each document.

    Documents without shingles (all-EMPTY signatures) are their own cluster.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(sigs)
    valid = ~np.all(sigs == EMPTY, axis=1)
    docs = np.flatnonzero(valid)
    src, dst = [], []
    for band in range(bands):
        keys = _band_keys(sigs[docs, band * rows:(band + 1) * rows])
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        head = first[inv]  # position (in docs) of the bucket's first document
        linked = head != np.arange(len(docs))
        src.append(docs[linked])
        dst.append(docs[head[linked]])
    src = np.concatenate(src) if src else np.zeros(0, np.int64)
    dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    if threshold is not None and len(src):
        agree = (sigs[src] == sigs[dst]).mean(axis=1)
        src, dst = src[agree >= threshold], dst[agree >= threshold]
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    rep = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(rep, labels, np.arange(n))
    return rep[labels]


def dedup_signatures(sigs: np.ndarray, cfg) -> np.ndarray:
    """Representative index per document; a document is kept iff rep[i] == i."""
    b, r = bands_rows(cfg)
    return clusters(sigs, b, r, cfg.threshold if cfg.verify else None)


def dedup_texts(texts: list[str], cfg, workers: int = 1) -> np.ndarray:
    """Boolean keep mask over texts (first document of each near-duplicate cluster)."""
    rep = dedup_signatures(parallel_signatures(texts, cfg, workers), cfg)
    return rep == np.arange(len(texts))


# ------------------------------------------------------------------ pipeline step


def _shard_signatures(cfg, shard, out) -> dict:
    texts = [d["text"] for d in iter_shard(shard)]
    sigs = signatures_of_texts(texts, cfg)
    save_npy(out, sigs)
    return {"docs": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts)}


class MinhashStep(Step):
    def prepare(self, ctx) -> dict:
        paths = [ctx.work / f"sig-{i:05d}.npy" for i in range(len(ctx.inputs))]
        todo = [(self.cfg, ctx.inputs[i], paths[i]) for i in range(len(paths))
                if not paths[i].exists()]  # resumable: signatures already made are kept
        ctx.executor.map(_shard_signatures, todo, desc=f"{ctx.dir.name} signatures")
        sigs = [np.load(p) for p in paths]
        counts = [len(s) for s in sigs]
        rep = dedup_signatures(np.concatenate(sigs) if sigs else np.zeros((0, 1), np.uint32),
                               self.cfg)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for i in range(len(paths)):
            save_npy(ctx.work / f"rep-{i:05d}.npy", rep[offsets[i]:offsets[i + 1]])
        b, r = bands_rows(self.cfg)
        n_dup = int((rep != np.arange(len(rep))).sum())
        return {"bands": b, "rows": r, "clusters_with_duplicates":
                int(len(np.unique(rep[rep != np.arange(len(rep))]))), "duplicates": n_dup}

    def open_shard(self, ctx, index):
        rep = np.load(ctx.work / f"rep-{index:05d}.npy")
        offset = sum(len(np.load(ctx.work / f"rep-{i:05d}.npy", mmap_mode="r"))
                     for i in range(index))

        def apply(i, doc):
            g = offset + i
            if rep[i] != g:
                doc["meta"]["duplicate_of_index"] = int(rep[i])
                return None, "minhash_duplicate"
            return doc, None
        return apply
