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
   chunk); each window's bucket in text order -> txt-SSSSS.ids (uint16). Keys and ids are
   written through memory maps.
2. repeat_task, one per partition (a contiguous range of buckets, balanced by the row
   counts): every chunk's slice of that range, in corpus order (shard, chunk); a key seen
   at an earlier row marks its row. Equal keys share a bucket, so buckets are processed in
   groups with a cache-sized hash table each. One bit per row goes back, per chunk ->
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

import ctypes
import mmap
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import iter_shard
from .substring_kernels import (SEP, later_from_bits, mark_repeats, n_windows, removed_spans,
                                window_rows)

# buckets: 2^12, or 2^16 when the shards take more than BIG_STORED bytes on disk. A window
# task scatters its rows into that many runs (2^12: 0.8 s per 50 MB, 2^14: 1.2 s; measured);
# partitions are ranges of buckets, so at most that many, of ~W / 2^bits windows at least
BITS, BIG_BITS, BIG_STORED = 12, 16, 32 << 30
CHUNK_BYTES = 32 << 20  # text per chunk: a window task holds ~10 B per chunk byte
ROWS_PER_PARTITION = 1 << 25  # windows per repeat task: ~9 B each (keys + flags): ~300 MB
GROUP_ROWS = 1 << 16  # rows per hash table of a repeat task: a 1 MB table stays in cache
TABLE_LOAD = 1 / 2  # rows per slot: 2/3 took 9.5-9.8 ns per row, 1/2 7.8-8.1 (still in cache)
MAX_CHUNK = (1 << 32) - 1  # positions are uint32


_SCRATCH: dict[str, np.ndarray] = {}


def scratch(name: str, n: int, dtype) -> np.ndarray:
    """n rows of this process's buffer `name`, which only grows until release_scratch().
    A task's big arrays (keys, flags) come from here: fresh memory costs a page
    fault per page on first touch, 0.3-3 CPU s per GB on the development machine (more
    when the kernel compacts memory for huge pages), paid once per process instead of once
    per chunk, task and stage (bench/RESULTS.md). The contents are not cleared. Names by
    width: u64 (the repeat task's keys), u8 (its flags per row, then the span task's `later`)."""
    dtype = np.dtype(dtype)
    buf = _SCRATCH.get(name)
    if buf is None or len(buf) < n * dtype.itemsize:
        _SCRATCH.pop(name, None)
        del buf
        # an anonymous mapping, not np.empty: numpy asks for huge pages, and their first
        # touch cost ~3 CPU s per GB (the kernel compacting memory) against ~0.3 for 4 KB pages.
        # A quarter more than asked: the span task's chunk (bytes) is about the size of a
        # repeat task's partition (rows), and pages never touched cost no memory
        size = max(n * dtype.itemsize * 5 // 4, 1)
        buf = _SCRATCH[name] = np.frombuffer(mmap.mmap(-1, size), np.uint8)
    return buf[:n * dtype.itemsize].view(dtype)


def release_scratch() -> None:
    """Free the scratch buffers (the driver calls this after the shuffle: tasks it ran
    itself must not leave their buffers in its memory; between stages they are reused)."""
    _SCRATCH.clear()


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
    """A stage's raw file as a read-only array, memory-mapped. Copying rows out of the page
    cache costs ~0.4 CPU s per GB; readinto into fresh memory cost 2.2-3 s per GB on the
    development machine (the kernel faults the pages in one by one; bench/RESULTS.md)."""
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
    decoding the shard again)."""
    key_path, off_path = _paths(out)
    txt_path, idx_path = _paths(text)
    ids_path = _ids_path(text)
    offs, rows, docs, nbytes, idx = [], 0, 0, 0, [(0, 0)]
    tmp, ttmp, itmp = (p.with_name(p.name + ".tmp") for p in (key_path, txt_path, ids_path))
    with open(tmp, "w+b") as fk, open(ttmp, "wb") as ft, open(itmp, "w+b") as fi:
        for _, chunk in iter_chunks(shard, chunk_bytes):
            buf, offsets = _join(chunk)
            if len(buf) > MAX_CHUNK:
                raise ValueError(f"{shard}: a document of {len(buf) - 1} bytes; substring dedup "
                                 f"takes documents below {MAX_CHUNK} bytes (lower max_doc_bytes)")
            arr = np.frombuffer(buf, np.uint8)
            nw = n_windows(offsets, k)
            off = window_rows(arr, offsets, k, bits, _append_rows(fi, rows, nw, np.uint16),
                              _append_rows(fk, rows, nw, np.uint64))
            ft.write(buf)
            offs.append(off + rows)
            rows += int(off[-1])
            docs += len(chunk)
            nbytes += len(buf) - len(chunk)
            idx.append((idx[-1][0] + len(buf), docs))
    os.replace(tmp, key_path)
    os.replace(ttmp, txt_path)
    os.replace(itmp, ids_path)
    save_npy(off_path, np.stack(offs) if offs else np.zeros((0, (1 << bits) + 1), np.int64))
    save_npy(idx_path, np.array(idx, np.int64))
    return {"docs": docs, "bytes": nbytes, "chunks": len(offs), "windows": rows}


def _append_rows(f, rows: int, n: int, dtype) -> np.ndarray:
    """Rows [rows, rows + n) of the open raw file f, memory-mapped for writing (the file
    grows to rows + n): the kernel writes the keys straight into the page cache.
    write() of a key array cost 2-3 CPU s per GB on the development machine, the mapping
    ~0.3 (bench/RESULTS.md). Unmapped when dropped; closing f flushes (also on NFS)."""
    size = np.dtype(dtype).itemsize
    f.truncate((rows + n) * size)
    if n == 0:
        return np.zeros(0, dtype)
    _allocate(f, rows * size, n * size)
    return np.memmap(f, dtype, "r+", offset=rows * size, shape=(n,))


_LIBC = None


def _allocate(f, offset: int, length: int) -> None:
    """Reserve the file's blocks before the kernel scatters rows into its mapping: on ext4
    each first write to a page of a sparse file reserves its block on its own, which cost
    ~0.07 CPU s more per 330 MB of keys and ids (0.21-0.23 s of system time against
    0.24-0.31). Linux fallocate(2) only: posix_fallocate would write zeros block by block
    where the filesystem cannot allocate (NFS); there, and off Linux, nothing happens."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _LIBC.fallocate(f.fileno(), 0, offset, length)  # a failure leaves the file sparse


def iter_saved_chunks(text: Path):
    """(index of the first document, joined bytes, document offsets) of the chunks that
    window_task saved: the chunks of iter_chunks, without decoding the shard again. A
    document's UTF-8 bytes never hold 0xFF, so the separators give the offsets back."""
    txt_path, idx_path = _paths(text)
    idx = np.load(idx_path)
    text = _mapped(txt_path, np.uint8)
    for g in range(len(idx) - 1):
        arr = _rows(txt_path, text, int(idx[g, 0]), int(idx[g + 1, 0]))
        offsets = np.concatenate([[0], np.flatnonzero(arr == SEP) + 1]).astype(np.int64)
        if len(offsets) - 1 != idx[g + 1, 1] - idx[g, 1]:
            raise RuntimeError(f"{txt_path}: chunk {g} does not match its index; delete the "
                               "step folder and rerun")
        yield int(idx[g, 1]), arr, offsets


def repeat_task(folder: Path, n_shards: int, lo: int, hi: int, n_rows: int, n_chunks: int,
                out: Path) -> dict:
    """Stage 2 for buckets [lo, hi), n_rows windows in all: every chunk's rows of the range
    (8 B each), repeats marked, one bit per row written back per chunk."""
    keys = scratch("u64", n_rows, np.uint64)
    rel, at = np.zeros((n_chunks, hi - lo + 1), np.int64), 0
    c = 0
    for s in range(n_shards):
        key_path, off_path = _paths(folder / f"win-{s:05d}")
        off = np.load(off_path, mmap_mode="r")
        cols = np.array(off[:, lo:hi + 1])  # this range's columns, not the whole file
        del off
        mapped = _mapped(key_path, np.uint64)
        for g in range(len(cols)):
            a, b = int(cols[g, 0]), int(cols[g, -1])
            keys[at:at + b - a] = _rows(key_path, mapped, a, b)
            rel[c] = cols[g] - a + at
            at, c = at + b - a, c + 1
        del mapped
    assert at == n_rows and c == n_chunks, (at, n_rows, c, n_chunks)
    later, found = mark_repeats(keys, rel, GROUP_ROWS, TABLE_LOAD, scratch("u8", n_rows, np.bool_))
    del keys
    bits_path, off_out = _paths(out)
    out_off = np.zeros(n_chunks + 1, np.int64)
    tmp = bits_path.with_name(bits_path.name + ".tmp")
    with open(tmp, "wb") as fo:
        for c in range(n_chunks):
            packed = np.packbits(later[rel[c, 0]:rel[c, -1]])
            fo.write(packed.tobytes())
            out_off[c + 1] = out_off[c] + len(packed)
    os.replace(tmp, bits_path)
    save_npy(off_out, out_off)
    return {"docs": 0, "bytes": 0, "windows": n_rows, "later": int(found)}


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
    ids_path = _ids_path(folder / f"txt-{s:05d}")
    ids = _mapped(ids_path, np.uint16)
    for g, (first, arr, offsets) in enumerate(iter_saved_chunks(folder / f"txt-{s:05d}")):
        off = win_off[g] - win_off[g, 0]
        # partition p holds this chunk's rows off[edges[p]]... (bucket order): its bits
        # follow the previous partitions' (each padded to a byte)
        bits = [got[at[g]:at[g + 1]] for at, got in packed]
        base = 8 * np.concatenate([[0], np.cumsum([len(x) for x in bits])])
        start = np.empty(len(off) - 1, np.int64)
        for p in range(len(edges) - 1):
            lo, hi = edges[p], edges[p + 1]
            start[lo:hi] = base[p] + off[lo:hi] - off[lo]
        later = later_from_bits(len(arr), offsets, k,
                                _rows(ids_path, ids, int(win_off[g, 0]), int(win_off[g, -1])),
                                start, np.concatenate(bits), scratch("u8", len(arr), np.bool_))
        spans, nl, lb = removed_spans(arr, later, offsets, k, keep_layout)
        spans[:, 0] += first
        rows.append(spans)
        docs, nbytes = docs + len(offsets) - 1, nbytes + len(arr) - (len(offsets) - 1)
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
