"""Gopher repetition rules (Rae et al. 2021, table A1), CJK-aware.

Duplicate lines / paragraphs (by count and by characters), the share of characters in
the most frequent 2..4-gram, and the share of characters in duplicated 5..10-grams.
n-grams run over units (words, or characters in CJK text), so Chinese spam that
repeats a phrase is caught just like English spam.
"""
from __future__ import annotations

import re
from collections import Counter

from .heuristics import View

_PARA_RE = re.compile(r"\n\s*\n")


def _dup_stats(items: list[str]) -> tuple[int, int]:
    """(count, characters) of items equal to an earlier item."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def _top_ngram_chars(u: list[str], n: int) -> int:
    if len(u) < n:
        return 0
    grams = Counter(tuple(u[i:i + n]) for i in range(len(u) - n + 1))
    gram, count = grams.most_common(1)[0]
    return count * sum(len(x) for x in gram) if count > 1 else 0


def _dup_ngram_chars(u: list[str], n: int) -> int:
    """Characters covered by n-grams seen before (non-overlapping, as in Gopher)."""
    seen: set[tuple] = set()
    chars, i = 0, 0
    while i + n <= len(u):
        g = tuple(u[i:i + n])
        if g in seen:
            chars += sum(len(x) for x in g)
            i += n
        else:
            seen.add(g)
            i += 1
    return chars


def repetition(v: View, cfg) -> str | None:
    total = len(v.text)
    if total == 0:
        return None
    lines = v.lines
    if lines:
        n, chars = _dup_stats(lines)
        if cfg.max_dup_line_ratio is not None and n / len(lines) > cfg.max_dup_line_ratio:
            return "dup_lines"
        if cfg.max_dup_line_char_ratio is not None and chars / total > cfg.max_dup_line_char_ratio:
            return "dup_line_chars"
    paras = [p.strip() for p in _PARA_RE.split(v.text) if p.strip()]
    if paras:
        n, chars = _dup_stats(paras)
        if cfg.max_dup_para_ratio is not None and n / len(paras) > cfg.max_dup_para_ratio:
            return "dup_paras"
        if cfg.max_dup_para_char_ratio is not None and chars / total > cfg.max_dup_para_char_ratio:
            return "dup_para_chars"
    u = v.units
    unit_chars = sum(len(x) for x in u) or 1
    for n, limit in sorted(cfg.max_top_ngram_ratio.items()):
        if _top_ngram_chars(u, cjk_n(v, n, cfg)) / unit_chars > limit:
            return f"top_{n}gram"
    for n, limit in sorted(cfg.max_dup_ngram_ratio.items()):
        if _dup_ngram_chars(u, cjk_n(v, n, cfg)) / unit_chars > limit:
            return f"dup_{n}gram"
    return None


def cjk_n(v: View, n: int, cfg) -> int:
    """Gopher's n counts words; in text that is mostly CJK the units are characters, and a
    Chinese word is ~1.5 characters (cjk_chars_per_word), so an n-word rule looks at
    round(n * 1.5)-character n-grams there (5 words -> 8 characters): with n characters
    the same content repeats more often than with n words."""
    if v.cjk_share >= cfg.cjk_unit_share:
        return max(n, round(n * cfg.cjk_chars_per_word))
    return n
