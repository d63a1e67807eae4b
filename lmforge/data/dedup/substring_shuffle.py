"""Exact-substring dedup as three executor maps (local processes or Ray): work linear in
the corpus, no pairs of parts, and a driver that holds counters and file names only.

The result is substring.py's definition: a K-byte window inside a document is "later"
when the same K bytes start at an earlier position of the corpus (shard order, then
document order, then byte order); removed_spans turns later windows into spans. Stages
(files under the step's work/shuffle/, deleted at the end):

1. window_task, one per shard: the shard's documents in chunks of whole documents
   (at most CHUNK_BYTES joined, or one larger document); for every window inside a
   document a row: key = 64-bit hash of its K bytes. Rows are grouped by bucket = the top
   `bits` bits of a second, independent hash of the window, text order within a bucket;
   positions are not stored (stage 3 recomputes the order from the ids below) ->
   win-SSSSS.bin (uint64) and .off.npy (chunks x (2^bits + 1) row offsets); the chunks'
   joined bytes -> txt-SSSSS.bin and .off.npy (byte start and first document of each
   chunk); each window's bucket in text order -> txt-SSSSS.ids (uint16). The kernel
   writes keys and ids into scratch buffers; these three files go to disk in whole blocks
   with O_DIRECT where the filesystem takes it (blockio.py: no page cache, which cost
   more CPU than the rest of the stage's system time), written in the background.
2. repeat_task, one per partition (a contiguous range of buckets, balanced by the row
   counts): every chunk's slice of that range, in corpus order (shard, chunk); a key seen
   at an earlier row marks its row. Equal keys share a bucket, so buckets are processed in
   groups with a cache-sized hash table each; the range is read (blockio) in sub-ranges,
   the next while the current one is marked. One bit per row goes back, per chunk ->
   rep-PPPPP.bin (packed bits) and .off.npy (byte offsets per global chunk).
3. span_task, one per shard: the shard's bits from every partition (one read each); for
   each chunk (read back from txt-SSSSS.bin, not decoded from the shard again), its rows'
   bits (still packed) mapped back to window positions with the saved bucket ids
   (later_from_bits: no hash computed again), then removed_spans exactly as on one
   process -> work/spans-SSSSS.npy.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import iter_shard
from .blockio import ALIGN, BlockReader, BlockWriter, release_scratch, scratch
from .substring_kernels import (SEP, later_from_bits, mark_repeats, n_windows, removed_spans,
                                window_rows)

# buckets: 2^12, or 2^16 when the shards take more than BIG_STORED bytes on disk. A window
# task scatters its rows into that many runs (2^12: 0.8 s per 50 MB, 2^14: 1.2 s; measured);
# partitions are ranges of buckets, so at most that many, of ~W / 2^bits windows at least
BITS, BIG_BITS, BIG_STORED = 12, 16, 32 << 30
CHUNK_BYTES = 32 << 20  # text per chunk: a window task holds ~10 B per chunk byte
ROWS_PER_PARTITION = 1 << 25  # windows per repeat task: ~9 B each (keys + flags): ~300 MB
GROUP_ROWS = 1 << 15  # rows per hash table of a repeat task: a 1 MB table stays in cache
# rows per slot. ns per row of mark_repeats on 40M rows of real text (2026-12-06): 2^16 rows
# at 1/2 7.0-7.4, at 1/4 (2 MB) 5.8-6.0; 2^15 at 1/4 5.4-5.5, at 1/5 5.2-5.4, at 1/3 6.1-6.3;
# 2^14 at 1/4 5.6-5.7 (fewer probes, fewer mispredicted branches; 2/3 took 9.5-9.8)
TABLE_LOAD = 1 / 4
MAX_CHUNK = (1 << 32) - 1  # positions are uint32
# sub-ranges of a repeat task (the first one's read is not hidden), while a chunk's rows of
# each stay above READ_MIN bytes on average: at 400 GB a chunk has ~13 KB in a partition,
# and smaller reads would mostly read the blocks around them (2 x 4 KB per read)
READ_PARTS, READ_MIN = 4, 1 << 20


def _join(docs: list[bytes]) -> tuple[bytes, np.ndarray]:
    """Join with 0xFF; returns the buffer and each document's start offset (+ end)."""
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


def _ids_path(text: Path) -> Path:
    """The bucket of every window of a shard, uint16 in text order (beside its text)."""
    return text.with_name(text.name + ".ids")


def _paths(prefix: Path) -> tuple[Path, Path]:
    """The data file (raw rows) and the offsets file of a stage's output."""
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".off.npy")


def _mapped(path: Path, dtype) -> np.ndarray:
    """A stage's raw file as a read-only array, memory-mapped (the repeat bits: 1/8 B per
    window, small beside the files that blockio reads)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype)
    return np.asarray(np.memmap(path, dtype, mode="r"))


def _rows(path: Path, mapped: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of a mapped file (a read-only view)."""
    if b > len(mapped):
        raise RuntimeError(f"{path}: shorter than its offsets say; delete the step folder and rerun")
    return mapped[a:b]


def window_task(shard: Path, k: int, chunk_bytes: int, bits: int, out: Path, text: Path) -> dict:
    """Stage 1 for one shard: keys of every window, chunk by chunk, in bucket order; the
    chunks' joined bytes go to `text` for stage 3 (reading them back costs less than
    decoding the shard again). The kernel writes keys and ids into scratch buffers, which
    go to the files in whole blocks (blockio: no page cache where O_DIRECT is taken)."""
    key_path, off_path = _paths(out)
    txt_path, idx_path = _paths(text)
    ids_path = _ids_path(text)
    offs, rows, docs, nbytes, idx = [], 0, 0, 0, [(0, 0)]
    tmp, ttmp, itmp = (p.with_name(p.name + ".tmp") for p in (key_path, txt_path, ids_path))
    with BlockWriter(tmp, "u64") as fk, BlockWriter(ttmp, "txt") as ft, \
            BlockWriter(itmp, "u16") as fi:
        for _, chunk in iter_chunks(shard, chunk_bytes):
            buf, offsets = _join(chunk)
            if len(buf) > MAX_CHUNK:
                raise ValueError(f"{shard}: a document of {len(buf) - 1} bytes; substring dedup "
                                 f"takes documents below {MAX_CHUNK} bytes (lower max_doc_bytes)")
            arr = ft.room(len(buf), np.uint8)
            arr[:] = np.frombuffer(buf, np.uint8)
            del buf
            ft.commit(len(arr), np.uint8)  # written while the kernel reads it
            nw = n_windows(offsets, k)
            off = window_rows(arr, offsets, k, bits, fi.room(nw, np.uint16),
                              fk.room(nw, np.uint64))
            fi.commit(nw, np.uint16)
            fk.commit(nw, np.uint64)
            offs.append(off + rows)
            rows += int(off[-1])
            docs += len(chunk)
            nbytes += len(arr) - len(chunk)
            idx.append((idx[-1][0] + len(arr), docs))
    os.replace(tmp, key_path)
    os.replace(ttmp, txt_path)
    os.replace(itmp, ids_path)
    save_npy(off_path, np.stack(offs) if offs else np.zeros((0, (1 << bits) + 1), np.int64))
    save_npy(idx_path, np.array(idx, np.int64))
    return {"docs": docs, "bytes": nbytes, "chunks": len(offs), "windows": rows}


def iter_saved_chunks(text: Path):
    """(index of the first document, joined bytes, document offsets) of the chunks that
    window_task saved: the chunks of iter_chunks, without decoding the shard again. A
    document's UTF-8 bytes never hold 0xFF, so the separators give the offsets back. The
    bytes are a view of the scratch buffer `txt`, valid until the next chunk."""
    txt_path, idx_path = _paths(text)
    idx = np.load(idx_path)
    with BlockReader(txt_path) as f:
        for g in range(len(idx) - 1):
            arr = f.read_scratch("txt", int(idx[g, 0]), int(idx[g + 1, 0]))
            offsets = np.concatenate([[0], np.flatnonzero(arr == SEP) + 1]).astype(np.int64)
            if len(offsets) - 1 != idx[g + 1, 1] - idx[g, 1]:
                raise RuntimeError(f"{txt_path}: chunk {g} does not match its index; delete the "
                                   "step folder and rerun")
            yield int(idx[g, 1]), arr, offsets


def repeat_task(folder: Path, n_shards: int, lo: int, hi: int, n_rows: int, n_chunks: int,
                out: Path) -> dict:
    """Stage 2 for buckets [lo, hi), n_rows windows in all: every chunk's rows of the range
    (8 B each), repeats marked, one bit per row written back per chunk. The range is taken
    in READ_PARTS sub-ranges (balanced by rows): a thread reads the next one's rows while
    mark_repeats (nogil) works on this one, so the disk's time hides behind the CPU's (only
    where a chunk's rows of a sub-range stay large: READ_MIN)."""
    cols, first_chunk = _range_columns(folder, n_shards, lo, hi)
    assert len(cols) == n_chunks, (len(cols), n_chunks)
    counts = (cols[:, 1:] - cols[:, :-1]).sum(axis=0)
    assert counts.sum() == n_rows, (int(counts.sum()), n_rows)
    parts = min(READ_PARTS, 8 * n_rows // max(n_chunks * READ_MIN, 1))
    edges = bucket_ranges(counts, max(parts, 1))
    slack = n_chunks * (2 * ALIGN // 8)  # rows: the blocks that a chunk's read covers beyond it
    starts, block = [0], ALIGN // 8  # the row where each sub-range's region begins: aligned
    for u, v in zip(edges[:-1], edges[1:]):
        rows = int((cols[:, v] - cols[:, u]).sum()) + slack
        starts.append(starts[-1] + -(-rows // block) * block)
    keys, later = scratch("u64", starts[-1], np.uint64), scratch("u8", starts[-1], np.bool_)

    def read(q: int) -> np.ndarray:
        u, v = edges[q], edges[q + 1]
        return _read_rows(folder, cols[:, u:v + 1], first_chunk,
                          keys[starts[q]:starts[q + 1]].view(np.uint8))

    found, marked = 0, []   # marked: (region start, rel) of each sub-range done
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, 0)
        for q in range(len(edges) - 1):
            rel = pending.result()
            if q + 2 < len(edges):
                pending = pool.submit(read, q + 1)
            a, b = starts[q], starts[q + 1]
            _, n = mark_repeats(keys[a:b], rel, GROUP_ROWS, TABLE_LOAD, later[a:b])
            found, marked = found + int(n), marked + [(a, rel)]
    bits_path, off_out = _paths(out)
    out_off = np.zeros(n_chunks + 1, np.int64)
    tmp = bits_path.with_name(bits_path.name + ".tmp")
    with open(tmp, "wb") as fo:
        for c in range(n_chunks):  # the chunk's flags in bucket order: sub-range by sub-range
            packed = np.packbits(np.concatenate([later[a + rel[c, 0]:a + rel[c, -1]]
                                                 for a, rel in marked]))
            fo.write(packed.tobytes())
            out_off[c + 1] = out_off[c] + len(packed)
    os.replace(tmp, bits_path)
    save_npy(off_out, out_off)
    return {"docs": 0, "bytes": 0, "windows": n_rows, "later": found}


def _range_columns(folder: Path, n_shards: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets of buckets lo..hi in every chunk's key file (one row per global chunk),
    and the first global chunk of each shard (+ the total)."""
    cols, first = [], [0]
    for s in range(n_shards):
        off = np.load(_paths(folder / f"win-{s:05d}")[1], mmap_mode="r")
        cols.append(np.array(off[:, lo:hi + 1]))  # this range's columns, not the whole file
        first.append(first[-1] + len(off))
        del off
    width = hi - lo + 1
    return (np.concatenate(cols) if cols else np.zeros((0, width), np.int64)), np.array(first)


def _read_rows(folder: Path, cols: np.ndarray, first_chunk: np.ndarray,
               raw: np.ndarray) -> np.ndarray:
    """Every chunk's rows cols[c, 0]..cols[c, -1] of its shard's key file, read as whole
    blocks straight into raw (bytes of the key buffer; no copy): a chunk's rows start where
    its first block put them, so up to 2 blocks lie between chunks, never read by
    mark_repeats. Returns where each chunk's rows of each bucket are (rows of raw)."""
    rel, at = np.zeros(cols.shape, np.int64), 0
    for s in range(len(first_chunk) - 1):
        with BlockReader(_paths(folder / f"win-{s:05d}")[0]) as f:
            for c in range(first_chunk[s], first_chunk[s + 1]):
                a, b = int(cols[c, 0]), int(cols[c, -1])
                skip, used = f.read(raw[at:], 8 * a, 8 * b)
                rel[c] = cols[c] - a + (at + skip) // 8
                at += used
    return rel


def span_task(s: int, k: int, chunk0: int, folder: Path, edges: np.ndarray, keep_layout: bool,
              out: Path) -> dict:
    """Stage 3 for shard s, whose first chunk is global chunk chunk0."""
    rows, docs, nbytes, n_layout, layout_bytes = [], 0, 0, 0, 0
    win_off = np.load(_paths(folder / f"win-{s:05d}")[1])
    packed = []  # per partition: the bits of this shard's chunks (contiguous), read once
    for p in range(len(edges) - 1):
        bits_path, off_path = _paths(folder / f"rep-{p:05d}")
        at = np.array(np.load(off_path, mmap_mode="r")[chunk0:chunk0 + len(win_off) + 1])
        got = np.array(_rows(bits_path, _mapped(bits_path, np.uint8), int(at[0]), int(at[-1])))
        packed.append((at - at[0], got))
    with BlockReader(_ids_path(folder / f"txt-{s:05d}")) as ids_file:
        for g, (first, arr, offsets) in enumerate(iter_saved_chunks(folder / f"txt-{s:05d}")):
            bits = [got[at[g]:at[g + 1]] for at, got in packed]
            spans, nl, lb = _chunk_spans(arr, offsets, k, keep_layout, win_off[g], edges, bits,
                                         _saved_ids(ids_file, win_off[g]))
            spans[:, 0] += first
            rows.append(spans)
            docs, nbytes = docs + len(offsets) - 1, nbytes + len(arr) - (len(offsets) - 1)
            n_layout, layout_bytes = n_layout + int(nl), layout_bytes + int(lb)
    spans = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)
    save_npy(out, spans)
    return {"docs": docs, "bytes": nbytes, "spans": int(len(spans)),
            "span_bytes": int((spans[:, 2] - spans[:, 1]).sum()) if len(spans) else 0,
            "layout_spans_kept": n_layout, "layout_bytes_kept": layout_bytes}


def _saved_ids(f: BlockReader, win_off: np.ndarray) -> np.ndarray:
    """A chunk's bucket ids (uint16, text order), read into the scratch buffer u16."""
    return f.read_scratch("u16", 2 * int(win_off[0]), 2 * int(win_off[-1])).view(np.uint16)


def _chunk_spans(arr, offsets, k, keep_layout, win_off, edges, bits, ids):
    """removed_spans of one chunk from its rows' bits: partition p holds the chunk's rows
    off[edges[p]]... (bucket order), and its bits follow the previous partitions' (each
    padded to a byte)."""
    off = win_off - win_off[0]
    base = 8 * np.concatenate([[0], np.cumsum([len(x) for x in bits])])
    start = np.empty(len(off) - 1, np.int64)
    for p in range(len(edges) - 1):
        lo, hi = edges[p], edges[p + 1]
        start[lo:hi] = base[p] + off[lo:hi] - off[lo]
    later = later_from_bits(len(arr), offsets, k, ids, start, np.concatenate(bits),
                            scratch("u8", len(arr), np.bool_))
    return removed_spans(arr, later, offsets, k, keep_layout)


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
                  chunk_bytes: int = CHUNK_BYTES, bits: int | None = None) -> dict:
    """The three stages over ctx.inputs with ctx.executor; writes work/spans-SSSSS.npy.
    Returns the step's figures. The driver holds one int per shard and one per bucket."""
    try:  # tasks run in this process reuse the scratch pages from stage to stage
        return _stages(ctx, k, keep_layout, partitions, chunk_bytes, bits)
    finally:
        release_scratch()


def _stages(ctx, k: int, keep_layout: bool, partitions: int | None, chunk_bytes: int,
            bits: int | None) -> dict:
    sub, name, m = ctx.work / "shuffle", ctx.dir.name, len(ctx.inputs)

    def run(fn, tasks, desc):
        return ctx.executor.map(fn, tasks, desc=desc)

    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir(parents=True)
    if bits is None:
        stored = sum(p.stat().st_size for p in ctx.inputs)
        bits = BIG_BITS if stored > BIG_STORED else BITS
    got = run(window_task, [(ctx.inputs[s], k, chunk_bytes, bits, sub / f"win-{s:05d}",
                             sub / f"txt-{s:05d}") for s in range(m)], desc=f"{name} windows")
    chunk0 = np.concatenate([[0], np.cumsum([g["chunks"] for g in got])]).astype(np.int64)
    counts = np.zeros(1 << bits, np.int64)
    for s in range(m):  # one file at a time: the driver's memory does not grow with m
        off = np.load(_paths(sub / f"win-{s:05d}")[1])
        counts += (off[:, 1:] - off[:, :-1]).sum(axis=0)
        del off
    windows = int(counts.sum())
    want = partitions or max(1, -(-windows // ROWS_PER_PARTITION))
    edges = bucket_ranges(counts, min(want, 1 << bits))
    cum = np.concatenate([[0], np.cumsum(counts)])
    n_parts = len(edges) - 1
    reps = run(repeat_task, [(sub, m, int(edges[p]), int(edges[p + 1]),
                              int(cum[edges[p + 1]] - cum[edges[p]]), int(chunk0[-1]),
                              sub / f"rep-{p:05d}") for p in range(n_parts)],
               desc=f"{name} repeated windows")
    for s in range(m):  # the keys are read by stage 2 only: the disk peak ends here
        _paths(sub / f"win-{s:05d}")[0].unlink()
    spans = run(span_task, [(s, k, int(chunk0[s]), sub, edges, keep_layout,
                             ctx.work / f"spans-{s:05d}.npy") for s in range(m)],
                desc=f"{name} spans")
    shutil.rmtree(sub)
    total = sum(g["bytes"] for g in got)
    removed = sum(g["span_bytes"] for g in spans)
    return {"partitions": n_parts, "buckets": 1 << bits, "windows": windows,
            "later_windows": sum(r["later"] for r in reps),
            "spans": sum(g["spans"] for g in spans), "span_bytes": removed,
            "span_fraction": round(removed / max(total, 1), 6),
            "layout_spans_kept": sum(g["layout_spans_kept"] for g in spans),
            "layout_bytes_kept": sum(g["layout_bytes_kept"] for g in spans)}
