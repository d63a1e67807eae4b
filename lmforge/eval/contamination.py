"""Benchmark contamination checks.

1. Perplexity gap (Skywork-13B, on GSM8K): score the model on a benchmark's train split,
   its test split and a reference set written to look like it but never published. A model
   that saw the test split during training finds it easier than the look-alike:

       gap = loss(reference) - loss(test)      (nats per token; = ln(ppl_ref / ppl_test))

   flagged when gap > threshold (`contamination.ppl_gap_threshold`, default 0.1: a test
   perplexity ~10% below the reference's). The train split's gap is reported beside it
   (a model trained on it shows a train loss below the reference too, which is expected).

2. N-gram overlap (GPT-3 style): the fraction of benchmark items that share at least one
   n-gram (default 13) with the training data. On token shards the n-grams are of token
   ids (the benchmark is encoded with the same tokenizer); on text, of lowercased words.
   Items shorter than n are counted apart (`too_short`), not as clean.

Benchmark files are jsonl; an item's text is `text` if present, else the question and
its right answer ("question\\nAnswer: answer", MCQ items included).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from lmforge.data.decontam import item_text  # one rule for the eval reader and the data step
from lmforge.eval.perplexity import Score, score_documents
from lmforge.io.jsonl import iter_lines, parse_line

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_BASE = np.uint64(1099511628211)  # FNV prime: odd, so the polynomial hash mixes all positions


def load_texts(path: str | Path, max_items: int = 0) -> tuple[list[str], list[str]]:
    """(texts, errors) from a jsonl benchmark file, or from a .txt file (one item per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark file not found")
    texts, errors = [], []
    for n, raw in iter_lines(path):   # bytes: bad UTF-8 or JSON cost one line, not the file
        if path.suffix == ".txt":
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                errors.append(f"{path}:{n}: invalid UTF-8 ({e.reason} at byte {e.start})")
        else:
            rec, reason, detail = parse_line(raw)
            try:
                if reason:
                    raise ValueError(detail)
                texts.append(item_text(rec))
            except (ValueError, IndexError, AttributeError, TypeError) as e:
                errors.append(f"{path}:{n}: {e}")
        if max_items and len(texts) >= max_items:
            break
    return texts, errors


# ------------------------------------------------------------------ perplexity gap


def text_loss(model, tokenizer, texts: Sequence[str], seq_len: int, bos_id: int | None = None,
              batch_size: int = 8) -> dict:
    """Mean loss per token over texts, each scored alone (bos_id, if given, as first context)."""
    # no special tokens from the tokenizer itself: a BOS-adding one (Llama 3's post-processor) would
    # otherwise give every text two BOS tokens after bos_id
    docs = [([bos_id] if bos_id is not None else []) + list(tokenizer.encode(t, add_special_tokens=False).ids)
            for t in texts]
    scores = score_documents(model, docs, seq_len, batch_size)
    s = Score(docs=len(docs), tokens=sum(c for _, c in scores), nats=sum(n for n, _ in scores),
              bytes=sum(len(t.encode("utf-8")) for t in texts))
    return s.to_dict()


def perplexity_gap(model, tokenizer, test: Sequence[str], reference: Sequence[str],
                   train: Sequence[str] | None = None, threshold: float = 0.1, seq_len: int | None = None,
                   bos_id: int | None = None, batch_size: int = 8) -> dict:
    """Loss on train/test/reference splits and the flag `gap = loss_ref - loss_test > threshold`."""
    seq_len = seq_len or model.cfg.max_seq_len
    splits = {"test": test, "reference": reference, **({"train": train} if train else {})}
    res = {name: text_loss(model, tokenizer, texts, seq_len, bos_id, batch_size) for name, texts in splits.items()}
    gap = res["reference"]["loss"] - res["test"]["loss"]
    out = {"splits": res, "gap": gap, "threshold": threshold, "flagged": bool(gap > threshold)}
    if train:
        out["train_gap"] = res["reference"]["loss"] - res["train"]["loss"]
    return out


# ------------------------------------------------------------------ n-gram overlap


def ngram_hashes(seq: np.ndarray, n: int) -> np.ndarray:
    """uint64 polynomial hashes of every length-n window of an integer sequence."""
    seq = np.asarray(seq, dtype=np.uint64)
    if len(seq) < n:
        return np.zeros(0, np.uint64)
    powers = _BASE ** np.arange(n - 1, -1, -1, dtype=np.uint64)  # wraps mod 2^64 on purpose
    win = np.lib.stride_tricks.sliding_window_view(seq + np.uint64(1), n)
    with np.errstate(over="ignore"):
        return (win * powers).sum(axis=1, dtype=np.uint64)


def _item_grams(items: Sequence[np.ndarray], n: int):
    """(sorted unique hashes, item index lists per hash), and indices of items shorter than n."""
    owner: dict[int, list[int]] = {}
    short = []
    for i, seq in enumerate(items):
        if len(seq) < n:
            short.append(i)
            continue
        for h in np.unique(ngram_hashes(seq, n)).tolist():
            owner.setdefault(h, []).append(i)
    keys = np.array(sorted(owner), dtype=np.uint64)
    return keys, owner, short


def _overlap_result(n_items: int, hit_items: set[int], short: list[int], n: int, unit: str) -> dict:
    eligible = n_items - len(short)
    return {"n": n, "unit": unit, "items": n_items, "too_short": len(short),
            "contaminated": len(hit_items), "fraction": len(hit_items) / eligible if eligible else float("nan"),
            "contaminated_items": sorted(hit_items)[:50]}


def ngram_overlap_tokens(dataset, item_ids: Sequence[Sequence[int]], n: int = 13, chunk: int = 1 << 22,
                         progress: bool = False) -> dict:
    """Benchmark items (token ids) sharing an n-gram with a TokenDataset's documents.

    Streams each shard in chunks (n-1 tokens of overlap); n-grams that cross a document
    boundary are ignored.
    """
    items = [np.asarray(x, dtype=np.int64) for x in item_ids]
    keys, owner, short = _item_grams(items, n)
    hits: set[int] = set()
    total = sum(len(s.tokens) for s in dataset.shards)
    bar = tqdm(total=total, disable=not progress, desc="13-gram scan", unit="tok", unit_scale=True)
    for shard in dataset.shards:
        L = len(shard.tokens)
        for start in range(0, max(L - n + 1, 0), chunk):
            seq = np.asarray(shard.tokens[start:min(start + chunk + n - 1, L)])
            h = ngram_hashes(seq, n)
            pos = start + np.arange(len(h))
            # a window is valid when its first and last token lie in the same document
            same_doc = (np.searchsorted(shard.starts, pos, "right")
                        == np.searchsorted(shard.starts, pos + n - 1, "right"))
            found = h[same_doc & np.isin(h, keys)]
            for v in np.unique(found).tolist():
                hits.update(owner[v])
            bar.update(min(chunk, L - start))
    bar.close()
    return _overlap_result(len(items), hits, short, n, "token")


_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_overlap_text(texts: Iterable[str], bench_texts: Sequence[str], n: int = 13,
                       progress: bool = False) -> dict:
    """Benchmark items sharing a word n-gram (lowercased, punctuation ignored) with `texts`."""
    vocab: dict[str, int] = {}

    def ids(t: str) -> np.ndarray:
        return np.array([vocab.setdefault(w, len(vocab)) for w in words(t)], dtype=np.int64)

    keys, owner, short = _item_grams([ids(t) for t in bench_texts], n)
    hits: set[int] = set()
    for t in tqdm(texts, disable=not progress, desc="13-gram scan", unit="doc"):
        ws = words(t)
        if len(ws) < n:
            continue
        # words unseen in the benchmark cannot be part of a match: map them to -1 ids
        seq = np.array([vocab.get(w, -1) for w in ws], dtype=np.int64)
        h = ngram_hashes(seq, n)
        for v in np.unique(h[np.isin(h, keys)]).tolist():
            hits.update(owner[v])
    return _overlap_result(len(bench_texts), hits, short, n, "word")
