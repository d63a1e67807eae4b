"""Generated corpora with known duplicates, for the dedup tests and bench/dedup.py."""
from __future__ import annotations

import numpy as np

_CJK_BASE = 0x4E00


def _vocab(rng: np.random.Generator, size: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(2, 9)))) for _ in range(size)]


def near_duplicates(n_docs: int = 1000, dup_fraction: float = 0.2, edit: float = 0.01,
                    words: tuple[int, int] = (80, 300), cjk_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[list[str], np.ndarray]:
    """Texts plus `orig`: orig[i] = index of the document i is a planted near-copy of, else -1.

    Originals are random word (or CJK character) sequences drawn from a Zipf-like
    vocabulary; a near-copy replaces a fraction `edit` of an original's units (and comes
    later in the list, so the original is the one to keep).
    """
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng, 5000)
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    n_dup = int(n_docs * dup_fraction)
    n_orig = n_docs - n_dup
    texts, is_cjk = [], []
    for _ in range(n_orig):
        n = int(rng.integers(*words))
        if rng.random() < cjk_fraction:
            chars = rng.integers(_CJK_BASE, _CJK_BASE + 3000, size=n * 2)
            texts.append("".join(map(chr, chars)))
            is_cjk.append(True)
        else:
            texts.append(" ".join(np.asarray(vocab)[rng.choice(len(vocab), size=n, p=p)]))
            is_cjk.append(False)
    orig = np.full(n_docs, -1, dtype=np.int64)
    for k in range(n_dup):
        src = int(rng.integers(0, n_orig))
        if is_cjk[src]:
            units = list(texts[src])
        else:
            units = texts[src].split(" ")
        for j in rng.choice(len(units), size=max(1, int(len(units) * edit)), replace=False):
            units[j] = chr(int(rng.integers(_CJK_BASE, _CJK_BASE + 3000))) if is_cjk[src] \
                else vocab[int(rng.integers(len(vocab)))]
        texts.append(("" if is_cjk[src] else " ").join(units))
        orig[n_orig + k] = src
    return texts, orig


def repeated_spans(n_docs: int = 50, length: tuple[int, int] = (50, 400), alphabet: str = "abcd",
                   cjk: bool = True, n_spans: int = 10, span_len: tuple[int, int] = (20, 150),
                   seed: int = 0) -> list[str]:
    """Random texts over a small alphabet (so accidental repeats happen too) with planted
    spans copied across and within documents; CJK characters included when `cjk`."""
    rng = np.random.default_rng(seed)
    chars = list(alphabet) + (["中", "文", "字", "é", "😀"] if cjk else [])
    docs = ["".join(rng.choice(chars, size=int(rng.integers(*length)))) for _ in range(n_docs)]
    spans = ["".join(rng.choice(chars, size=int(rng.integers(*span_len)))) for _ in range(n_spans)]
    for _ in range(n_docs):
        d = int(rng.integers(n_docs))
        s = spans[int(rng.integers(n_spans))]
        pos = int(rng.integers(len(docs[d]) + 1))
        docs[d] = docs[d][:pos] + s + docs[d][pos:]
    return docs


def stdlib_documents(max_docs: int = 2000, lines: int = 60, min_words: int = 80) -> list[str]:
    """Real, mostly unique text that every Python has: its standard library's .py files,
    cut into documents of `lines` lines (files and chunks in sorted order)."""
    import sysconfig
    from pathlib import Path

    docs = []
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = f.read_text(encoding="utf-8", errors="replace").splitlines()
        for i in range(0, len(text), lines):
            chunk = "\n".join(text[i:i + lines])
            if len(chunk.split()) >= min_words:
                docs.append(chunk)
                if len(docs) >= max_docs:
                    return docs
    return docs


def plant_near_duplicates(texts: list[str], n_copies: int, edit: float, seed: int = 0
                          ) -> tuple[list[str], np.ndarray]:
    """texts + n_copies edited copies of distinct random texts (appended, so the original
    comes first). A copy has a fraction `edit` of its whitespace-separated words edited:
    replaced by a word from elsewhere in the corpus (60%), deleted (20%), or a word
    inserted after it (20%). Returns (texts, orig) with orig[i] = source index or -1."""
    rng = np.random.default_rng(seed)
    vocab = [w for t in texts[:200] for w in t.split()]
    out, orig = list(texts), [-1] * len(texts)
    for src in sorted(rng.choice(len(texts), size=n_copies, replace=False).tolist()):
        words = texts[src].split(" ")
        n_edit = max(1, int(round(len(words) * edit)))
        for j in sorted(rng.choice(len(words), size=min(n_edit, len(words)), replace=False),
                        reverse=True):
            r = rng.random()
            if r < 0.6:
                words[j] = vocab[int(rng.integers(len(vocab)))]
            elif r < 0.8:
                del words[j]
            else:
                words.insert(j + 1, vocab[int(rng.integers(len(vocab)))])
        out.append(" ".join(words))
        orig.append(src)
    return out, np.asarray(orig, dtype=np.int64)
