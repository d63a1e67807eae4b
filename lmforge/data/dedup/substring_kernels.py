"""Compiled (numba) passes of exact-substring dedup.

Each pass is one loop over the corpus; numpy needed several full-size temporaries per
pass (what made the first version use 28 bytes per corpus byte and spend 55% of its time
in post-processing). Arrays over the corpus are uint8/bool or int32: callers keep every
buffer below 2^31 bytes.

    buf      uint8[n]   documents joined by 0xFF, ending with 0xFF
    offsets  int64[d+1] document starts, and n; document i is buf[offsets[i]:offsets[i+1]-1]
    later    bool[n]    the k bytes from p form a window inside one document that also
                        starts at an earlier position (what both methods compute)

Two exact ways to get `later`, which agree byte for byte (tests check both against a
brute-force set of windows):
- later_by_hash: one pass over the windows in text order with an open-addressing hash
  table of first occurrences; every hash hit is verified byte by byte, so collisions cost
  time, never correctness. Memory: 5 B per table slot at 2/3 load (7.5 B per window).
- suffix array (pydivsufsort) + shares_prefix_with_pred + later_in_group, as in
  google-research/deduplicate-text-datasets: 4 B (SA) + 4 B (Phi) + 1 B per byte.

Random reads into arrays far larger than the cache dominate both; the loops compute
addresses PREFETCH iterations ahead and issue prefetches (2-3x faster on a 50 MB corpus).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SEP = 0xFF
PREFETCH = 32  # iterations ahead; 16-32 measured best (misses in flight per core)
_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd: a byte difference never vanishes mod 2^64


@intrinsic
def prefetch(typingctx, arr, idx):
    """llvm.prefetch of arr[idx] (a hint: no effect on results)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()
    return sig, codegen


@njit(inline="always")
def _fmix(h):
    """murmur3's 64-bit finaliser: the rolling hash's low bits are weak, slots need all."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(inline="always")
def _hash_first(buf, s, k, mul):
    """The rolling hash of buf[s:s+k]: sum of buf[s+i] x mul^(k-1-i), mod 2^64."""
    h = np.uint64(0)
    for i in range(s, s + k):
        h = h * mul + np.uint64(buf[i])
    return h


@njit(inline="always")
def _hash_next(h, buf, p, k, mul, mk):
    """The rolling hash of the window at p from that of the window at p - 1 (mk = mul^k).
    Every kernel below rolls its hashes with this one step (inlined: no call per window)."""
    return h * mul + np.uint64(buf[p + k - 1]) - np.uint64(buf[p - 1]) * mk


@njit(inline="always")
def _pow(m, k):
    """m^k mod 2^64 (wrapping multiplication)."""
    out = np.uint64(1)
    for _ in range(k):
        out *= m
    return out


@njit(inline="always")
def _load8(buf, p):
    v = np.uint64(0)
    for i in range(8):
        v |= np.uint64(buf[p + i]) << np.uint64(8 * i)
    return v


@njit(inline="always")
def _same(buf, p, q, k):
    """buf[p:p+k] == buf[q:q+k] (both in range)."""
    h = 0
    while h + 8 <= k:
        if _load8(buf, p + h) != _load8(buf, q + h):
            return False
        h += 8
    while h < k:
        if buf[p + h] != buf[q + h]:
            return False
        h += 1
    return True


@njit(cache=True, nogil=True)
def later_by_hash(buf, offsets, k, load):
    """`later` (module docstring) from a hash table of each distinct window's first start.

    Windows are visited in text order; a window equal to an earlier one is found in the
    table (hash, then 8-bit tag, then all k bytes), others are inserted. After a match
    at q, window p + 1 equals window q + 1 iff one more byte agrees: long repeats cost a
    byte comparison per position, not a table lookup.
    """
    n = len(buf)
    nw = 0
    for d in range(len(offsets) - 1):
        nw += max(0, offsets[d + 1] - 1 - offsets[d] - k + 1)
    size = max(64, int(nw / load) + 1)
    tag = np.zeros(size, np.uint8)  # 0: empty slot
    pos = np.empty(size, np.int32)
    later = np.zeros(n, np.bool_)
    usize = np.uint64(size)
    mk = _pow(_MUL, k)
    ring_slot = np.empty(PREFETCH, np.int64)
    ring_tag = np.empty(PREFETCH, np.uint8)
    for d in range(len(offsets) - 1):
        s, last = offsets[d], offsets[d + 1] - 1 - k  # last: the last window start
        if last < s:
            continue
        h = _hash_first(buf, s, k, _MUL)
        q = -1  # start of the earlier window equal to window p - 1, or -1
        for i in range(s, last + 1 + PREFETCH):
            p = i - PREFETCH  # window p is looked up now; window i is hashed below
            if p < s:
                pass
            elif q >= 0 and buf[p + k - 1] == buf[q + k]:
                q += 1  # the repeat goes on
                later[p] = True
            else:
                q = -1
                slot, t = ring_slot[p % PREFETCH], ring_tag[p % PREFETCH]
                while True:
                    g = tag[slot]
                    if g == 0:
                        tag[slot] = t
                        pos[slot] = p
                        break
                    if g == t and _same(buf, pos[slot], p, k):
                        later[p] = True
                        q = pos[slot]
                        break
                    slot += 1
                    if slot == size:
                        slot = 0
            if i <= last:
                if i > s:
                    h = _hash_next(h, buf, i, k, _MUL, mk)
                x = _fmix(h)
                slot = np.int64(((x >> np.uint64(32)) * usize) >> np.uint64(32))
                prefetch(tag, slot)
                prefetch(pos, slot)
                ring_slot[i % PREFETCH] = slot  # read back PREFETCH iterations later
                ring_tag[i % PREFETCH] = np.uint8((x & np.uint64(0xFF)) | np.uint64(1))
    return later


@njit(cache=True, nogil=True)
def shares_prefix_with_pred(buf, sa, k):
    """bool[n] by text position: the first k bytes of suffix p equal those of the suffix
    just before it in the suffix array (LCP >= k).

    Permuted LCP with the Phi array (Kaerkkaeinen, Manzini, Puglisi 2009), capped at k:
    plcp[p + 1] >= plcp[p] - 1 also holds for the capped value, so the byte comparisons
    add up to at most 2n + k. Peak: one int32[n] (phi) besides the inputs.
    """
    n = len(sa)
    phi = np.empty(n, np.int32)
    phi[sa[0]] = -1
    for r in range(1, n):
        if r + PREFETCH < n:
            prefetch(phi, sa[r + PREFETCH])
        phi[sa[r]] = sa[r - 1]
    out = np.zeros(n, np.bool_)
    h = 0
    for p in range(n):
        if p + PREFETCH < n and phi[p + PREFETCH] >= 0:
            prefetch(buf, phi[p + PREFETCH] + max(h - PREFETCH, 0))
        q = phi[p]
        if q < 0:
            h = 0
            continue
        while h < k and p + h < n and q + h < n and buf[p + h] == buf[q + h]:
            h += 1
        if h >= k:
            out[p] = True
        if h > 0:
            h -= 1
    return out


@njit(cache=True, nogil=True)
def later_in_group(sa, linked):
    """In place: linked[p] := "the k-prefix of suffix p also starts at an earlier position".

    Suffixes whose k-prefixes are equal are consecutive in the suffix array (a group:
    a run of linked ranks); every member but the smallest position is "later". A rank's
    link is read before any write can touch it (each group writes only its own
    positions, after reading their links), so no second array is needed.
    """
    n = len(sa)
    r = 0
    while r < n:
        e = r + 1
        lo = sa[r]
        while e < n:
            if e + PREFETCH < n:
                prefetch(linked, sa[e + PREFETCH])
            if not linked[sa[e]]:
                break
            if sa[e] < lo:
                lo = sa[e]
            e += 1
        linked[sa[r]] = False
        if e - r > 1:
            for t in range(r, e):
                linked[sa[t]] = sa[t] != lo
        r = e
    return linked


@njit(inline="always")
def _is_layout_byte(b):
    """ASCII whitespace or punctuation: table borders, rules, indentation."""
    return (b == 32 or 9 <= b <= 13 or 33 <= b <= 47 or 58 <= b <= 64 or 91 <= b <= 96
            or 123 <= b <= 126)


@njit(cache=True, nogil=True)
def removed_spans(buf, later, offsets, k, keep_layout):
    """(m, 3) int64 rows (document, start, end), byte offsets within the document, of the
    spans to remove, and the number and bytes of layout-only spans left alone.

    A byte is covered when a later window of its document starts at one of (x - k, x]; a
    UTF-8 character goes only if all its bytes are covered, i.e. if it lies inside one
    maximal run of covered bytes. So each run, less the continuation bytes at its start
    (their character began before the run) and the character cut at its end, is a span.
    With keep_layout, a span made only of ASCII whitespace and punctuation stays (ASCII
    tables, rules, indentation).

    A run is found from its first later window: while a later window starts at or before
    the run's end, the end moves to that window's end. The search for the last such start
    runs backwards from the end, so inside a long repeat (later everywhere) it costs one
    check per k bytes; every position is checked at most once.
    """
    cap = 1024
    out = np.empty((cap, 3), np.int64)
    m = n_layout = layout_bytes = 0
    for d in range(len(offsets) - 1):
        s, e = offsets[d], offsets[d + 1] - 1  # e: the separator
        stop = e - k + 1  # windows inside the document start before this
        x = s
        while x < stop:
            while x < stop and not later[x]:  # a loop of its own: 16x faster than a
                x += 1                        # `continue` of the outer loop (measured)
            if x >= stop:
                break
            a, end, lo = x, x + k, x + 1  # covered: [a, end); later starts in [lo, end] unseen
            while True:  # a window starting at `end` continues the run (no uncovered byte)
                y = min(end + 1, stop) - 1
                while y >= lo and not later[y]:
                    y -= 1
                if y < lo:
                    break
                lo, end = end + 1, y + k
            x = end
            while a < end and (buf[a] & 0xC0) == 0x80:
                a += 1  # this character began before the run: it stays
            b = end  # at most e; buf[e] is the separator
            while b > a and (buf[b] & 0xC0) == 0x80:
                b -= 1  # the character at b began inside the run and ends after it: it stays
            if b == a:
                continue
            content = not keep_layout
            y = a
            while not content and y < b:
                content = not _is_layout_byte(buf[y])
                y += 1
            if content:
                if m == cap:
                    cap *= 2
                    grown = np.empty((cap, 3), np.int64)
                    grown[:m] = out[:m]
                    out = grown
                out[m, 0], out[m, 1], out[m, 2] = d, a - s, b - s
                m += 1
            else:
                n_layout += 1
                layout_bytes += b - a
    return out[:m], n_layout, layout_bytes


# ------------------------------------------------------------------ the shuffle (substring_shuffle.py)
# Every K-byte window inside a document is a row: key = a 64-bit hash of its bytes; its
# bucket = the top `bits` bits of a second, independent 64-bit hash (so two different
# windows are confused only if both hashes collide: docs/scale.md). Rows are stored in
# bucket order without their positions; each window's bucket is kept in text order
# (2 B), from which the span task recomputes the order to map each row's flag back to its
# window. No window is verified byte by byte (the bytes of the earlier copy are in
# another task).

_MUL2 = np.uint64(0xC2B2AE3D27D4EB4F)  # the bucket hash's multiplier (odd)


@njit(inline="always")
def _bucket(g, shift):
    """The bucket of a window from its bucket hash g: the top bits of the mixed hash."""
    return np.int64(_fmix(g) >> shift)


def n_windows(offsets: np.ndarray, k: int) -> int:
    """Windows of k bytes inside the documents of a joined buffer."""
    return int(np.maximum(np.diff(offsets) - k, 0).sum())


@njit(cache=True, nogil=True)
def window_rows(buf, offsets, k, bits, ids, key):
    """off int64[2^bits + 1], the row offsets of the buckets (rows per bucket, cumulated),
    and in key[:nw] the uint64 keys of the nw windows inside a document, in bucket order
    (text order within a bucket). A key is never 0 (0 marks an empty table slot). ids
    (uint16) and key: scratch of at least n_windows(offsets, k) rows, from the caller
    (so a process reuses its pages from chunk to chunk).

    Two passes, each rolling one hash: the bucket hash (bucket ids kept in ids, and
    counted), then the key hash, each key stored at its bucket's next row."""
    if bits > 16:
        raise ValueError("window_rows: at most 2^16 buckets (bucket ids are uint16)")
    nb = 1 << bits
    shift = np.uint64(64 - bits)
    mk, mk2 = _pow(_MUL, k), _pow(_MUL2, k)
    off = np.zeros(nb + 1, np.int64)
    w = 0
    for d in range(len(offsets) - 1):
        s, last = offsets[d], offsets[d + 1] - 1 - k
        if last < s:
            continue
        g = _hash_first(buf, s, k, _MUL2)
        for p in range(s, last + 1):
            if p > s:
                g = _hash_next(g, buf, p, k, _MUL2, mk2)
            b = _bucket(g, shift)
            ids[w] = b
            off[b + 1] += 1
            w += 1
    for b in range(nb):
        off[b + 1] += off[b]
    cur = off[:nb].copy()
    w = 0
    for d in range(len(offsets) - 1):
        s, last = offsets[d], offsets[d + 1] - 1 - k
        if last < s:
            continue
        h = _hash_first(buf, s, k, _MUL)
        for p in range(s, last + 1):
            if p > s:
                h = _hash_next(h, buf, p, k, _MUL, mk)
            x = _fmix(h)
            b = np.int64(ids[w])
            key[cur[b]] = x if x != 0 else np.uint64(1)
            cur[b] += 1
            w += 1
    return off


@njit(cache=True, nogil=True)
def later_from_bits(n, offsets, k, ids, start, packed, later):
    """`later` of a chunk of n bytes into later[:n] (scratch from the caller; returned) from
    the repeat flags of its rows, packed (np.packbits order): bucket b's rows, in text
    order, are bits start[b], start[b] + 1, ... of packed. ids are the windows' buckets in
    text order, from window_rows, so no hash is computed again. The bits are read where
    they lie (unpacked, the 2^bits read cursors touched 8x more cache lines and pages)."""
    cur = start.copy()
    later = later[:n]
    later[:] = False
    w = 0
    for d in range(len(offsets) - 1):
        s, last = offsets[d], offsets[d + 1] - 1 - k
        for p in range(s, last + 1):
            b = np.int64(ids[w])
            r = cur[b]
            later[p] = (packed[r >> 3] >> (7 - (r & 7))) & 1
            cur[b] = r + 1
            w += 1
    return later


@njit(inline="always")
def _slot(x, usize):
    return np.int64(((x & np.uint64(0xFFFFFFFF)) * usize) >> np.uint64(32))


@njit(cache=True, nogil=True)
def _mark(keys, a, b, table, size, later):
    usize = np.uint64(size)
    found = 0
    for i in range(a, b + PREFETCH):
        if i < b:
            prefetch(table, _slot(keys[i], usize))
        p = i - PREFETCH
        if p < a:
            continue
        x = keys[p]
        slot = _slot(x, usize)
        while True:
            t = table[slot]
            if t == 0:
                table[slot] = x
                break
            if t == x:
                later[p] = True
                found += 1
                break
            slot += 1
            if slot == size:
                slot = 0
    return found


@njit(cache=True, nogil=True)
def _mark_big_bucket(keys, off, j0, j1, rows, group_rows, table, load, later):
    """mark_repeats for a group of buckets [j0, j1) of more than group_rows rows (one bucket
    with rows, and empty ones): its rows are split by more
    key bits (stable, so each part stays in corpus order) into parts that each fit a
    cache-sized table. Temporary: 17 B per row of the bucket."""
    sb = 1
    while sb * group_rows < rows and sb < (1 << 16):
        sb *= 2
    mask = np.uint64(sb - 1)
    cnt = np.zeros(sb + 1, np.int64)
    for c in range(off.shape[0]):
        for i in range(off[c, j0], off[c, j1]):
            cnt[np.int64((keys[i] >> np.uint64(40)) & mask) + 1] += 1
    for t in range(sb):
        cnt[t + 1] += cnt[t]
    cur = cnt[:sb].copy()
    sk = np.empty(rows, np.uint64)
    si = np.empty(rows, np.int64)
    for c in range(off.shape[0]):
        for i in range(off[c, j0], off[c, j1]):
            t = np.int64((keys[i] >> np.uint64(40)) & mask)
            sk[cur[t]] = keys[i]
            si[cur[t]] = i
            cur[t] += 1
    hit = np.zeros(rows, np.bool_)
    found = 0
    for t in range(sb):
        size = max(64, int((cnt[t + 1] - cnt[t]) / load) + 1)
        if size > len(table):
            table = np.zeros(size, np.uint64)
        table[:size] = 0
        found += _mark(sk, cnt[t], cnt[t + 1], table, size, hit)
    for r in range(rows):
        if hit[r]:
            later[si[r]] = True
    return found


@njit(cache=True, nogil=True)
def mark_repeats(keys, off, group_rows, load, later=None):
    """later bool[len(keys)]: the key occurs at an earlier row. keys holds several chunks'
    rows; chunk c's rows of bucket j are keys[off[c, j]:off[c, j + 1]] (chunks in corpus
    order). later: the caller's scratch of at least len(keys) rows (cleared here), or None.
    Equal keys share a bucket, so buckets are independent: they are taken in groups of at
    most group_rows rows, each with its own table, small enough for the cache, and within
    a group chunk by chunk (corpus order). A bucket above group_rows is split further by
    key bits (_mark_big_bucket)."""
    nc, nb = off.shape[0], off.shape[1] - 1
    per = np.zeros(nb, np.int64)
    for c in range(nc):
        for j in range(nb):
            per[j] += off[c, j + 1] - off[c, j]
    groups = [0]
    rows = 0
    for j in range(nb):
        if rows and rows + per[j] > group_rows:
            groups.append(j)
            rows = 0
        rows += per[j]
    groups.append(nb)
    table = np.zeros(max(64, int(group_rows / load) + 1), np.uint64)
    if later is None:
        later = np.zeros(len(keys), np.bool_)
    else:
        later = later[:len(keys)]
        later[:] = False
    found = 0
    for t in range(len(groups) - 1):
        j0, j1 = groups[t], groups[t + 1]
        rows = 0
        for j in range(j0, j1):
            rows += per[j]
        if rows > group_rows:  # one bucket with rows (a group of several stays within group_rows)
            found += _mark_big_bucket(keys, off, j0, j1, rows, group_rows, table, load, later)
            continue
        size = max(64, int(rows / load) + 1)
        table[:size] = 0
        for c in range(nc):
            found += _mark(keys, off[c, j0], off[c, j1], table, size, later)
    return later, found
