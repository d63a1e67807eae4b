"""Perplexity of an assistant reply under a chat model, given its ChatML prompt (the reply's
tokens and its closing <|im_end|>, as SFT and DPO train them)."""
from __future__ import annotations

import math

import torch

from lmforge.align.chat_template import encode_chat


@torch.no_grad()
def reply_perplexity(model, tok, prompt: list[dict], reply: str) -> float:
    ids, mask = encode_chat(tok, [*prompt, {"role": "assistant", "content": reply}], "last")
    device = next(model.parameters()).device
    x = torch.as_tensor(ids, dtype=torch.long, device=device)[None]
    logp = torch.log_softmax(model(x[:, :-1]).float()[0], -1)
    tgt = torch.as_tensor(mask[1:], device=device)
    nll = -logp.gather(1, x[0, 1:, None])[:, 0][tgt]
    return math.exp(min(float(nll.mean()), 50.0)) if len(nll) else float("nan")
