"""Exact substring dedup (Index, after google-research/deduplicate-text-datasets).

The corpus is the documents' UTF-8 bytes joined by 0xFF (a byte valid UTF-8 never
contains). A byte is removed when it lies in a window of K bytes (K = min_bytes) that
also occurs at an earlier position of the corpus: every repeated span of >= K bytes,
at any position, within or across documents, loses all occurrences but the first.
(A span of length L >= K occurs earlier iff each of its K-windows does, so K-windows
suffice.) Windows that would cross a 0xFF are ignored.

`later` windows (those whose K bytes also start earlier) come from one of two exact
methods with the same result (substring_kernels.py, compiled loops): `hash`, one pass
with a hash table of each distinct window's first start, every hit verified byte by byte
(the default: faster, less memory); or `suffix_array` (pydivsufsort, int32) with a capped
permuted-LCP pass, as in deduplicate-text-datasets. One pass per document turns later
windows into removed spans, trimmed to whole UTF-8 characters (a character goes only if
all its bytes go, so CJK text is never split). With keep_layout_spans (the default), a
span made only of ASCII whitespace and punctuation stays: runs of spaces, table borders
and rules repeat everywhere, and removing them breaks ASCII tables and indentation.

Memory (docs/scale.md, measured): 9.5-10 bytes per byte of one buffer at the peak. A
corpus above `part_bytes` is split into parts P0..Pm in document order; part k is checked
against itself and against each earlier part (one buffer Pj + Pk), which is still exact,
costs m(m+1)/2 passes, and needs memory for two parts. part_bytes: null picks the largest
part that fits the machine's available memory (auto_part_bytes).

That is the step's `mode: driver`, and the in-memory path of dedup_texts. `mode: shuffle`
(substring_shuffle.py) finds the same later windows with executor tasks in linear work and
a flat driver; `mode: auto` takes it above `driver_max_bytes` of shards (docs/scale.md).
"""
from __future__ import annotations

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import Step, iter_shard
from .snap import SnapCounts, snap_document
from .substring_kernels import (later_by_hash, later_in_group, removed_spans,
                                shares_prefix_with_pred)
from .substring_shuffle import _join, shuffle_spans

SEP = 0xFF
MAX_SA_BYTES = (1 << 31) - 1  # int32 suffix arrays: one suffix array's input stays below this
BYTES_PER_BYTE = 12  # budgeted peak per byte of one buffer (measured: docs/scale.md)
HASH_LOAD = 2 / 3  # hash table: windows per slot


def check_sa_size(n: int) -> None:
    if n > MAX_SA_BYTES:
        raise ValueError(f"substring: {n} bytes in one suffix array, at most {MAX_SA_BYTES} "
                         "(int32 indices): lower substring.part_bytes")


def later_windows(buf: bytes, offsets: np.ndarray, k: int, method: str = "hash") -> np.ndarray:
    """bool[len(buf)]: the k bytes from p, inside one document, also start at an earlier
    position of buf (positions whose window leaves the document: unspecified)."""
    check_sa_size(len(buf))
    arr = np.frombuffer(buf, dtype=np.uint8)
    if method == "hash":
        return later_by_hash(arr, offsets, k, HASH_LOAD)
    from pydivsufsort import divsufsort

    if len(buf) == 0:
        return np.zeros(0, dtype=bool)
    sa = divsufsort(buf)
    assert sa.dtype == np.int32
    return later_in_group(sa, shares_prefix_with_pred(arr, sa, k))


def make_parts(sizes: list[int], part_bytes: int) -> list[tuple[int, int]]:
    """Split documents (by byte size) into consecutive [lo, hi) ranges of <= part_bytes."""
    parts, lo, acc = [], 0, 0
    for i, s in enumerate(sizes):
        if acc and acc + s + 1 > part_bytes:
            parts.append((lo, i))
            lo, acc = i, 0
        acc += s + 1
    if lo < len(sizes) or not parts:
        parts.append((lo, len(sizes)))
    return parts


def mem_available() -> int:
    """Bytes the kernel says can be allocated without swapping (/proc/meminfo MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_part_bytes(total_bytes: int, available: int | None = None, share: float = 0.7) -> int:
    """The part size for part_bytes: null. A share of available memory at BYTES_PER_BYTE
    per suffix-array byte: the whole corpus as one part when it fits, else parts of half
    that (a part pair is one suffix array of two parts)."""
    budget = int((mem_available() if available is None else available) * share)
    one = min(budget // BYTES_PER_BYTE, MAX_SA_BYTES)
    if total_bytes <= one:
        return max(one, 1024)
    return max(one // 2, 1024)


def removal_spans(load, sizes: list[int], k: int, part_bytes: int, keep_layout: bool = True,
                  method: str = "hash", progress=None, stats: dict | None = None) -> np.ndarray:
    """Removed byte spans (doc, start, end) over a corpus loaded part by part.

    load(lo, hi) returns the UTF-8 bytes of documents lo..hi-1. `stats`, if given, gets
    the number and bytes of repeated layout-only spans that were left alone.
    """
    parts = make_parts(sizes, part_bytes)
    rows, n_layout, layout_bytes = [], 0, 0
    for pk, (lo, hi) in enumerate(parts):
        buf, offsets = _join(load(lo, hi))
        if pk == 0:
            later = later_windows(buf, offsets, k, method)
        else:
            later = np.zeros(len(buf), dtype=bool)
            for jlo, jhi in parts[:pk]:  # exact across parts: Pj before Pk
                pair, prev_offsets = _join(load(jlo, jhi))
                n_prev = len(pair)
                pair += buf
                both = np.concatenate([prev_offsets[:-1], offsets + n_prev])
                later |= later_windows(pair, both, k, method)[n_prev:]
                del pair
        spans, nl, lb = removed_spans(np.frombuffer(buf, dtype=np.uint8), later, offsets, k,
                                      keep_layout)
        spans[:, 0] += lo
        n_layout, layout_bytes = n_layout + nl, layout_bytes + lb
        rows.append(spans)
        del buf, later
        if progress:
            progress(pk + 1, len(parts))
    if stats is not None:
        stats.update(layout_spans_kept=int(n_layout), layout_bytes_kept=int(layout_bytes))
    return np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)


def apply_spans(data: bytes, spans) -> str:
    keep, pos = [], 0
    for s, e in spans:
        keep.append(data[pos:s])
        pos = e
    keep.append(data[pos:])
    return b"".join(keep).decode("utf-8")


def doc_spans(texts: list[str], min_bytes: int = 100, part_bytes: int | None = None,
              keep_layout: bool = True, method: str = "hash") -> tuple[list[bytes], list[list]]:
    """Each text's UTF-8 bytes and its found repeated spans [(start, end), ...]."""
    data = [t.encode("utf-8") for t in texts]
    sizes = [len(d) for d in data]
    if part_bytes is None:
        part_bytes = auto_part_bytes(sum(sizes) + len(sizes))
    spans = removal_spans(lambda lo, hi: data[lo:hi], sizes, min_bytes, part_bytes, keep_layout,
                          method)
    bounds = np.searchsorted(spans[:, 0], np.arange(len(data) + 1))  # spans come sorted by doc
    return data, [spans[bounds[i]:bounds[i + 1], 1:].tolist() for i in range(len(data))]


def dedup_texts(texts: list[str], min_bytes: int = 100, part_bytes: int | None = None,
                keep_layout: bool = True, method: str = "hash",
                line_docs: list[bool] | None = None, max_repeated_share: float | None = 0.5
                ) -> list[str | None]:
    """The texts with every repeated span of >= min_bytes removed but its first occurrence.

    Texts marked in `line_docs` (code) lose only whole lines and stay parseable if they
    parsed as Python (snap.py); one that is mostly repeated comes back as None (dropped)."""
    data, spans = doc_spans(texts, min_bytes, part_bytes, keep_layout, method)
    out: list[str | None] = []
    for i, (d, sp) in enumerate(zip(data, spans)):
        if line_docs is not None and line_docs[i] and sp:
            r = snap_document(d, sp, max_repeated_share=max_repeated_share)
            out.append(None if r.reason else apply_spans(d, r.spans))
        else:
            out.append(apply_spans(d, sp))
    return out


# ------------------------------------------------------------------ pipeline step


class SubstringStep(Step):
    modified_reason = "substring_spans"

    def prepare(self, ctx) -> dict:
        if self.plan(ctx) == "shuffle":
            return {"plan": "shuffle", **shuffle_spans(ctx, self.cfg.min_bytes,
                                                       self.cfg.keep_layout_spans,
                                                       self.cfg.partitions)}
        return {"plan": "driver", **self._driver_spans(ctx)}

    def plan(self, ctx) -> str:
        """mode: auto runs the corpus on the driver (one buffer, no task overhead) while its
        shards are small on disk, else the shuffle (linear, distributed, flat driver)."""
        if self.cfg.mode != "auto":
            return self.cfg.mode
        stored = sum(p.stat().st_size for p in ctx.inputs)
        return "driver" if stored <= self.cfg.driver_max_bytes else "shuffle"

    def _driver_spans(self, ctx) -> dict:
        # First pass: sizes, so parts can be planned. The texts are kept while they fit
        # one part (then the suffix array / hash pass reads nothing again).
        cap = self.cfg.part_bytes or auto_part_bytes(0)
        shard_sizes, cache, cached = [], [], 0
        for p in ctx.inputs:
            sizes = []
            for d in iter_shard(p):
                b = d["text"].encode("utf-8")
                sizes.append(len(b))
                cached += len(b) + 1
                if cache is not None:
                    cache.append(b)
                    if cached > cap:
                        cache = None
            shard_sizes.append(sizes)
        counts = [len(s) for s in shard_sizes]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        sizes = [s for ss in shard_sizes for s in ss]

        def load(lo, hi):
            nonlocal cache
            if cache is not None:  # one part: handed over once, so it is freed after the join
                out, cache = cache[lo:hi], None
                return out
            out = []
            first = int(np.searchsorted(starts, lo, side="right") - 1)
            for si in range(first, len(ctx.inputs)):
                if starts[si] >= hi:
                    break
                for j, d in enumerate(iter_shard(ctx.inputs[si])):
                    if lo <= starts[si] + j < hi:
                        out.append(d["text"].encode("utf-8"))
            return out

        part_bytes = self.cfg.part_bytes or auto_part_bytes(sum(sizes) + len(sizes))
        layout: dict = {}
        spans = removal_spans(load, sizes, self.cfg.min_bytes, part_bytes,
                              self.cfg.keep_layout_spans, self.cfg.method, stats=layout)
        for si in range(len(ctx.inputs)):
            sel = (spans[:, 0] >= starts[si]) & (spans[:, 0] < starts[si + 1])
            mine = spans[sel].copy()
            mine[:, 0] -= starts[si]
            save_npy(ctx.work / f"spans-{si:05d}.npy", mine)
        total = int(sum(sizes))
        removed = int((spans[:, 2] - spans[:, 1]).sum()) if len(spans) else 0
        return {"parts": len(make_parts(sizes, part_bytes)), "spans": int(len(spans)),
                "span_bytes": removed, "span_fraction": round(removed / max(total, 1), 6),
                **layout}

    def open_shard(self, ctx, index):
        spans = np.load(ctx.work / f"spans-{index:05d}.npy")
        by_doc: dict[int, list] = {}
        for d, s, e in spans.tolist():
            by_doc.setdefault(d, []).append((s, e))
        snapped = self._snap_shard(ctx, index, by_doc) if self.cfg.line_domains else {}

        def apply(i, doc):
            if i not in by_doc:
                return doc, None
            found = by_doc[i]
            if i in snapped:
                if snapped[i].reason:
                    return None, snapped[i].reason
                found = snapped[i].spans
            text = apply_spans(doc["text"].encode("utf-8"), found)
            if len(text.strip()) < self.cfg.min_chars_left:
                return None, "substring_too_short"
            doc["text"] = text
            return doc, None
        return apply

    def _snap_shard(self, ctx, index: int, by_doc: dict) -> dict:
        """Line-domain documents with spans: their snapped spans (dedup/snap.py), decided
        before the shard is written so the counts are saved once per shard."""
        out, counts = {}, SnapCounts()
        for i, doc in enumerate(iter_shard(ctx.inputs[index])):
            if i in by_doc and str(doc["meta"].get("domain") or "") in self.cfg.line_domains:
                r = snap_document(doc["text"].encode("utf-8"), by_doc[i],
                                  is_python=None if self.cfg.python_check else False,
                                  max_repeated_share=self.cfg.max_repeated_share)
                counts.add(r, by_doc[i])
                out[i] = r
        counts.save(ctx.work / f"snap-{ctx.inputs[index].name}.json")
        return out

    def finish(self, ctx) -> dict:
        return {"line_snapping": SnapCounts.total(ctx.work)}
