"""Document-level heuristic rules (Gopher / C4 style), CJK-aware.

Each rule takes a `View` of the document and the FilterConfig and returns the name
of the reason it drops the document for, or None. Lengths count "units": words in
space-separated scripts, characters in CJK text (Chinese has no spaces).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..text import units, words

# ordinary punctuation (Latin and CJK) is not "symbol" junk
PUNCT = set(".,;:!?'\"()-–—/%&[]"
            "。，、；：！？“”‘’（）《》【】「」『』…·")
BULLETS = ("•", "-", "*", "·", "●", "▪", "◦", "‣", "–")


@dataclass
class View:
    text: str

    @cached_property
    def units(self) -> list[str]:
        return units(self.text)

    @cached_property
    def words(self) -> list[str]:  # non-CJK words
        return words(self.text)

    @cached_property
    def lines(self) -> list[str]:
        return [l for l in (s.strip() for s in self.text.split("\n")) if l]

    @cached_property
    def nonspace(self) -> int:
        return sum(1 for c in self.text if not c.isspace())


def length(v: View, cfg) -> str | None:
    n = len(v.units)
    if cfg.min_units is not None and n < cfg.min_units:
        return "too_short"
    if cfg.max_units is not None and n > cfg.max_units:
        return "too_long"
    return None


def mean_word_length(v: View, cfg) -> str | None:
    if len(v.words) < 10:  # mostly CJK (or tiny): word length is not meaningful
        return None
    mean = sum(len(w) for w in v.words) / len(v.words)
    if cfg.min_mean_word_len is not None and mean < cfg.min_mean_word_len:
        return "mean_word_len_low"
    if cfg.max_mean_word_len is not None and mean > cfg.max_mean_word_len:
        return "mean_word_len_high"
    return None


def _is_symbol(c: str) -> bool:
    return not (c.isalnum() or c.isspace() or c in PUNCT)


def symbol_ratio(v: View, cfg) -> str | None:
    if cfg.max_symbol_ratio is None or v.nonspace == 0:
        return None
    n = sum(1 for c in v.text if _is_symbol(c))
    return "symbol_ratio" if n / v.nonspace > cfg.max_symbol_ratio else None


def digit_ratio(v: View, cfg) -> str | None:
    if cfg.max_digit_ratio is None or v.nonspace == 0:
        return None
    n = sum(1 for c in v.text if c.isdigit())
    return "digit_ratio" if n / v.nonspace > cfg.max_digit_ratio else None


def alpha_words(v: View, cfg) -> str | None:
    """Gopher: at least 80% of words contain a letter (CJK characters are letters)."""
    if cfg.min_alpha_word_ratio is None or not v.units:
        return None
    tokens = v.text.split()
    if not tokens:
        return None
    alpha = sum(1 for t in tokens if any(c.isalpha() for c in t))
    return "alpha_word_ratio" if alpha / len(tokens) < cfg.min_alpha_word_ratio else None


def line_shapes(v: View, cfg) -> str | None:
    if not v.lines:
        return None
    if cfg.max_bullet_line_ratio is not None:
        bullets = sum(1 for l in v.lines if l.startswith(BULLETS))
        if bullets / len(v.lines) > cfg.max_bullet_line_ratio:
            return "bullet_lines"
    if cfg.max_ellipsis_line_ratio is not None:
        ell = sum(1 for l in v.lines if l.endswith(("...", "…")))
        if ell / len(v.lines) > cfg.max_ellipsis_line_ratio:
            return "ellipsis_lines"
    return None



RULES = [length, mean_word_length, symbol_ratio, digit_ratio, alpha_words, line_shapes]
