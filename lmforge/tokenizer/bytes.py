"""Bytes per token of a token dataset: what turns a loss in nats per token into bits per byte,
a number comparable across tokenizers (the trainer's val_bpb/<domain>, eval's bpb)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def decoded_bytes(tokenizer, doc: Sequence[int]) -> int:
    """UTF-8 bytes of a document's text (special tokens such as eos left out)."""
    return len(tokenizer.decode([int(t) for t in doc], skip_special_tokens=True).encode("utf-8"))


def select_docs(dataset, max_docs_per_domain: int = 0) -> dict[str, list[int]]:
    """Global document indices per domain (the first max_docs_per_domain of each; 0 = all)."""
    out = {}
    for d, name in enumerate(dataset.domain_names):
        ids = np.flatnonzero(dataset.doc_domain == d)
        if max_docs_per_domain:
            ids = ids[:max_docs_per_domain]
        if len(ids):
            out[name] = [int(i) for i in ids]
    return out


def bytes_per_token(dataset, tokenizer, max_docs_per_domain: int = 200) -> dict[str, float]:
    """Per-domain UTF-8 bytes per predicted token of a split: turns the trainer's val/<domain>
    losses (nats/token, metrics.jsonl) into bits per byte: bpb = loss / bytes_per_token / ln 2."""
    out = {}
    for domain, ids in select_docs(dataset, max_docs_per_domain).items():
        docs = [np.asarray(dataset.doc(i)) for i in ids]
        tokens = sum(max(len(d) - 1, 0) for d in docs)
        nbytes = sum(decoded_bytes(tokenizer, d) for d in docs)
        if tokens:
            out[domain] = nbytes / tokens
    return out
