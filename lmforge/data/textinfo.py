"""How informative a document is: distinct-unit ratio, entropy, boilerplate share, ad/spam terms.

Shared by the quality classifier (as dense features beside its n-grams) and by topic
downsampling (per-cluster information and ad scores). "Units" are words outside CJK
text and single characters inside it (text.py), so one measure serves English, Chinese
and code alike.

The ad/spam term list and the page-chrome lines ship as resource files
(`resources/ad_terms.txt`, `resources/boilerplate_lines.txt`): `[lang]` sections, one
entry per line, `#` comments.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from .config import DEFAULT_BOILERPLATE, DENSE_BASE
from .text import CJK_RE, units

RESOURCES = Path(__file__).parent / "resources"
AD_TERMS = RESOURCES / "ad_terms.txt"
CHROME_LINES = RESOURCES / "boilerplate_lines.txt"
WINDOW = 256  # units: distinct ratio over a fixed window, so it does not fall with length


def read_sections(path: str | Path) -> dict[str, list[str]]:
    """`[lang]` sections of a resource file -> {lang: entries}; one-line error on bad input."""
    out: dict[str, list[str]] = {}
    lang = None
    for no, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            lang = line[1:-1].strip()
            out.setdefault(lang, [])
        elif lang is None:
            raise ValueError(f"{path}:{no}: entry before any [lang] section header")
        else:
            out[lang].append(line)
    if not any(out.values()):
        raise ValueError(f"{path}: no entries (expected [lang] sections with one entry a line)")
    return out


class TermMatcher:
    """Counts term occurrences: CJK terms as substrings, others case-insensitively with no
    word character on either side (so "% off" and "buy now" both match)."""

    def __init__(self, terms: list[str]):
        terms = sorted({t.strip() for t in terms if t.strip()}, key=lambda t: (-len(t), t))
        cjk = [re.escape(t) for t in terms if CJK_RE.search(t)]
        # a word boundary only where the term itself starts / ends with a word character
        other = [(r"(?<!\w)" if re.match(r"\w", t) else "") + re.escape(t)
                 + (r"(?!\w)" if re.search(r"\w$", t) else "") for t in terms if not CJK_RE.search(t)]
        parts = []
        if other:
            parts.append("(?:" + "|".join(other) + ")")
        if cjk:
            parts.append("(?:" + "|".join(cjk) + ")")
        self.regex = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def count(self, text: str) -> int:
        return 0 if self.regex is None else sum(1 for _ in self.regex.finditer(text))

    def found(self, text: str) -> list[str]:
        return [] if self.regex is None else [m.group(0).lower() for m in self.regex.finditer(text)]


@lru_cache(maxsize=8)
def ad_matcher(path: str | None = None) -> TermMatcher:
    sections = read_sections(path or AD_TERMS)
    return TermMatcher([t for terms in sections.values() for t in terms])


@lru_cache(maxsize=1)
def _boilerplate_res():
    return [re.compile(p) for p in DEFAULT_BOILERPLATE]


def distinct_ratio(us: list[str], window: int = WINDOW) -> float:
    """Distinct units / units over the first `window` units (1.0 for an empty text)."""
    head = us[:window]
    return len(set(head)) / len(head) if head else 1.0


def entropy(us: list[str], window: int = 4 * WINDOW) -> float:
    """Unigram entropy over the first `window` units, divided by its maximum log2(n)."""
    head = us[:window]
    n = len(head)
    if n < 2:
        return 1.0
    h = -sum(c / n * math.log2(c / n) for c in Counter(head).values())
    return h / math.log2(n)


def boilerplate_share(lines: list[str]) -> float:
    """Share of non-empty lines matching the filters' default boilerplate patterns."""
    if not lines:
        return 0.0
    pats = _boilerplate_res()
    return sum(any(p.search(l) for p in pats) for l in lines) / len(lines)


_GARBLE_RE = re.compile("[\ufffd\u00c3\u00c2\u00e2\u20ac\u00a2\u0178\u00a4\u00a6\u00a9\u00ae\u00d0"
                        "\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\uf8ff]")
# punctuation that ordinary text and code are made of (ASCII, CJK and typographic)
_PUNCT = re.escape("!\"'(),-.:;?[]{}_/`<>=*#@%&+\\|^~$") + "\u2018\u2019\u201c\u201d\u2014\u2026\u00b7\u3000-\u303f\uff00-\uffef"
_SYMBOL_RE = re.compile(f"[^\\w\\s{_PUNCT}]")
_ALNUM_RE = re.compile(r"[^\W_]")


_PAIRS = ("()", "[]", "{}", "\u201c\u201d", "\uff08\uff09", "\u300a\u300b", "\u300c\u300d", "\u3010\u3011")


def unbalanced(text: str) -> int:
    """Brackets and quotes left open or closed without opening: ( [ { “ （ 《 「 【. Writers
    close what they open; Markov-chained or spliced text, which knows only the last two
    tokens, does not."""
    bad = 0
    for o, c in _PAIRS:
        depth = 0
        for m in re.finditer(re.escape(o) + "|" + re.escape(c), text):
            if m.group(0) == o:
                depth += 1
            elif depth:
                depth -= 1
            else:
                bad += 1
        bad += depth
    return bad


def garble_share(text: str) -> float:
    """Share of characters typical of mojibake, private-use or control characters."""
    return len(_GARBLE_RE.findall(text)) / len(text) if text else 0.0


def info_stats(text: str, ads: TermMatcher | None = None) -> dict[str, float]:
    """Per-document information measures, each in [0, 1] except `units`."""
    us = units(text, lowercase=True)
    lines = [l for l in text.split("\n") if l.strip()]
    n_lines = max(1, len(lines))
    seen: set[str] = set()
    dup = 0
    for l in lines:
        s = l.strip()
        dup += s in seen
        seen.add(s)
    line_units = [len(units(l)) for l in lines] or [0]
    ad_hits = (ads or ad_matcher()).count(text)
    boiler = boilerplate_share(lines)
    distinct = distinct_ratio(us)
    nonspace = (len(text) - sum(map(text.count, " \n\t\r"))) or 1
    symbols = len(_SYMBOL_RE.findall(text))
    chars = [len(l) for l in lines] or [0]
    n_cjk = len(CJK_RE.findall(text))
    return {
        "units": len(us),
        "words": len(us) - n_cjk + n_cjk / 1.5,  # ~1.5 Chinese characters to a word
        "distinct": distinct,
        "entropy": entropy(us),
        "dup_lines": dup / n_lines,
        "boilerplate": boiler,
        "ad_density": min(1.0, ad_hits / max(1, len(us)) * 10),  # 1.0 = one term per 10 units
        # characters in lines of at most 3 units: menus, buttons, tag lists (a share of
        # characters, not of lines, so wrapped text and one-paragraph lines score alike)
        "short_lines": sum(c for c, n in zip(chars, line_units) if n <= 3) / max(1, sum(chars)),
        "symbols": symbols / nonspace,
        "garble": min(1.0, garble_share(text) * 10),
        "alnum": len(_ALNUM_RE.findall(text)) / nonspace,  # StarCoder: < 0.25 is not code
        # minified / obfuscated / encoded blobs: long lines with hardly any spaces (a long
        # line alone is an extracted paragraph, normal in web text)
        "dense_lines": sum(len(l) for l in lines if len(l) >= 200 and l.count(" ") < 0.12 * len(l))
        / max(1, sum(chars)),
        "information": distinct * (1.0 - boiler),  # the topic step's per-document score
        "unbalanced": min(1.0, unbalanced(text) / 4),  # 4 or more unmatched brackets: 1.0
    }


DENSE = DENSE_BASE  # the default dense block (QualityConfig.dense_keys picks others)


DENSE_CHARS = 5000  # the dense block looks at the head of a document (speed)


def dense_features(text: str, keys: tuple[str, ...] | list[str] = DENSE) -> list[float]:
    """The quality model's dense block: info_stats `keys` in order plus a length term."""
    s = info_stats(text[:DENSE_CHARS])
    # no line-length term: line breaks are a format's (wrapped reST vs extracted paragraphs)
    return [s[k] for k in keys] + [min(1.0, math.log10(1 + len(text)) / 6)]
