"""Exact substring dedup with a suffix array (Index, after google-research/deduplicate-text-datasets).

The corpus is the documents' UTF-8 bytes joined by 0xFF (a byte valid UTF-8 never
contains). A byte is removed when it lies in a window of K bytes (K = min_bytes) that
also occurs at an earlier position of the corpus: every repeated span of >= K bytes,
at any position, within or across documents, loses all occurrences but the first.
(A span of length L >= K occurs earlier iff each of its K-windows does, so K-windows
suffice.)

With the suffix array SA and kasai's LCP (lcp[i] = LCP(SA[i], SA[i+1])), suffixes whose
first K bytes are equal form runs with lcp >= K; in each run every position except the
smallest starts a repeated window. Windows that would cross a 0xFF are ignored.
Removed spans are then trimmed to whole UTF-8 characters (a character goes only if all
its bytes go), so CJK text is never split.

Memory: about 17 bytes per corpus byte at the peak below 2 GB per suffix array (text,
int32 SA, LCP and group ids, a few byte masks), about 30 above (int64 indices).
Measured speed: bench/dedup.py. A corpus above `part_bytes` is split into parts P0..Pm in
document order; part k is checked against itself and against each earlier part
(suffix array of Pj + Pk), which is still exact, costs m(m+1)/2 suffix arrays, and
needs memory for two parts.
"""
from __future__ import annotations

import numpy as np

from lmforge.io.atomic import save_npy

from ..pipeline import Step, iter_shard

SEP = 0xFF


def repeated_mask(buf: bytes, k: int, start: int = 0) -> np.ndarray:
    """Bool mask over buf[start:]: bytes inside a k-window that occurs earlier in buf."""
    from pydivsufsort import divsufsort, kasai

    n = len(buf)
    out = np.zeros(n - start, dtype=bool)
    if n < k:
        return out
    arr = np.frombuffer(buf, dtype=np.uint8)
    sa = divsufsort(buf)
    lcp = kasai(buf, sa)
    idx = np.int32 if n < 2 ** 31 else np.int64
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = lcp[:-1] < k
    del lcp
    gmin = np.minimum.reduceat(sa, np.flatnonzero(new_group))
    gid = np.cumsum(new_group, dtype=idx) - 1
    del new_group
    later = np.zeros(n, dtype=bool)  # by position: starts a window that occurred before
    later[sa] = sa != gmin[gid]
    del sa, gid, gmin
    # only windows inside one document: no separator among the k bytes from p
    seps = np.cumsum(arr == SEP, dtype=idx)
    inside = np.zeros(n, dtype=bool)
    inside[:n - k + 1] = seps[k - 1:] - np.concatenate([[0], seps[:n - k]]) == 0
    later &= inside
    del seps, inside
    # byte x is covered when a marked window starts in (x - k, x]
    cs = np.cumsum(later, dtype=idx)
    cover = cs.copy()
    cover[k:] -= cs[:-k]
    out[:] = cover[start:] > 0
    return out


def whole_chars(buf: bytes, mask: np.ndarray) -> np.ndarray:
    """Shrink a removal mask so that a UTF-8 character goes only if all its bytes go."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    lead = (arr & 0xC0) != 0x80
    starts = np.flatnonzero(lead)
    if len(starts) == 0:
        return mask
    all_removed = np.minimum.reduceat(mask.astype(np.uint8), starts).astype(bool)
    return all_removed[np.cumsum(lead) - 1]


def _join(texts_bytes: list[bytes]) -> tuple[bytes, np.ndarray]:
    """Join with 0xFF; returns the buffer and each document's start offset (+ end)."""
    lens = np.array([len(b) + 1 for b in texts_bytes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    return b"\xff".join(texts_bytes) + b"\xff", offsets


def _spans(mask: np.ndarray, offsets: np.ndarray, first_doc: int) -> np.ndarray:
    """(n, 3) int64 rows (global doc index, byte start, byte end) of removed runs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    s, e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    doc = np.searchsorted(offsets, s, side="right") - 1
    return np.stack([doc + first_doc, s - offsets[doc], e - offsets[doc]], axis=1)


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


def removal_spans(load, sizes: list[int], k: int, part_bytes: int, progress=None) -> np.ndarray:
    """Removed byte spans (doc, start, end) over a corpus loaded part by part.

    load(lo, hi) returns the UTF-8 bytes of documents lo..hi-1.
    """
    parts = make_parts(sizes, part_bytes)
    rows = []
    for pk, (lo, hi) in enumerate(parts):
        cur = load(lo, hi)
        buf, offsets = _join(cur)
        if pk == 0:
            mask = repeated_mask(buf, k)
        else:
            mask = np.zeros(len(buf), dtype=bool)
            for jlo, jhi in parts[:pk]:  # exact across parts: Pj before Pk
                prev, _ = _join(load(jlo, jhi))
                mask |= repeated_mask(prev + buf, k, start=len(prev))
        mask = whole_chars(buf, mask)
        rows.append(_spans(mask, offsets, lo))
        if progress:
            progress(pk + 1, len(parts))
    return np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)


def apply_spans(data: bytes, spans) -> str:
    keep, pos = [], 0
    for s, e in spans:
        keep.append(data[pos:s])
        pos = e
    keep.append(data[pos:])
    return b"".join(keep).decode("utf-8")


def dedup_texts(texts: list[str], min_bytes: int = 100, part_bytes: int = 1 << 30) -> list[str]:
    """The texts with every repeated span of >= min_bytes removed but its first occurrence."""
    data = [t.encode("utf-8") for t in texts]
    spans = removal_spans(lambda lo, hi: data[lo:hi], [len(d) for d in data], min_bytes,
                          part_bytes)
    bounds = np.searchsorted(spans[:, 0], np.arange(len(data) + 1))  # spans come sorted by doc
    return [apply_spans(d, spans[bounds[i]:bounds[i + 1], 1:].tolist()) for i, d in enumerate(data)]


# ------------------------------------------------------------------ pipeline step


class SubstringStep(Step):
    modified_reason = "substring_spans"

    def prepare(self, ctx) -> dict:
        shard_sizes = []
        for p in ctx.inputs:  # first pass: sizes only, so parts can be planned
            shard_sizes.append([len(d["text"].encode("utf-8")) for d in iter_shard(p)])
        counts = [len(s) for s in shard_sizes]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        sizes = [s for ss in shard_sizes for s in ss]

        def load(lo, hi):
            out = []
            first = int(np.searchsorted(starts, lo, side="right") - 1)
            for si in range(first, len(ctx.inputs)):
                if starts[si] >= hi:
                    break
                for j, d in enumerate(iter_shard(ctx.inputs[si])):
                    if lo <= starts[si] + j < hi:
                        out.append(d["text"].encode("utf-8"))
            return out

        spans = removal_spans(load, sizes, self.cfg.min_bytes, self.cfg.part_bytes)
        for si in range(len(ctx.inputs)):
            sel = (spans[:, 0] >= starts[si]) & (spans[:, 0] < starts[si + 1])
            mine = spans[sel].copy()
            mine[:, 0] -= starts[si]
            save_npy(ctx.work / f"spans-{si:05d}.npy", mine)
        total = int(sum(sizes))
        removed = int((spans[:, 2] - spans[:, 1]).sum()) if len(spans) else 0
        return {"parts": len(make_parts(sizes, self.cfg.part_bytes)), "spans": int(len(spans)),
                "span_bytes": removed, "span_fraction": round(removed / max(total, 1), 6)}

    def open_shard(self, ctx, index):
        spans = np.load(ctx.work / f"spans-{index:05d}.npy")
        by_doc: dict[int, list] = {}
        for d, s, e in spans.tolist():
            by_doc.setdefault(d, []).append((s, e))

        def apply(i, doc):
            if i not in by_doc:
                return doc, None
            text = apply_spans(doc["text"].encode("utf-8"), by_doc[i])
            if len(text.strip()) < self.cfg.min_chars_left:
                return None, "substring_too_short"
            doc["text"] = text
            return doc, None
        return apply
