"""Synthetic low-quality documents: the quality classifier's offline negatives.

Skywork's negatives are ordinary web pages; offline there is no web, and drawing
negatives from the corpus itself teaches the classifier the corpus's domain and
language instead of quality (the corpus holds the positives' own pages). So each
negative is a *damaged copy* of a corpus document of the same language and domain,
which keeps vocabulary, script and domain fixed and changes only what makes text
low quality:

    shuffled     word salad: the document's own tokens in random order, same line lengths
    stuffed      keyword stuffing: the document's frequent terms repeated between fragments
    boilerplate  a short fragment buried in navigation / cookie / share / footer lines
    spam         ad copy: the shipped ad/spam terms, prices, links, contacts, own keywords
    garbled      mojibake and character noise
    repeated     one or two lines repeated to the original length (template pages)
    minified     one long line, comments and spaces dropped, names mangled to short names
                 (minified files; CJK text: garbled instead)
    markov       machine-garbled: an order-2 Markov chain over the document's own tokens
                 and, with `markov_pool`, those of other documents of the group (topic drift)
    listed       a keyword list: the document's distinct terms joined by separators

Limits: the classifier learns to reject these kinds of damage (and whatever real
low-quality documents `quality.negative` supplies); fluent but vapid, machine-written
or off-topic text is not among them, so it is not what this classifier catches.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from functools import lru_cache

from .config import NEGATIVE_KINDS as KINDS  # noqa: F401  (one list for the config check and the code)
from .text import CJK_CLASS, CJK_RE, is_cjk
from .textinfo import AD_TERMS, CHROME_LINES, read_sections

TOKEN_RE = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+|[^\\w\\s]")


@lru_cache(maxsize=1)
def _resources() -> tuple[dict, dict]:
    return read_sections(AD_TERMS), read_sections(CHROME_LINES)


def _join(tokens: list[str], cjk: bool) -> str:
    return ("" if cjk else " ").join(tokens)


WORD_RE = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+")


def shuffled(text: str, rng: random.Random, cjk: bool) -> str:
    """Words (CJK: characters) in random order; punctuation, spacing and lines stay put."""
    pool = WORD_RE.findall(text)
    rng.shuffle(pool)
    it = iter(pool)
    return WORD_RE.sub(lambda m: next(it), text)


def keywords(text: str, cjk: bool, k: int = 6) -> list[str]:
    if cjk:  # character bigrams stand in for words
        chars = [c for c in text if CJK_RE.match(c)]
        grams = Counter(a + b for a, b in zip(chars, chars[1:]))
    else:
        grams = Counter(t.lower() for t in TOKEN_RE.findall(text) if len(t) > 3 and t.isalpha())
    return [g for g, _ in grams.most_common(k)] or ["text"]


def _fragment(text: str, rng: random.Random, n: int) -> str:
    """A stretch of the original text (its own spacing and punctuation) of about n tokens."""
    spans = [m.span() for m in TOKEN_RE.finditer(text)]
    if len(spans) <= n:
        return text.strip()
    s = rng.randrange(0, len(spans) - n)
    return text[spans[s][0]:spans[s + n - 1][1]].replace("\n", " ")


def stuffed(text: str, rng: random.Random, cjk: bool) -> str:
    kws = keywords(text, cjk)
    ads = _resources()[0].get("zh" if cjk else "en", [])
    lines = []
    for _ in range(rng.randint(6, 14)):
        frag = _fragment(text, rng, rng.randint(4, 12))
        stuff = [rng.choice(kws) for _ in range(rng.randint(5, 15))]
        if ads and rng.random() < 0.3:
            stuff.insert(rng.randrange(len(stuff)), rng.choice(ads))
        lines.append(frag + (" " if not cjk else "") + _join(stuff, cjk))
    return "\n".join(lines)


def boilerplate(text: str, rng: random.Random, cjk: bool) -> str:
    chrome = _resources()[1]["zh" if cjk else "en"]
    n = max(8, min(60, len(TOKEN_RE.findall(text)) // 8))
    body = _fragment(text, rng, n)
    head = [rng.choice(chrome) for _ in range(rng.randint(8, 20))]
    tail = [rng.choice(chrome) for _ in range(rng.randint(8, 20))]
    return "\n".join(head + [body] + tail)


def spam(text: str, rng: random.Random, cjk: bool) -> str:
    ads = _resources()[0]["zh" if cjk else "en"]
    kws = keywords(text, cjk)
    lines = []
    for _ in range(rng.randint(5, 12)):
        a, b, kw = rng.choice(ads), rng.choice(ads), rng.choice(kws)
        price = f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
        if cjk:
            lines.append(rng.choice([f"{a}{kw}，{b}！仅需{price}元", f"【{a}】{kw}{b}，加微信{rng.randint(10**7, 10**8)}",
                                     f"{kw}{a}，{b}，电话{rng.randint(10**9, 10**10)}"]))
        else:
            lines.append(rng.choice([f"{a.title()}! {kw} {b} only ${price}",
                                     f"{kw} {a} - {b} at www.{kw}-{rng.randint(1, 99)}.com",
                                     f"{a.upper()} {kw}!!! {b}, call {rng.randint(10**9, 10**10)}"]))
    return "\n".join(lines)


_NOISE = "#$%&*+=<>@^_~|\\/{}[]0123456789abcdefxyzQWZ"


def garbled(text: str, rng: random.Random, cjk: bool) -> str:
    body = text[:4000]
    if rng.random() < 0.5 and any(ord(c) > 127 for c in body):
        # UTF-8 bytes read with the wrong codec: the classic mojibake
        return body.encode("utf-8").decode("latin-1" if not cjk else "gbk", errors="replace")
    return "".join(rng.choice(_NOISE) if (not c.isspace() and rng.random() < 0.35) else c
                   for c in body)


def repeated(text: str, rng: random.Random, cjk: bool) -> str:
    lines = [l for l in text.split("\n") if l.strip()] or [text]
    keep = rng.sample(lines, min(len(lines), rng.randint(1, 2)))
    reps = max(4, min(200, len(text) // max(1, sum(len(l) + 1 for l in keep))))
    return "\n".join(keep * reps)


DOCSTRING_RE = re.compile(r'"""[\s\S]*?"""|' + r"'''[\s\S]*?'''")


def minified(text: str, rng: random.Random, cjk: bool) -> str:
    """Minified: one long line, comments and spaces gone, names mangled to a, b, ..., aa
    (the minified and generated files code-corpus filters remove, e.g. StarCoder's).
    CJK text has no names to replace and a poem on one line is still a poem: garbled."""
    if cjk:
        return garbled(text, rng, cjk)
    body = DOCSTRING_RE.sub("''", text[:8000])  # docstrings go too (pyminifier)
    body = re.sub(r"(?m)\s*(#|//).*$", "", body)
    names: dict[str, str] = {}

    def rename(m):
        w = m.group(0)
        if len(w) < 3:
            return w
        if w not in names:  # mangled to short names, as terser / uglify do
            n, name = len(names), ""
            while True:
                name = "abcdefghijklmnopqrstuvwxyz"[n % 26] + name
                n = n // 26 - 1
                if n < 0:
                    break
            names[w] = name
        return names[w]
    body = WORD_RE.sub(rename, body)
    body = re.sub(r"\s*([=+\-*/(){}\[\],:;<>.])\s*", r"\1", body)  # minifiers drop these spaces
    return re.sub(r"\s*\n\s*", ";", body).strip(";")


def markov(text: str, rng: random.Random, cjk: bool, pool: tuple[str, ...] = ()) -> str:
    """Machine-garbled text: an order-2 Markov chain over the document's own tokens (words;
    CJK: characters), locally fluent and globally meaningless, as spam generators and
    article spinners write it. Lines break where the original's average line would. With
    `pool` (other documents of the group) the chain runs over all of them, so it drifts
    between topics as a spinner fed several pages does; the copy is as long as `text`."""
    own = TOKEN_RE.findall(text[:8000])
    if len(own) < 10:
        return shuffled(text, rng, cjk)
    toks = own + [t for p in pool for t in TOKEN_RE.findall(p[:8000])]
    nxt: dict[tuple[str, str], list[str]] = {}
    for a, b, c in zip(toks, toks[1:], toks[2:]):
        nxt.setdefault((a, b), []).append(c)
    i = rng.randrange(len(own) - 2)
    a, b = toks[i], toks[i + 1]
    out = [a, b]
    per_line = max(5, len(own) // max(1, text.count("\n") + 1))
    while len(out) < len(own):
        choices = nxt.get((a, b))
        if not choices or rng.random() < 0.08:   # jump: spinners splice unrelated pieces
            i = rng.randrange(len(toks) - 2)
            a, b = toks[i], toks[i + 1]
            out += [a, b]
            continue
        a, b = b, rng.choice(choices)
        out.append(b)
    lines = [_join(out[j:j + per_line], cjk) for j in range(0, len(out), per_line)]
    # tokens were split from their punctuation: glue it back, so spacing is no tell
    return re.sub(r" ([.,;:!?)\]}%])|([(\[{]) ", r"\1\2", "\n".join(lines))


def listed(text: str, rng: random.Random, cjk: bool) -> str:
    """A keyword list: the document's distinct words (CJK: 2-4 character pieces) joined by
    separators, as tag clouds, SEO keyword blocks and directory pages are."""
    if cjk:
        chars = "".join(CJK_RE.findall(text[:6000]))
        terms = list(dict.fromkeys(chars[j:j + rng.randint(2, 4)] for j in range(0, max(1, len(chars) - 4), 3)))
    else:
        terms = list(dict.fromkeys(w for w in WORD_RE.findall(text[:6000]) if len(w) > 2))
    rng.shuffle(terms)
    terms = terms[:rng.randint(30, 120)] or [text[:20]]
    sep = rng.choice(["、", "，", " | ", " "] if cjk else [", ", " | ", " · ", "; ", "\n"])
    return sep.join(terms)


FUNCS = {"shuffled": shuffled, "stuffed": stuffed, "boilerplate": boilerplate, "spam": spam,
         "garbled": garbled, "repeated": repeated, "minified": minified, "markov": markov,
         "listed": listed}


def degrade(text: str, kind: str, rng: random.Random, pool: tuple[str, ...] = ()) -> str:
    """A damaged copy of `text` (see the module doc for the kinds); `pool`: other documents
    of the group, which the markov kind mixes in."""
    if kind == "markov":
        return markov(text, rng, is_cjk(text), pool)
    return FUNCS[kind](text, rng, is_cjk(text))
