"""Cross-dataset decontamination: remove training documents that contain evaluation items.

Two rules, each its own reason in stats.json:
- `eval_ngram`: the document shares an n-gram of units (lowercased words; CJK characters)
  with an item. n is 13 as in GPT-3 and Llama; GPT-3 lowered it for benchmarks of short
  items, so here an item shorter than `ngram` units uses its own length, and an item
  shorter than `min_ngram` is not matched (counted as `eval_items_too_short`).
- `eval_near_duplicate`: at least `containment` of the item's word `shingle`-grams (the
  MinHash step's shingles) occur in the document. This catches an edited or lightly
  paraphrased item inside a longer document, where every 13-gram may be broken and a
  whole-document MinHash Jaccard is diluted by the rest of the text. Deviation from a
  MinHash LSH query: eval sets are small (10^3-10^5 items), so the item shingle sets are
  held exactly (8 B + 8 B per shingle) and containment is computed, not estimated.

Eval files: jsonl (an item's text is `text`, else the question and its right answer, as
item_text reads benchmarks, here and in lmforge.eval.contamination) or txt (one item per line);
folders and glob patterns are expanded. Unreadable eval records are counted and listed
in work/eval_rejects.txt. A removed document's meta gets `contaminated_by` ("file:line"
of the first item it matched).
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from lmforge.io.atomic import save_npy, write_text
from lmforge.io.jsonl import iter_lines, parse_line

from .pipeline import Step

_MUL = np.uint64(0x100000001B3)


def item_text(rec) -> str:
    """The text of one eval record: `text` if present, else the question and its right answer
    ("question\nAnswer: answer", an MCQ's answer index resolved to its choice). The contamination
    checks (lmforge/eval/contamination.py) read benchmarks with this same function."""
    if isinstance(rec.get("text"), str):
        return rec["text"]
    q, a = rec.get("question"), rec.get("answer")
    if isinstance(rec.get("choices"), list) and isinstance(a, int) and not isinstance(a, bool):
        a = rec["choices"][a]
    if isinstance(q, str) and a is not None:
        return f"{q.strip()}\nAnswer: {a}"
    raise ValueError("record has neither 'text' nor 'question' + 'answer'")


def eval_files(patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        found = (sorted(f for f in p.rglob("*") if f.suffix in (".jsonl", ".txt")) if p.is_dir()
                 else [Path(f) for f in sorted(glob.glob(pat))])
        if not found:
            raise FileNotFoundError(f"decontam.eval: {pat!r} matches no eval file (.jsonl or .txt)")
        out += found
    return out


def read_items(files: list[Path]) -> tuple[list[str], list[str], list[str]]:
    """(item texts, "file:line" of each, errors "file:line: why")."""
    texts, where, errors = [], [], []
    for path in files:
        for n, raw in iter_lines(path):
            try:
                if path.suffix == ".txt":
                    text = raw.decode("utf-8")
                else:
                    rec, reason, detail = parse_line(raw)
                    if reason:
                        raise ValueError(detail)
                    text = item_text(rec)
            except (ValueError, IndexError, AttributeError, TypeError) as e:
                errors.append(f"{path}:{n}: {e}")
                continue
            texts.append(text)
            where.append(f"{path}:{n}")
    return texts, where, errors


def unit_hashes(text: str, lowercase: bool = True) -> np.ndarray:
    """xxh32 of each unit (text.UNIT_RE) as uint64, by the compiled MinHash kernel."""
    from .dedup import minhash_kernels as K

    buf = np.frombuffer((text.lower() if lowercase else text).encode("utf-8", "surrogatepass"),
                        dtype=np.uint8)
    out = np.empty(len(buf), dtype=np.uint32)
    n = K.unit_hashes(buf, 0, len(buf), K.char_classes(), out)
    return out[:n].astype(np.uint64)


def gram_hashes(u: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of each window of n unit hashes (wrapping polynomial)."""
    if len(u) < n:
        return np.zeros(0, np.uint64)
    acc = np.zeros(len(u) - n + 1, dtype=np.uint64)
    for k in range(n):
        acc = acc * _MUL + u[k:k + len(acc)]
    return acc


class EvalIndex:
    """Sorted (hash, item) tables of the eval items' n-grams and shingles, and each item's
    n (0: too short to match)."""

    NAMES = ("gram", "gram_item", "item_n", "shingle", "shingle_item", "n_shingles")

    def __init__(self, gram, gram_item, item_n, shingle, shingle_item, n_shingles):
        self.gram, self.gram_item, self.item_n = gram, gram_item, item_n
        self.shingle, self.shingle_item, self.n_shingles = shingle, shingle_item, n_shingles
        self.lengths = sorted(set(item_n[item_n > 0].tolist()))

    @classmethod
    def build(cls, texts: list[str], cfg) -> "EvalIndex":
        grams, gitem, shingles, sitem = [], [], [], []
        item_n = np.zeros(len(texts), dtype=np.int64)
        n_sh = np.zeros(len(texts), dtype=np.int64)
        for i, t in enumerate(texts):
            u = unit_hashes(t, cfg.lowercase)
            if len(u) < cfg.min_ngram:
                continue  # too short: a match would be chance, not contamination
            item_n[i] = min(cfg.ngram, len(u))
            g = np.unique(gram_hashes(u, int(item_n[i])))
            s = np.unique(gram_hashes(u, min(cfg.shingle, len(u))))
            grams.append(g)
            gitem.append(np.full(len(g), i, np.int64))
            shingles.append(s)
            sitem.append(np.full(len(s), i, np.int64))
            n_sh[i] = len(s)
        return cls(*_table(grams, gitem), item_n, *_table(shingles, sitem), n_sh)

    def save(self, folder: Path) -> None:
        for name in self.NAMES:
            save_npy(folder / f"eval-{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> "EvalIndex":
        return cls(*(np.load(folder / f"eval-{name}.npy") for name in cls.NAMES))

    def ngram_hit(self, u: np.ndarray) -> int:
        """The first item sharing one of its n-grams (at its own n) with units u, else -1."""
        for n in self.lengths:
            h = gram_hashes(u, n)
            if not len(h) or not len(self.gram):
                continue
            lo = np.searchsorted(self.gram, h, side="left")
            hi = np.searchsorted(self.gram, h, side="right")
            items = self.gram_item[_ranges(lo, hi)]
            items = items[self.item_n[items] == n]
            if len(items):
                return int(items.min())
        return -1

    def near_hit(self, u: np.ndarray, shingle: int, containment: float) -> int:
        """The first item with >= containment of its shingles in units u, else -1."""
        if not len(self.shingle) or not len(u):
            return -1
        h = np.unique(gram_hashes(u, min(shingle, len(u))))
        lo = np.searchsorted(self.shingle, h, side="left")
        hi = np.searchsorted(self.shingle, h, side="right")
        counts = np.bincount(self.shingle_item[_ranges(lo, hi)], minlength=len(self.n_shingles))
        ok = np.flatnonzero((self.n_shingles > 0) & (counts >= containment * self.n_shingles))
        return int(ok[0]) if len(ok) else -1


def _table(hashes: list, items: list) -> tuple[np.ndarray, np.ndarray]:
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    it = np.concatenate(items) if items else np.zeros(0, np.int64)
    order = np.lexsort((it, h))
    return h[order], it[order]


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[k], hi[k]) over k, vectorised."""
    size = hi - lo
    keep = size > 0
    lo, size = lo[keep], size[keep]
    if not len(lo):
        return np.zeros(0, np.int64)
    starts = np.repeat(lo - np.r_[0, np.cumsum(size)[:-1]], size)
    return starts + np.arange(int(size.sum()))


class DecontamStep(Step):
    """Global: `prepare` reads the eval files once and saves the index in work/; every shard
    task loads it and tests its documents."""

    def prepare(self, ctx) -> dict:
        files = eval_files(self.cfg.eval)
        texts, where, errors = read_items(files)
        index = EvalIndex.build(texts, self.cfg)
        index.save(ctx.work)
        write_text(ctx.work / "eval_items.txt", "".join(w + "\n" for w in where))
        write_text(ctx.work / "eval_rejects.txt", "".join(e + "\n" for e in errors))
        return {"eval_files": [str(f) for f in files], "eval_items": len(texts),
                "eval_items_too_short": int((index.item_n == 0).sum()),
                "eval_bad_records": len(errors), "ngram": self.cfg.ngram,
                "containment": self.cfg.containment}

    def open_shard(self, ctx, index):
        ev = EvalIndex.load(ctx.work)
        where = (ctx.work / "eval_items.txt").read_text(encoding="utf-8").splitlines()
        cfg = self.cfg

        def apply(i, doc):
            u = unit_hashes(doc["text"], cfg.lowercase)
            hit = ev.ngram_hit(u)
            reason = "eval_ngram"
            if hit < 0 and cfg.containment is not None:
                hit, reason = ev.near_hit(u, cfg.shingle, cfg.containment), "eval_near_duplicate"
            if hit < 0:
                return doc, None
            doc["meta"]["contaminated_by"] = where[hit]
            return None, reason
        return apply
