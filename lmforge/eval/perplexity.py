"""Per-domain perplexity and bits per byte on held-out token shards.

Perplexity depends on the tokenizer (a larger vocabulary means fewer, harder tokens), so
runs with different tokenizers are compared in bits per byte instead:

    bpb = total nats / ln 2 / total UTF-8 bytes of the decoded text

Each document is scored on its own (no context from other documents): it is cut into
windows of at most `seq_len` input tokens, window k predicting tokens k*L+1 .. k*L+L,
so every token but the document's first is predicted exactly once. Windows are packed
into rows with a block-diagonal mask and restarted positions (as in training), which
gives the same numbers as scoring each window alone, only faster. The byte count is the
document decoded without special tokens (its first token's bytes included: a standard
approximation that makes bpb a little optimistic for very short documents).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lmforge.tokenizer.bytes import bytes_per_token, decoded_bytes, select_docs  # noqa: F401 (re-exported)

LN2 = math.log(2.0)


@dataclass
class Score:
    """Summed negative log-likelihood (nats) over `tokens` predicted tokens and `bytes` bytes."""
    docs: int = 0
    tokens: int = 0
    nats: float = 0.0
    bytes: int = 0

    def add(self, other: "Score") -> None:
        self.docs += other.docs
        self.tokens += other.tokens
        self.nats += other.nats
        self.bytes += other.bytes

    def to_dict(self) -> dict:
        loss = self.nats / self.tokens if self.tokens else float("nan")
        return {"docs": self.docs, "tokens": self.tokens, "bytes": self.bytes, "nats": self.nats,
                "loss": loss, "ppl": math.exp(min(loss, 50.0)) if self.tokens else float("nan"),
                "bpb": self.nats / LN2 / self.bytes if self.bytes else None}


def windows(doc: Sequence[int], seq_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) windows of a document; targets[i] is the token after inputs[i]."""
    doc = np.asarray(doc, dtype=np.int64)
    out = []
    for s in range(0, len(doc) - 1, seq_len):
        x = doc[s:s + seq_len]
        y = doc[s + 1:s + seq_len + 1]
        out.append((x[:len(y)], y))
    return out


def _pack(wins: list[tuple[int, np.ndarray, np.ndarray]], seq_len: int):
    """Greedily pack (owner, inputs, targets) windows into rows of seq_len, never splitting one."""
    rows, cur, used = [], [], 0
    for w in wins:
        if used + len(w[1]) > seq_len and cur:
            rows.append(cur)
            cur, used = [], 0
        cur.append(w)
        used += len(w[1])
    if cur:
        rows.append(cur)
    return rows


def _row_tensors(rows, seq_len: int):
    B = len(rows)
    ids = np.zeros((B, seq_len), np.int64)
    labels = np.full((B, seq_len), -100, np.int64)
    pos = np.zeros((B, seq_len), np.int64)
    seg = np.full((B, seq_len), -1, np.int64)
    owner = np.full((B, seq_len), -1, np.int64)
    for b, row in enumerate(rows):
        t = 0
        for k, (who, x, y) in enumerate(row):
            n = len(x)
            ids[b, t:t + n], labels[b, t:t + n], pos[b, t:t + n] = x, y, np.arange(n)
            seg[b, t:t + n], owner[b, t:t + n] = k, who
            t += n
        seg[b, t:] = len(row)  # padding: its own segment, so real tokens never attend to it
    return [torch.from_numpy(a) for a in (ids, labels, pos, seg, owner)]


@torch.no_grad()
def token_nll(model, input_ids, labels, position_ids=None, doc_ids=None) -> torch.Tensor:
    """Per-position negative log-likelihood in float32 (0 where labels == -100)."""
    logits = model(input_ids, position_ids=position_ids, doc_ids=doc_ids).float()
    logp = torch.log_softmax(logits, dim=-1)
    safe = labels.clamp(min=0)
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(labels == -100, torch.zeros_like(nll), nll)


@torch.no_grad()
def score_documents(model, docs: Sequence[Sequence[int]], seq_len: int, batch_size: int = 8,
                    device=None, progress: bool = False, desc: str = "ppl") -> list[tuple[float, int]]:
    """(summed nats, predicted tokens) for each document."""
    device = device or next(model.parameters()).device
    wins = [(i, x, y) for i, d in enumerate(docs) for x, y in windows(d, seq_len)]
    rows = _pack(wins, seq_len)
    nats = np.zeros(len(docs), np.float64)
    counts = np.zeros(len(docs), np.int64)
    for start in tqdm(range(0, len(rows), batch_size), disable=not progress, desc=desc, unit="batch"):
        ids, labels, pos, seg, owner = _row_tensors(rows[start:start + batch_size], seq_len)
        nll = token_nll(model, ids.to(device), labels.to(device), pos.to(device), seg.to(device)).double().cpu()
        valid = (labels != -100) & (owner >= 0)
        np.add.at(nats, owner[valid].numpy(), nll[valid].numpy())
        np.add.at(counts, owner[valid].numpy(), 1)
    return [(float(n), int(c)) for n, c in zip(nats, counts)]


def perplexity(model, dataset, tokenizer=None, seq_len: int | None = None, batch_size: int = 8,
               max_docs_per_domain: int = 0, progress: bool = False) -> dict[str, dict]:
    """Per-domain {docs, tokens, bytes, nats, loss, ppl, bpb} on a TokenDataset, plus "all".

    bpb is None without a tokenizer (bytes unknown).
    """
    seq_len = seq_len or model.cfg.max_seq_len
    results: dict[str, dict] = {}
    total = Score()
    for domain, ids in select_docs(dataset, max_docs_per_domain).items():
        docs = [np.asarray(dataset.doc(i)) for i in ids]
        scores = score_documents(model, docs, seq_len, batch_size, progress=progress, desc=f"ppl {domain}")
        s = Score(docs=len(docs), tokens=sum(c for _, c in scores), nats=sum(n for n, _ in scores),
                  bytes=sum(decoded_bytes(tokenizer, d) for d in docs) if tokenizer is not None else 0)
        results[domain] = s.to_dict()
        total.add(s)
    if results:
        results["all"] = total.to_dict()
    return results


def bpb_from_loss(loss_per_token: float, tokens: int, nbytes: int) -> float:
    """Convert a mean loss (nats per token) to bits per byte given the text's tokens/bytes."""
    return loss_per_token * tokens / nbytes / LN2


def val_bpb_metrics(model, data: str, tokenizer, seq_len: int | None = None, split: str = "val",
                    max_docs_per_domain: int = 32, batch_size: int = 8) -> dict[str, float]:
    """Flat metrics {"bpb/<domain>": ..., "bpb/all": ...} for a training loop's eval step.

    A Trainer hook would call this beside objective.evaluate (see docs/eval.md).
    """
    from lmforge.shards import TokenDataset
    was_training = model.training
    model.eval()
    try:
        res = perplexity(model, TokenDataset(data, split), tokenizer, seq_len, batch_size, max_docs_per_domain)
    finally:
        model.train(was_training)
    return {f"bpb/{d}": r["bpb"] for d, r in res.items() if r["bpb"] is not None}

