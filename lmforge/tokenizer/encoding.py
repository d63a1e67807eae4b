"""Encoding helpers shared by the streaming encoder (encode.py) and the per-file executor
tasks (encode_parts.py): loading the tokenizer, encoding a batch, batching documents."""
from __future__ import annotations

import numpy as np


def _load(path: str, specials_in_text: bool):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    # Document text is data, not control: a literal "<|im_start|>" in a web page must not
    # become the ChatML token (prompt-injection into pretraining data).
    tok.encode_special_tokens = not specials_in_text
    return tok


def encode_texts(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of each text, flat (uint32) plus per-text lengths: cheap to pickle back."""
    fast = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: faster
    encs = fast(texts, add_special_tokens=False)
    lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    flat = np.empty(int(lens.sum()), dtype=np.uint32)
    pos = 0
    for e, n in zip(encs, lens):
        flat[pos:pos + n] = e.ids
        pos += n
    return flat, lens


def _doc_batches(docs, size: int, max_bytes: int, default_domain: str, max_docs: int):
    """(payload, texts) batches; payload = [(doc id, domain name, utf-8 bytes)]."""
    payload, texts, nbytes = [], [], 0
    for i, doc in enumerate(docs):
        if max_docs and i >= max_docs:
            break
        dom = doc["meta"].get("domain")
        dom = default_domain if dom is None or dom == "" else str(dom)
        n = len(doc["text"].encode("utf-8"))
        payload.append((doc["id"], dom, n))
        texts.append(doc["text"])
        nbytes += n
        if len(texts) >= size or nbytes >= max_bytes:
            yield payload, texts
            payload, texts, nbytes = [], [], 0
    if texts:
        yield payload, texts
