"""Reference scores a run can be read against without training anything.

- uniform: an untrained model spreads its probability evenly over the vocabulary, so its
  loss is ln V nats/token (a freshly initialised lmforge model measures within ~0.01 of
  it: the first pretraining step's loss);
- unigram: every token predicted by its frequency in the training split (add-1/2
  smoothing), scored on the same held-out documents the eval scores (every token but a
  document's first, as lmforge.eval.perplexity does). A model below the unigram loss has
  learned something beyond token frequencies: the first sign of progress on a tiny run.

Counting reads the token data once (at most `max_train_tokens`, spread over the shards).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

LN2 = math.log(2.0)


def unigram_logprobs(train, max_train_tokens: int = 50_000_000, alpha: float = 0.5):
    """log p(token) under add-alpha smoothed unigram counts of a TokenDataset's tokens."""
    import numpy as np

    vocab = train.vocab_size
    counts = np.zeros(vocab, dtype=np.int64)
    total = sum(int(s.starts[-1]) for s in train.shards) or 1
    for s in train.shards:
        take = int(s.starts[-1]) if total <= max_train_tokens else \
            int(s.starts[-1] * max_train_tokens / total)
        toks = np.asarray(s.tokens[:take])
        counts += np.bincount(toks, minlength=vocab)[:vocab]
    return np.log((counts + alpha) / (counts.sum() + alpha * vocab))


def token_baselines(data_dir: str | Path, split: str = "val", max_docs_per_domain: int = 0,
                    max_train_tokens: int = 50_000_000) -> dict | None:
    """Cached _token_baselines (the report asks for the same documents from several sections;
    the cache key includes meta.json's modification time, so rewritten data is read again)."""
    try:
        stamp = (Path(data_dir) / "meta.json").stat().st_mtime_ns
    except OSError:
        return None
    return _cached(str(data_dir), split, int(max_docs_per_domain), int(max_train_tokens), stamp)


@lru_cache(maxsize=16)
def _cached(data_dir: str, split: str, max_docs_per_domain: int, max_train_tokens: int, _stamp: int):
    return _token_baselines(data_dir, split, max_docs_per_domain, max_train_tokens)


def _token_baselines(data_dir: str | Path, split: str = "val", max_docs_per_domain: int = 0,
                     max_train_tokens: int = 50_000_000) -> dict | None:
    """{"vocab_size", "uniform" (nats/token), "domains": {d: {"docs", "tokens", "nats", "loss"}},
    "all": {...}} for the held-out docs the eval picks (its first max_docs_per_domain per
    domain); None when the token data cannot be read."""
    from lmforge.shards import TokenDataset
    from lmforge.tokenizer.bytes import select_docs

    try:
        train, held = TokenDataset(data_dir, "train"), TokenDataset(data_dir, split)
    except (OSError, ValueError):
        return None
    if not train.shards or not held.shards:
        return None
    logp = unigram_logprobs(train, max_train_tokens)
    domains, all_tok, all_nats, all_docs = {}, 0, 0.0, 0
    for name, ids in select_docs(held, max_docs_per_domain).items():
        tokens, nats = 0, 0.0
        for i in ids:
            doc = held.doc(i)
            tokens += max(len(doc) - 1, 0)
            nats -= float(logp[doc[1:]].sum())
        if tokens:
            domains[name] = {"docs": len(ids), "tokens": tokens, "nats": nats, "loss": nats / tokens}
            all_tok, all_nats, all_docs = all_tok + tokens, all_nats + nats, all_docs + len(ids)
    out = {"vocab_size": train.vocab_size, "uniform": math.log(train.vocab_size), "domains": domains,
           "data": str(data_dir), "split": split}
    if all_tok:
        out["all"] = {"docs": all_docs, "tokens": all_tok, "nats": all_nats, "loss": all_nats / all_tok}
    return out


def bpb(loss: float | None, tokens: int, nbytes: int) -> float | None:
    """Bits per byte of a per-token loss over `tokens` tokens of `nbytes` bytes."""
    if loss is None or not tokens or not nbytes:
        return None
    return loss * tokens / nbytes / LN2
