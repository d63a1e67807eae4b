"""Document-level heuristic rules (Gopher / C4 style), CJK-aware.

Each rule takes a `View` of the document and the FilterConfig and returns the name
of the reason it drops the document for, or None. Lengths count "units": words in
space-separated scripts, characters in CJK text (Chinese has no spaces).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..text import CJK_RE, cjk_count, units, words

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
    def cjk_share(self) -> float:
        """CJK characters / units (0 for text without units)."""
        return cjk_count(self.text) / len(self.units) if self.units else 0.0

    @cached_property
    def nonspace(self) -> int:
        return sum(1 for c in self.text if not c.isspace())


def length(v: View, cfg) -> str | None:
    """min_units / max_units in units: a CJK character is a unit (recipes set min_units for
    short poems in characters). The same content has ~1.5 Chinese characters per English
    word, so a Chinese text reaches a threshold with less content (docs/quality-topics.md)."""
    n = len(v.units)
    if cfg.min_units is not None and n < cfg.min_units:
        return "too_short"
    if cfg.max_units is not None and n > cfg.max_units:
        return "too_long"
    return None


def mean_word_length(v: View, cfg) -> str | None:
    """Gopher's mean word length, for space-delimited text only. Chinese has no word
    boundaries to measure; in a text whose units are mostly CJK characters the non-CJK
    words are embedded fragments (option names, `%s`, numbers) whose length says nothing
    of the prose around them, so the rule does not judge it (cjk_unit_share)."""
    if len(v.words) < 10 or v.cjk_share >= cfg.cjk_unit_share:
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


def alpha_tokens(text: str) -> tuple[int, int]:
    """(tokens with a letter, tokens) where a token is a whitespace-separated word outside
    CJK text and one character inside it: a line of Chinese is as many units as it has
    characters, not one "word" beside each table border and bullet. Punctuation glued to
    CJK characters (。，) is no token of its own, as a comma glued to an English word is not."""
    alpha = total = 0
    for tok in text.split():
        n_cjk = cjk_count(tok)
        if not n_cjk:
            total += 1
            alpha += any(c.isalpha() for c in tok)
            continue
        alpha += n_cjk
        total += n_cjk
        for piece in CJK_RE.split(tok):
            if any(c.isalnum() for c in piece):    # "2023" in "2023年", "Linux" in "Linux系统"
                total += 1
                alpha += any(c.isalpha() for c in piece)
    return alpha, total


def alpha_words(v: View, cfg) -> str | None:
    """Gopher: at least 80% of words contain a letter (CJK characters are letters and
    count one each)."""
    if cfg.min_alpha_word_ratio is None or not v.units:
        return None
    alpha, total = alpha_tokens(v.text)
    if not total:
        return None
    return "alpha_word_ratio" if alpha / total < cfg.min_alpha_word_ratio else None


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
