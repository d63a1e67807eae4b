"""Exact-substring dedup as three executor maps (local processes or Ray): work linear in
the corpus, no pairs of parts, and a driver that holds counters and file names only.

The result is substring.py's definition: a K-byte window inside a document is "later"
when the same K bytes start at an earlier position of the corpus (shard order, then
document order, then byte order); removed_spans turns later windows into spans. Stages
(files under the step's work/shuffle/, deleted at the end):

1. window_task, one per shard: the shard's documents in chunks of whole documents
   (at most CHUNK_BYTES joined, or one larger document); for every window inside a
   document a row (key, pos): key = 64-bit hash of its bytes, pos = its start in the
   chunk (uint32). Rows are grouped by bucket = the top BITS bits of a second,
   independent hash of the window, text order within a bucket -> win-SSSSS.key / .pos
   (raw uint64 / uint32) and .off.npy (chunks x (2^BITS + 1) row offsets).
2. repeat_task, one per partition (a contiguous range of buckets, balanced by the row
   counts): every chunk's slice of that range, in global order (shard, chunk), through one
   hash table of keys; a key seen before marks its window later. The later positions go
   out grouped by chunk -> rep-PPPPP.pos (uint32) and .off.npy (global chunk offsets).
3. span_task, one per shard: for each chunk, the later positions from every partition,
   then removed_spans exactly as on one process -> work/spans-SSSSS.npy.

Equal windows have equal keys and buckets, so they meet in one repeat task, and rows
reach it in global order: the first occurrence is the one kept, as on one process.
Windows are not verified byte by byte (the earlier copy's bytes are in another task): two
different windows are confused only if both hashes collide, ~W^2 / (2 x P x 2^64) windows
over a corpus of W distinct windows and P partitions (docs/scale.md; 0.3 windows at
400 GB). tests/test_substring_shuffle.py checks the spans against substring.removal_spans.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import iter_shard
from .substring_kernels import mark_repeats, removed_spans, window_rows

BITS = 14  # buckets 2^14: at most that many partitions; a map task scatters into 2^14 runs
CHUNK_BYTES = 32 << 20  # text per chunk: a window task holds ~15 B per chunk byte
ROWS_PER_PARTITION = 1 << 25  # windows per repeat task: a table of ~12 B per window (~400 MB)
TABLE_LOAD = 2 / 3
MAX_CHUNK = (1 << 32) - 1  # positions are uint32


def _join(docs: list[bytes]) -> tuple[bytes, np.ndarray]:
    lens = np.array([len(b) + 1 for b in docs], dtype=np.int64)
    return b"\xff".join(docs) + b"\xff", np.concatenate([[0], np.cumsum(lens)])


def iter_chunks(shard: Path, chunk_bytes: int):
    """(index of the first document, [UTF-8 bytes of each document]) of consecutive whole
    documents, at most chunk_bytes joined (a larger document forms a chunk alone). Both the
    window and the span task cut a shard with this, so their chunks are the same."""
    docs, size, first = [], 0, 0
    for i, d in enumerate(iter_shard(shard)):
        b = d["text"].encode("utf-8")
        if docs and size + len(b) + 1 > chunk_bytes:
            yield first, docs
            docs, size, first = [], 0, i
        docs.append(b)
        size += len(b) + 1
    if docs:
        yield first, docs


def _paths(prefix: Path) -> tuple[Path, Path, Path]:
    return (prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pos"),
            prefix.with_name(prefix.name + ".off.npy"))


def _read(f, dtype, a: int, b: int) -> np.ndarray:
    f.seek(a * np.dtype(dtype).itemsize)
    return np.fromfile(f, dtype=dtype, count=b - a)


def window_task(shard: Path, k: int, chunk_bytes: int, out: Path) -> dict:
    """Stage 1 for one shard (module docstring)."""
    key_path, pos_path, off_path = _paths(out)
    offs, rows, docs, nbytes = [], 0, 0, 0
    tmp_key, tmp_pos = key_path.with_name(key_path.name + ".tmp"), pos_path.with_name(pos_path.name + ".tmp")
    with open(tmp_key, "wb") as fk, open(tmp_pos, "wb") as fp:
        for _, chunk in iter_chunks(shard, chunk_bytes):
            buf, offsets = _join(chunk)
            if len(buf) > MAX_CHUNK:
                raise ValueError(f"{shard}: a document of {len(buf) - 1} bytes; substring dedup "
                                 f"takes documents below {MAX_CHUNK} bytes (lower max_doc_bytes)")
            key, pos, off = window_rows(np.frombuffer(buf, np.uint8), offsets, k, BITS)
            key.tofile(fk)
            pos.tofile(fp)
            offs.append(off + rows)
            rows += len(key)
            docs += len(chunk)
            nbytes += len(buf) - len(chunk)
    os.replace(tmp_key, key_path)
    os.replace(tmp_pos, pos_path)
    save_npy(off_path, np.stack(offs) if offs else np.zeros((0, (1 << BITS) + 1), np.int64))
    return {"docs": docs, "bytes": nbytes, "chunks": len(offs), "windows": rows}


def repeat_task(folder: Path, n_shards: int, lo: int, hi: int, n_rows: int, n_chunks: int,
                out: Path) -> dict:
    """Stage 2 for buckets [lo, hi): n_rows windows in all (sizes the table), n_chunks
    chunks in the corpus (the output's offsets)."""
    table = np.zeros(max(64, int(n_rows / TABLE_LOAD) + 1), np.uint64)
    out_off = np.zeros(n_chunks + 1, np.int64)
    _, pos_out, off_out = _paths(out)
    tmp = pos_out.with_name(pos_out.name + ".tmp")
    c = found = 0
    with open(tmp, "wb") as fo:
        for s in range(n_shards):
            key_path, pos_path, off_path = _paths(folder / f"win-{s:05d}")
            off = np.load(off_path, mmap_mode="r")
            a, b = np.array(off[:, lo]), np.array(off[:, hi])  # two columns, not the file
            del off
            with open(key_path, "rb") as fk, open(pos_path, "rb") as fp:
                for g in range(len(a)):
                    keys = _read(fk, np.uint64, int(a[g]), int(b[g]))
                    later = np.zeros(len(keys), np.bool_)
                    n = mark_repeats(keys, table, later)
                    if n:
                        _read(fp, np.uint32, int(a[g]), int(b[g]))[later].tofile(fo)
                    found += n
                    out_off[c + 1] = out_off[c] + n
                    c += 1
    assert c == n_chunks, (c, n_chunks)
    os.replace(tmp, pos_out)
    save_npy(off_out, out_off)
    return {"docs": 0, "bytes": 0, "windows": n_rows, "later": found}


def span_task(shard: Path, k: int, chunk_bytes: int, chunk0: int, folder: Path, n_parts: int,
              keep_layout: bool, out: Path) -> dict:
    """Stage 3 for one shard whose first chunk is global chunk chunk0."""
    rows, docs, nbytes, n_layout, layout_bytes = [], 0, 0, 0, 0
    for g, (first, chunk) in enumerate(iter_chunks(shard, chunk_bytes)):
        buf, offsets = _join(chunk)
        later = np.zeros(len(buf), np.bool_)
        for p in range(n_parts):
            _, pos_path, off_path = _paths(folder / f"rep-{p:05d}")
            off = np.load(off_path, mmap_mode="r")
            a, b = int(off[chunk0 + g]), int(off[chunk0 + g + 1])
            del off
            if b > a:
                with open(pos_path, "rb") as fp:
                    later[_read(fp, np.uint32, a, b)] = True
        spans, nl, lb = removed_spans(np.frombuffer(buf, np.uint8), later, offsets, k, keep_layout)
        spans[:, 0] += first
        rows.append(spans)
        docs, nbytes = docs + len(chunk), nbytes + len(buf) - len(chunk)
        n_layout, layout_bytes = n_layout + int(nl), layout_bytes + int(lb)
    spans = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)
    save_npy(out, spans)
    return {"docs": docs, "bytes": nbytes, "spans": int(len(spans)),
            "span_bytes": int((spans[:, 2] - spans[:, 1]).sum()) if len(spans) else 0,
            "layout_spans_kept": n_layout, "layout_bytes_kept": layout_bytes}


def bucket_ranges(counts: np.ndarray, parts: int) -> np.ndarray:
    """Edges 0 = e0 < e1 < ... = len(counts) of at most `parts` contiguous bucket ranges
    with about equal row counts (a range is never empty unless all are)."""
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    if total == 0:
        return np.array([0, len(counts)])
    inner = np.searchsorted(cum, np.arange(1, parts) * total / parts, side="left") + 1
    return np.unique(np.concatenate([[0], np.clip(inner, 1, len(counts)), [len(counts)]]))


def shuffle_spans(ctx, k: int, keep_layout: bool, partitions: int | None = None,
                  chunk_bytes: int = CHUNK_BYTES) -> dict:
    """The three stages over ctx.inputs with ctx.executor; writes work/spans-SSSSS.npy.
    Returns the step's figures. The driver holds one int per shard and one per bucket."""
    sub, run, name, m = ctx.work / "shuffle", ctx.executor.map, ctx.dir.name, len(ctx.inputs)
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir(parents=True)
    got = run(window_task, [(ctx.inputs[s], k, chunk_bytes, sub / f"win-{s:05d}") for s in range(m)],
              desc=f"{name} windows")
    chunk0 = np.concatenate([[0], np.cumsum([g["chunks"] for g in got])]).astype(np.int64)
    counts = np.zeros(1 << BITS, np.int64)
    for s in range(m):  # one file at a time: the driver's memory does not grow with m
        off = np.load(_paths(sub / f"win-{s:05d}")[2])
        counts += (off[:, 1:] - off[:, :-1]).sum(axis=0)
        del off
    windows = int(counts.sum())
    want = partitions or max(1, -(-windows // ROWS_PER_PARTITION))
    edges = bucket_ranges(counts, min(want, 1 << BITS))
    cum = np.concatenate([[0], np.cumsum(counts)])
    n_parts = len(edges) - 1
    reps = run(repeat_task, [(sub, m, int(edges[p]), int(edges[p + 1]),
                              int(cum[edges[p + 1]] - cum[edges[p]]), int(chunk0[-1]),
                              sub / f"rep-{p:05d}") for p in range(n_parts)],
               desc=f"{name} repeated windows")
    spans = run(span_task, [(ctx.inputs[s], k, chunk_bytes, int(chunk0[s]), sub, n_parts,
                             keep_layout, ctx.work / f"spans-{s:05d}.npy") for s in range(m)],
                desc=f"{name} spans")
    shutil.rmtree(sub)
    total = sum(g["bytes"] for g in got)
    removed = sum(g["span_bytes"] for g in spans)
    return {"partitions": n_parts, "windows": windows,
            "later_windows": sum(r["later"] for r in reps),
            "spans": sum(g["spans"] for g in spans), "span_bytes": removed,
            "span_fraction": round(removed / max(total, 1), 6),
            "layout_spans_kept": sum(g["layout_spans_kept"] for g in spans),
            "layout_bytes_kept": sum(g["layout_bytes_kept"] for g in spans)}
