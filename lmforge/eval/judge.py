"""Our own checkpoint as a judge of SFT conversations, and held-out reply loss.

The score of a conversation is the mean log-probability the model gives its replies
given everything before them (the prompt and earlier turns), per reply token:

    score = -(sum of reply-token NLL) / (reply tokens)         (length-normalised)

Reply tokens are those `encode_chat` marks as targets (assistant content and its
<|im_end|>), the same ones SFT trains on; the text is the ChatML the model sees. A
conversation longer than the model's context keeps its last `max_len` tokens (the
replies at its end are scored with less context). Summed over held-out conversations,
the same numbers give a task's held-out reply loss (nats per reply token).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lmforge.align.chat_template import encode_chat
from lmforge.eval.perplexity import token_nll


def encode_for_scoring(tok, messages: list[dict], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, labels with -100 off the replies) of one conversation, last max_len + 1 tokens."""
    ids, mask = encode_chat(tok, messages, "all")
    ids, mask = ids[-(max_len + 1):], mask[-(max_len + 1):]
    labels = np.where(mask[1:], ids[1:], -100)
    return ids[:-1].astype(np.int64), labels.astype(np.int64)


@torch.no_grad()
def reply_nll(model, tok, conversations: Sequence[list[dict]], max_len: int | None = None, batch_size: int = 8,
              pad_id: int = 0, progress: bool = False, desc: str = "judge") -> list[tuple[float, int]]:
    """(summed reply NLL in nats, reply tokens) for each conversation."""
    device = next(model.parameters()).device
    max_len = max_len or model.cfg.max_seq_len
    enc = [encode_for_scoring(tok, m, max_len) for m in conversations]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i][0]))   # similar lengths share a batch
    out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
    for s in tqdm(range(0, len(order), batch_size), disable=not progress, desc=desc, unit="batch"):
        idx = order[s:s + batch_size]
        T = max(len(enc[i][0]) for i in idx)
        ids = np.full((len(idx), T), pad_id, np.int64)
        labels = np.full((len(idx), T), -100, np.int64)
        for b, i in enumerate(idx):
            x, y = enc[i]
            ids[b, :len(x)], labels[b, :len(y)] = x, y   # right padding: causal attention never sees it
        nll = token_nll(model, torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device))
        sums = nll.double().sum(-1).cpu().tolist()
        counts = (torch.from_numpy(labels) != -100).sum(-1).tolist()
        for b, i in enumerate(idx):
            out[i] = (float(sums[b]), int(counts[b]))
    return out


def judge_scores(model, tok, conversations: Sequence[list[dict]], **kw) -> list[float]:
    """Mean reply log-probability per token of each conversation (higher is better)."""
    return [-n / c if c else float("-inf") for n, c in reply_nll(model, tok, conversations, **kw)]


def heldout_loss(model, tok, conversations: Sequence[list[dict]], **kw) -> dict:
    """{conversations, tokens, loss, per_conversation}: reply nats per reply token over all of
    them, and per conversation."""
    res = reply_nll(model, tok, conversations, **kw)
    nats, tokens = sum(n for n, _ in res), sum(c for _, c in res)
    return {"conversations": len(res), "tokens": tokens, "loss": nats / tokens if tokens else float("nan"),
            # each conversation's own nats per reply token: the items a paired comparison needs
            "per_conversation": [n / c if c else float("nan") for n, c in res]}
