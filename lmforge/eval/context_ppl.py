"""Perplexity by context length (Index-1.9B-32K chose its RoPE base from such a sweep).

Perplexity "at length L" means: sequences of L + 1 tokens, each scored as ONE causal window
(positions 0..L-1, no document masks, no reset positions), loss averaged over its L
predicted tokens. Only text that really is L tokens long can measure that, so the
sequences come from:

  documents     the first L + 1 tokens of every held-out document that has at least L + 1
                tokens (the default; `max_seqs` of them, longest split first);
  concatenated  when fewer than `min_docs` documents are that long (or `concat: always`):
                the split's documents in order, joined by their end-of-document tokens, cut
                into consecutive L + 1 windows. Later positions then also see unrelated
                earlier documents; the result records which source each length used.

Two numbers per length: `ppl` over all L predicted tokens, and `tail_ppl` over the last
quarter of the positions only, the ones that actually have a long context before them (a
model that cannot use or even tolerate the far context shows it there first).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def long_sequences(dataset, length: int, max_seqs: int, min_docs: int, concat: str = "auto") -> tuple[list, dict]:
    """(up to max_seqs int64 arrays of length + 1 tokens, {"source", "sequences", "long_docs"})."""
    need = length + 1
    lengths = np.array([dataset.doc_len(i) for i in range(dataset.n_docs)], dtype=np.int64)
    long_ids = np.flatnonzero(lengths >= need)
    info = {"long_docs": int(len(long_ids)), "docs": int(dataset.n_docs)}
    if concat == "never" or (concat == "auto" and len(long_ids) >= min_docs):
        order = long_ids[np.argsort(-lengths[long_ids], kind="stable")][:max_seqs]
        seqs = [np.asarray(dataset.doc(int(i))[:need], dtype=np.int64) for i in order]
        return seqs, {**info, "source": "documents", "sequences": len(seqs)}
    seqs, buf, n = [], [], 0
    for i in range(dataset.n_docs):
        buf.append(np.asarray(dataset.doc(i), dtype=np.int64))
        n += len(buf[-1])
        while n >= need and len(seqs) < max_seqs:
            flat = np.concatenate(buf)
            seqs.append(flat[:need])
            buf, n = [flat[need:]], len(flat) - need
        if len(seqs) >= max_seqs:
            break
    return seqs, {**info, "source": "concatenated", "sequences": len(seqs)}


@torch.no_grad()
def position_nll(model, ids: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """NLL [T - 1] (float32) of ids[1:] given the prefix, one causal window, logits in chunks
    (at 32K tokens x 65K vocabulary the whole logits would be 8 GB)."""
    from lmforge.model.attention import build_mask
    from lmforge.model.rope import compute_inv_freq, rope_cos_sin
    from lmforge.model.transformer import Transformer

    x_ids, y = ids[:, :-1], ids[0, 1:]
    if not isinstance(model, Transformer):
        return -torch.log_softmax(model(x_ids)[0].float(), -1).gather(1, y[:, None])[:, 0]
    T = x_ids.shape[1]
    x = model.embed_tokens(x_ids)
    pos = torch.arange(T, device=ids.device)[None]
    cos, sin = rope_cos_sin(pos, compute_inv_freq(model.cfg, T, device=x.device), x.dtype)
    mask = build_mask(model.cfg.attn_backend, None, 1, T, x.device)
    for layer in model.layers:
        x = layer(x, cos, sin, mask)
    out = []
    for s in range(0, T, chunk):
        logp = torch.log_softmax(model.logits(x[:, s:s + chunk]).float()[0], -1)
        out.append(-logp.gather(1, y[s:s + chunk, None])[:, 0])
    return torch.cat(out)


def ppl_at_length(model, seqs: list[np.ndarray], device) -> dict:
    """{"loss", "ppl", "tail_loss", "tail_ppl", "sequences", "tokens"} over the sequences."""
    total, n, tail_total, tail_n = 0.0, 0, 0.0, 0
    for s in seqs:
        nll = position_nll(model, torch.as_tensor(s, device=device)[None]).double().cpu()
        q = len(nll) - max(1, len(nll) // 4)
        total, n = total + float(nll.sum()), n + len(nll)
        tail_total, tail_n = tail_total + float(nll[q:].sum()), tail_n + len(nll) - q
    if not n:
        return {"sequences": 0, "tokens": 0, "loss": None, "ppl": None, "tail_loss": None, "tail_ppl": None}
    loss, tail = total / n, tail_total / tail_n
    return {"sequences": len(seqs), "tokens": n, "loss": loss, "ppl": math.exp(min(loss, 50.0)),
            "tail_loss": tail, "tail_ppl": math.exp(min(tail, 50.0))}
