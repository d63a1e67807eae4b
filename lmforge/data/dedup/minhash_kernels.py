"""Compiled (numba) MinHash signatures: units, n-gram hashes and the permutation minima in
one pass over a batch of documents' UTF-8 bytes, with no Python per unit and no
(num_perm x shingles) temporaries.

The result is bit-identical to minhash.Shingler + MinHasher (tests compare them):
- units are what text.UNIT_RE finds: one CJK character, or a run of other word (\\w)
  characters; which code point is which comes from a table built with the same regex
  (`char_classes`), so Python's Unicode notion of \\w is kept exactly;
- a unit's hash is xxh32 (seed 0) of its UTF-8 bytes, computed here;
- an n-gram's hash is sum(unit_hash[k] * POLY[k]) mod 2^64, top 32 bits;
- permutation k: ((a_k * x + b_k) mod (2^61 - 1)) mod 2^32, minimum over the shingles.

Why: the numpy path spent ~35% of its time in the regex + per-unit Python loop and the
rest in five full-size uint64 passes per permutation chunk (bench/minhash_speed.py).
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from numba import njit

from ..text import CJK_CLASS

SEPARATOR, WORD, CJK = 0, 1, 2
_P1, _P2, _P3 = np.uint32(2654435761), np.uint32(2246822519), np.uint32(3266489917)
_P4, _P5 = np.uint32(668265263), np.uint32(374761393)


@lru_cache(maxsize=1)
def char_classes() -> np.ndarray:
    """uint8 per code point (0..0x10FFFF): SEPARATOR, WORD or CJK, as UNIT_RE sees it."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, dtype=np.uint8)
    word = [m.start() for m in re.finditer(f"[^\\W{CJK_CLASS}]", every)]
    table[np.asarray(word, dtype=np.int64)] = WORD
    cjk = [m.start() for m in re.finditer(f"[{CJK_CLASS}]", every)]
    table[np.asarray(cjk, dtype=np.int64)] = CJK
    return table


@njit(inline="always")
def _rotl(x, r):
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@njit(inline="always")
def _read32(buf, i):
    return (np.uint32(buf[i]) | (np.uint32(buf[i + 1]) << np.uint32(8))
            | (np.uint32(buf[i + 2]) << np.uint32(16)) | (np.uint32(buf[i + 3]) << np.uint32(24)))


@njit(cache=True, nogil=True)
def xxh32(buf, start, end):
    """xxHash32 (seed 0) of buf[start:end], as xxhash.xxh32_intdigest."""
    n = end - start
    i = start
    if n >= 16:
        v1 = np.uint32(_P1 + _P2)
        v2 = _P2
        v3 = np.uint32(0)
        v4 = np.uint32(0) - _P1
        while i + 16 <= end:
            v1 = np.uint32(_rotl(np.uint32(v1 + _read32(buf, i) * _P2), 13) * _P1)
            v2 = np.uint32(_rotl(np.uint32(v2 + _read32(buf, i + 4) * _P2), 13) * _P1)
            v3 = np.uint32(_rotl(np.uint32(v3 + _read32(buf, i + 8) * _P2), 13) * _P1)
            v4 = np.uint32(_rotl(np.uint32(v4 + _read32(buf, i + 12) * _P2), 13) * _P1)
            i += 16
        h = np.uint32(_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18))
    else:
        h = _P5
    h = np.uint32(h + np.uint32(n))
    while i + 4 <= end:
        h = np.uint32(_rotl(np.uint32(h + _read32(buf, i) * _P3), 17) * _P4)
        i += 4
    while i < end:
        h = np.uint32(_rotl(np.uint32(h + np.uint32(buf[i]) * _P5), 11) * _P1)
        i += 1
    h ^= h >> np.uint32(15)
    h = np.uint32(h * _P2)
    h ^= h >> np.uint32(13)
    h = np.uint32(h * _P3)
    h ^= h >> np.uint32(16)
    return h


@njit(inline="always")
def _code_point(buf, i):
    """(code point, byte length) of the UTF-8 sequence at buf[i] (input is valid UTF-8,
    surrogates passed through)."""
    c = np.int64(buf[i])
    if c < 0x80:
        return c, 1
    if c < 0xE0:
        return ((c & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2
    if c < 0xF0:
        return (((c & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6)
                | (np.int64(buf[i + 2]) & 0x3F)), 3
    return (((c & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
            | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F)), 4


@njit(cache=True, nogil=True)
def unit_hashes(buf, start, end, classes, out):
    """Writes the xxh32 of each unit of buf[start:end] into out; returns their number."""
    n, i, run = 0, start, -1
    while i < end:
        cp, width = _code_point(buf, i)
        cls = classes[cp]
        if cls != 1 and run >= 0:  # a word run ends
            out[n] = xxh32(buf, run, i)
            n += 1
            run = -1
        if cls == 2:
            out[n] = xxh32(buf, i, i + width)
            n += 1
        elif cls == 1 and run < 0:
            run = i
        i += width
    if run >= 0:
        out[n] = xxh32(buf, run, end)
        n += 1
    return n


@njit(cache=True, nogil=True)
def signatures(buf, offsets, classes, ngram, poly, a, b, out):
    """out[d] = the MinHash signature of document d = buf[offsets[d]:offsets[d+1]]
    (all 0xFFFFFFFF when it has no unit). a, b: uint64[num_perm]; out: uint32[d, num_perm]."""
    mersenne = np.uint64((1 << 61) - 1)
    num_perm = len(a)
    units = np.empty(max(1, np.int64(np.max(np.diff(offsets))) if len(offsets) > 1 else 1),
                     dtype=np.uint64)
    sig = np.empty(num_perm, dtype=np.uint64)
    for d in range(len(offsets) - 1):
        m = unit_hashes(buf, offsets[d], offsets[d + 1], classes, units)
        for k in range(num_perm):
            sig[k] = 0xFFFFFFFF
        if m == 0:
            for k in range(num_perm):
                out[d, k] = np.uint32(0xFFFFFFFF)
            continue
        n = min(ngram, m)
        for s in range(m - n + 1):
            acc = np.uint64(0)
            for j in range(n):  # wrapping uint64 arithmetic is intended
                acc += units[s + j] * poly[j % len(poly)]
            x = acc >> np.uint64(32)
            for k in range(num_perm):
                v = a[k] * x + b[k]
                v = (v & mersenne) + (v >> np.uint64(61))
                w = v - mersenne
                if w < v:  # v >= p: no wrap-around
                    v = w
                v &= np.uint64(0xFFFFFFFF)
                if v < sig[k]:
                    sig[k] = v
        for k in range(num_perm):
            out[d, k] = np.uint32(sig[k])
    return out
