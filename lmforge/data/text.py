"""CJK-aware text units shared by the filters, MinHash and topics.

Chinese and Japanese have no spaces between words, so every CJK character counts as
one unit ("word") and everything else splits into \\w+ runs. Word n-grams over these
units are character n-grams inside CJK text and word n-grams elsewhere.
"""
from __future__ import annotations

import re

# CJK unified ideographs (+ext A, compatibility), kana, hangul syllables
CJK_CLASS = ("\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
             "\U00020000-\U0002fa1f")
_CJK = f"[{CJK_CLASS}]"
UNIT_RE = re.compile(f"{_CJK}|[^\\W{CJK_CLASS}]+")
WORD_RE = re.compile(f"[^\\W{CJK_CLASS}]+")  # non-CJK words only
CJK_RE = re.compile(_CJK)


def cjk_count(text: str) -> int:
    return len(CJK_RE.findall(text))


def is_cjk(text: str) -> bool:
    """Whether a text is written mostly in CJK (over 30% of the letters of its first 2,000
    characters): such text has no spaces between words, so it is cut by characters."""
    sample = text[:2000]
    letters = sum(ch.isalpha() for ch in sample) or 1
    return cjk_count(sample) / letters > 0.3


def units(text: str, lowercase: bool = False) -> list[str]:
    """Words for space-separated scripts, single characters for CJK."""
    return UNIT_RE.findall(text.lower() if lowercase else text)


def words(text: str) -> list[str]:
    """Non-CJK words only."""
    return WORD_RE.findall(text)
