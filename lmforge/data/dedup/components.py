"""Connected components of the MinHash links without gathering the graph on one process:
alternating large-star / small-star rounds (Kiveris et al., "Connected Components in
MapReduce and Beyond", 2014), each round one task per node partition.

Every undirected edge {u, v} is stored twice, as row (u, v) in partition(u) and (v, u)
in partition(v), so a task sees every neighbour of its nodes. With m(u) = the smallest of
u and its neighbours:
- large-star: for each neighbour v > u, emit {v, m(u)};
- small-star: with N = the neighbours v < u (if any), emit {v, min N} for v in N and
  {u, min N}.
Both keep the components and shrink them towards stars around their smallest node. A
round that changes no edge in either half leaves a set of stars: every node's
representative is then its one smaller neighbour, or itself. O(log^2 n) rounds; each
task holds one partition's rows; the driver adds up counters.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .minhash import HIST_EDGES
from .partfiles import partition_of, read_partition, write_partitioned


def _grouped(files: list[Path], p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows (u, v) of partition p sorted by u then v, and m(u) per row."""
    u, v = (c.astype(np.int64) for c in read_partition(files, p, "u", "v"))
    if len(u):
        key = np.lexsort((v, u))
        u, v = u[key], v[key]
        new = np.ones(len(u), dtype=bool)
        new[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
        u, v = u[new], v[new]
    start = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.zeros(0, np.int64)
    low = np.minimum.reduceat(v, start) if len(u) else v  # smallest neighbour per node
    sizes = np.diff(np.r_[start, len(u)])
    return u, v, np.minimum(np.repeat(low, sizes), u)


def _emit(x: np.ndarray, y: np.ndarray, parts: int, out: Path) -> None:
    keep = x != y
    x, y = x[keep], y[keep]
    a, b = np.concatenate([x, y]), np.concatenate([y, x])
    write_partitioned(out, partition_of(a, parts), parts, u=a, v=b)


def star_task(kind: str, files: list[Path], p: int, parts: int, out: Path) -> dict:
    u, v, m = _grouped(files, p)
    if kind == "large":
        sel = v > u
        changed = int((m[sel] != u[sel]).sum())
        _emit(v[sel], m[sel], parts, out)
    else:
        sel = v < u
        u, v = u[sel], v[sel]
        # min over the smaller neighbours: v is sorted within each u, so the first one
        first = np.r_[True, u[1:] != u[:-1]] if len(u) else np.zeros(0, bool)
        low = np.repeat(v[first], np.diff(np.r_[np.flatnonzero(first), len(u)]))
        changed = int((v != low).sum())
        _emit(np.concatenate([v, u[first]]), np.concatenate([low, low[first]]), parts, out)
    return {"docs": 0, "bytes": 0, "changed": changed, "rows": int(len(u))}


def labels_task(files: list[Path], linked: list[Path], p: int, run_starts: np.ndarray,
                out: Path) -> dict:
    """After convergence: (node, representative) of the removed nodes of partition p,
    grouped by run of shards (run k holds the documents from run_starts[k]); the clusters
    (stars) centred here; the removed nodes' best linked similarity as a histogram."""
    u, v, _ = _grouped(files, p)
    removed = u[v < u]
    rep = v[v < u]
    assert len(np.unique(removed)) == len(removed), "components did not converge to stars"
    centres = len(np.unique(u[v > u]))
    lu, ls = read_partition(linked, p, "u", "sim")
    lu = lu.astype(np.int64)
    best = np.zeros(len(removed), dtype=np.float32)
    if len(lu):
        order = np.argsort(lu, kind="stable")
        lu, ls = lu[order], ls[order].astype(np.float32)
        start = np.flatnonzero(np.r_[True, lu[1:] != lu[:-1]])
        mx = np.maximum.reduceat(ls, start)
        best = mx[np.searchsorted(lu[start], removed)]
    run = np.searchsorted(run_starts, removed, side="right") - 1
    write_partitioned(out, run, len(run_starts), node=removed, rep=rep)
    hist = np.histogram(np.clip(best, 0.0, 1.0), bins=HIST_EDGES)[0]
    return {"docs": 0, "bytes": 0, "removed": int(len(removed)), "clusters": centres,
            "removed_hist": hist.astype(int).tolist()}


def rep_task(label_files: list[Path], k: int, shards: list[int], offsets: np.ndarray,
             outs: list[Path]) -> dict:
    """rep-SSSSS.npy of every shard of run k: the representative's global index of each
    document (its own index unless removed)."""
    from lmforge.io.atomic import save_npy

    node, r = (c.astype(np.int64) for c in read_partition(label_files, k, "node", "rep"))
    n = 0
    for i, out in zip(shards, outs):
        start, end = int(offsets[i]), int(offsets[i + 1])
        rep = np.arange(start, end, dtype=np.int64)
        sel = (node >= start) & (node < end)
        rep[node[sel] - start] = r[sel]
        save_npy(out, rep)
        n += end - start
    return {"docs": n, "bytes": 0}
