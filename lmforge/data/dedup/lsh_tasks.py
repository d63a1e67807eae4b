"""MinHash LSH as distributed stages (tasks for executor.map; the driver holds counters and
file names only). Stages and their files under the step's work/lsh/:

1. band_task, one per run of consecutive shards (at most max(P, workers) runs, so a
   bucket task opens that many files, not one per shard): for every band, (band key,
   global doc id) rows of the documents that have shingles, partitioned by key hash
   -> band-GGGGG.*.npy
2. bucket_task, one per partition: the rows of that partition from every shard; documents
   sharing a key are candidate pairs exactly as minhash.bucket_pairs makes them (all
   pairs up to max_bucket members, each member with the next max_bucket - 1 beyond);
   pairs partitioned by pair hash -> pairs-PPPP.*.npy
3. verify_task, one per partition: distinct pairs, estimated Jaccard from the signature
   files (memory-mapped), links at or above the threshold -> edges-PPPP.*.npy, each link
   in both directions, partitioned by its first node (the input of components.py).

Same candidate pairs, similarities and links as minhash.clusters on one process (a
cross-band key collision, ~2^-64 per pair, is the only way they can differ; `verify`
drops it); tests/test_minhash_distributed.py compares the kept sets and the stats.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .minhash import EMPTY, HIST_EDGES, _band_keys, bucket_pairs
from .partfiles import partition_of, read_partition, write_partitioned


class SigStore:
    """Rows of the signature matrix by global document index, read from the per-shard
    signature files (shard i's document k is row k // n_parts of part k % n_parts)."""

    def __init__(self, paths: list[list[Path]], offsets: np.ndarray):
        self.paths, self.offsets, self.n_parts = paths, offsets, len(paths[0]) if paths else 1

    def shard(self, i: int) -> np.ndarray:
        loaded = [np.load(p, mmap_mode="r") for p in self.paths[i]]
        whole = np.empty((sum(map(len, loaded)), loaded[0].shape[1]), dtype=np.uint32)
        for p, part in enumerate(loaded):
            whole[p::self.n_parts] = part
        return whole

    def rows(self, idx: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        local = idx - self.offsets[shard]
        first = np.load(self.paths[0][0], mmap_mode="r")
        out = np.empty((len(idx), first.shape[1]), dtype=np.uint32)
        for i in np.unique(shard):
            for p in range(self.n_parts):
                sel = np.flatnonzero((shard == i) & (local % self.n_parts == p))
                if len(sel):
                    out[sel] = np.load(self.paths[i][p], mmap_mode="r")[local[sel] // self.n_parts]
        return out


def band_task(store: SigStore, shards: list[int], bands: int, rows: int, parts: int,
              out: Path) -> dict:
    """Band rows of a run of consecutive shards (in order, so every bucket's members stay in
    global index order), partitioned by key hash into one file."""
    keys, ids, n = [], [], 0
    for i in shards:
        sigs = store.shard(i)
        n += len(sigs)
        docs = np.flatnonzero(~np.all(sigs == EMPTY, axis=1))
        for band in range(bands):
            k = _band_keys(sigs[docs, band * rows:(band + 1) * rows])
            keys.append(k * np.uint64(0x9E3779B97F4A7C15) + np.uint64(band))  # band in the key
            ids.append(docs + int(store.offsets[i]))
    key = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    doc = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    write_partitioned(out, partition_of(key, parts), parts, key=key, doc=doc)
    return {"docs": n, "bytes": 0}


def bucket_task(band_files: list[Path], p: int, max_bucket: int, parts: int, out: Path) -> dict:
    key, doc = read_partition(band_files, p, "key", "doc")
    # rows arrive shard by shard, each shard in document order per band, so a stable sort
    # by key leaves every bucket's members in global index order, as bucket_pairs needs
    i, j, capped, largest = bucket_pairs(key.astype(np.uint64), max_bucket)
    doc = doc.astype(np.int64)
    a, b = doc[i], doc[j]
    src, dst = np.minimum(a, b), np.maximum(a, b)
    src, dst = _unique_pairs(src, dst)
    write_partitioned(out, partition_of(src * np.int64(0x100000001B3) ^ dst, parts), parts,
                      src=src, dst=dst)
    return {"docs": 0, "bytes": 0, "capped": capped, "largest": largest}


def _unique_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    new = np.ones(len(src), dtype=bool)
    new[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    return src[new], dst[new]


def verify_task(store: SigStore, pair_files: list[Path], p: int, threshold: float | None,
                parts: int, out: Path, chunk: int = 1 << 15) -> dict:
    src, dst = (c.astype(np.int64) for c in read_partition(pair_files, p, "src", "dst"))
    src, dst = _unique_pairs(src, dst)
    sim = np.empty(len(src), dtype=np.float32)
    for k in range(0, len(src), chunk):  # chunk x num_perm x 8 bytes of signatures at a time
        sim[k:k + chunk] = (store.rows(src[k:k + chunk]) == store.rows(dst[k:k + chunk])).mean(axis=1)
    keep = sim >= threshold if threshold is not None else np.ones(len(src), dtype=bool)
    a, b, s = src[keep], dst[keep], sim[keep]
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    write_partitioned(out, partition_of(u, parts), parts, u=u, v=v, sim=np.concatenate([s, s]))
    rejected = np.histogram(np.clip(sim[~keep], 0.0, 1.0), bins=HIST_EDGES)[0]
    return {"docs": 0, "bytes": 0, "candidate_pairs": int(len(src)), "linked_pairs": int(keep.sum()),
            "rejected_hist": rejected.astype(int).tolist()}
