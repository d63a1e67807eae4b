"""The pipeline's MinHash step (Yi's document-level near-dedup) at any corpus size:
signatures per shard, then the distributed LSH stages (lsh_tasks.py) and connected
components (components.py) as executor maps, local or Ray. The driver holds counters and
file names only: O(shards + partitions), nothing per document. minhash.clusters is the
same computation on one process, kept for in-memory lists (SFT prompts, self-knowledge
samples); tests/test_minhash_distributed.py checks that both give the same result.
"""
from __future__ import annotations

import shutil

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import Step, iter_shard
from . import components as C
from . import lsh_tasks as L
from .minhash import HIST_EDGES, bands_rows, signatures_of_texts


# ------------------------------------------------------------------ pipeline step


_ROWS_PER_PARTITION = 1 << 23  # (key, doc) rows per LSH partition: ~0.4 GB per bucket task
_MAX_ROUNDS = 200  # star rounds; O(log^2 n) are needed (~2 x 15 at 10^9 nodes)


def _star_rounds(run, edges: list, parts: int, lsh, name: str) -> list:
    """Alternate large-star and small-star rounds until a round changes nothing; returns
    the files of the last round (stars around each component's smallest node)."""
    files = edges
    for rnd in range(_MAX_ROUNDS):
        changed = 0
        for kind in ("large", "small"):
            out = [lsh / f"{kind}{rnd:03d}-{p:05d}.npy" for p in range(parts)]
            got = run(C.star_task, [(kind, files, p, parts, out[p]) for p in range(parts)],
                      desc=f"{name} components {kind}-star {rnd}")
            changed += sum(g["changed"] for g in got)
            if files is not edges:
                for f in files:  # each round's files are read by the next round only
                    for g in f.parent.glob(f.name[:-len(".npy")] + ".*"):
                        g.unlink()
            files = out
        if changed == 0:
            return files
    raise RuntimeError(f"{name}: connected components did not converge in {_MAX_ROUNDS} rounds")


def _shard_signatures(cfg, shard, out, part: int = 0, n_parts: int = 1) -> dict:
    """Signatures of documents part, part + n_parts, ... of one shard, saved to `out`."""
    texts = [d["text"] for i, d in enumerate(iter_shard(shard)) if i % n_parts == part]
    sigs = signatures_of_texts(texts, cfg)
    save_npy(out, sigs)
    return {"docs": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts)}


class MinhashStep(Step):
    """Signatures per shard, then the distributed LSH stages (lsh_tasks.py) and connected
    components (components.py) as executor maps: the driver holds counters and file names
    only, whatever the number of documents. `clusters` above is the same computation on one
    process, kept for in-memory lists (SFT prompts, self-knowledge samples)."""

    def prepare(self, ctx) -> dict:
        paths, counts = self._signatures(ctx)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        save_npy(ctx.work / "offsets.npy", offsets)
        b, r = bands_rows(self.cfg)
        P = self.cfg.partitions or max(1, -(-int(offsets[-1]) * b // _ROWS_PER_PARTITION))
        lsh = ctx.work / "lsh"
        shutil.rmtree(lsh, ignore_errors=True)  # everything after the signatures is redone
        lsh.mkdir(parents=True)
        # runs of consecutive shards: each partition task reads one slice per run, so a
        # shuffle reads runs x P slices in all, not shards x P
        n_runs = max(1, min(len(paths), max(P, self.data.workers)))
        runs = [g.tolist() for g in np.array_split(np.arange(len(paths)), n_runs)]
        edges, stats = self._links(ctx, L.SigStore(paths, offsets), runs, b, r, P)
        stats.update(self._components(ctx, edges, runs, offsets, P))
        shutil.rmtree(lsh)  # intermediate shuffle files: the rep files are the result
        stats["similarity_histogram"] = {
            "bin_edges": HIST_EDGES.tolist(), "removed_docs": stats.pop("removed_hist").tolist(),
            "rejected_candidate_pairs": stats.pop("rejected_hist").tolist()}
        return {"bands": b, "rows": r, **stats, "lsh_partitions": P}

    def _signatures(self, ctx) -> tuple[list[list], list[int]]:
        # Fewer shards than workers: each shard is split (document i to part i % n_parts)
        # so every worker has signatures to compute; the result does not depend on it.
        n_parts = max(1, -(-self.data.workers // max(len(ctx.inputs), 1)))
        paths = [[ctx.work / f"sig-{i:05d}-{p}of{n_parts}.npy" for p in range(n_parts)]
                 for i in range(len(ctx.inputs))]
        todo = [(self.cfg, ctx.inputs[i], paths[i][p], p, n_parts)
                for i in range(len(paths)) for p in range(n_parts)
                if not paths[i][p].exists()]  # resumable: signatures already made are kept
        ctx.executor.map(_shard_signatures, todo, desc=f"{ctx.dir.name} signatures")
        return paths, [sum(len(np.load(p, mmap_mode="r")) for p in parts) for parts in paths]

    def _links(self, ctx, store, runs: list, b: int, r: int, P: int) -> tuple[list, dict]:
        """Bands -> buckets -> verified links (files partitioned by node), and their counts."""
        lsh, run, name = ctx.work / "lsh", ctx.executor.map, ctx.dir.name
        band = [lsh / f"band-{k:05d}.npy" for k in range(len(runs))]
        run(L.band_task, [(store, g, b, r, P, band[k]) for k, g in enumerate(runs)],
            desc=f"{name} LSH bands")
        pairs = [lsh / f"pairs-{p:05d}.npy" for p in range(P)]
        got = run(L.bucket_task, [(band, p, self.cfg.max_bucket, P, pairs[p]) for p in range(P)],
                  desc=f"{name} LSH buckets")
        edges = [lsh / f"edges-{p:05d}.npy" for p in range(P)]
        threshold = self.cfg.threshold if self.cfg.verify else None
        ver = run(L.verify_task, [(store, pairs, p, threshold, P, edges[p]) for p in range(P)],
                  desc=f"{name} verify pairs")
        return edges, {"candidate_pairs": sum(v["candidate_pairs"] for v in ver),
                       "largest_bucket": max([g["largest"] for g in got] or [0]),
                       "capped_buckets": sum(g["capped"] for g in got),
                       "linked_pairs": sum(v["linked_pairs"] for v in ver),
                       "rejected_hist": np.sum([v["rejected_hist"] for v in ver], axis=0)}

    def _components(self, ctx, edges: list, runs: list, offsets: np.ndarray, P: int) -> dict:
        """Star rounds -> labels -> work/rep-*.npy; the cluster counts and histograms."""
        lsh, run, name = ctx.work / "lsh", ctx.executor.map, ctx.dir.name
        files = _star_rounds(run, edges, P, lsh, name)
        labels = [lsh / f"labels-{p:05d}.npy" for p in range(P)]
        run_starts = offsets[[g[0] if g else len(offsets) - 1 for g in runs]]
        lab = run(C.labels_task, [(files, edges, p, run_starts, labels[p]) for p in range(P)],
                  desc=f"{name} components")
        run(C.rep_task, [(labels, k, g, offsets, [ctx.work / f"rep-{i:05d}.npy" for i in g])
                         for k, g in enumerate(runs)], desc=f"{name} representatives")
        return {"clusters_with_duplicates": sum(g["clusters"] for g in lab),
                "duplicates": sum(g["removed"] for g in lab),
                "removed_hist": np.sum([g["removed_hist"] for g in lab], axis=0)}

    def open_shard(self, ctx, index):
        rep = np.load(ctx.work / f"rep-{index:05d}.npy")
        # one small file, not a header read of every earlier shard's rep file (O(shards^2))
        offset = int(np.load(ctx.work / "offsets.npy", mmap_mode="r")[index])

        def apply(i, doc):
            g = offset + i
            if rep[i] != g:
                doc["meta"]["duplicate_of_index"] = int(rep[i])
                return None, "minhash_duplicate"
            return doc, None
        return apply
