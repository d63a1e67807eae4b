"""ChatML conversations -> token ids and a loss mask (Yi, Index, StableLM 2 SFT format).

    <|im_start|>system\\n{content}<|im_end|>\\n
    <|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n{content}<|im_end|>\\n

The text is exactly what `CHATML_TEMPLATE` (lmforge/tokenizer/train.py, the template saved
in every tokenizer folder) renders, and it is encoded in ONE call, as
`transformers` `apply_chat_template(...)` + encode does: the ids are the same ones the
model sees at inference. (Encoding message by message could merge differently at the
joins, e.g. "\\n" + a reply that starts with spaces.)

The loss mask is found from character offsets: a token is a target when it overlaps an
assistant reply or the `<|im_end|>` that closes it (the model must learn to stop). The
role headers, system and user turns and the "\\n" after `<|im_end|>` are context only, and
so is an assistant message with `"weight": 0` (OpenAI's fine-tuning format).
As with `apply_chat_template`, a literal "<|im_end|>" inside a message is read as the
special token; content is not escaped.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

ROLES = ("system", "user", "assistant")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def message_error(messages) -> str | None:
    """Why `messages` is not a usable conversation, or None."""
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content", "name", "weight"}:
            return f"messages[{i}] is not an object with role and content"
        if m.get("role") not in ROLES:
            return f"messages[{i}].role {m.get('role')!r} is not one of {ROLES}"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}].content is not a string"
        if m["role"] == "system" and i != 0:
            return f"messages[{i}]: a system message may only come first"
        if m.get("weight", 1) not in (0, 1):
            return f"messages[{i}].weight is not 0 or 1"
    return None


def n_turns(messages: list[dict]) -> int:
    """Turns = assistant replies (a user message and its answer make one turn)."""
    return sum(m["role"] == "assistant" for m in messages)


def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The ChatML text; identical to CHATML_TEMPLATE rendered by transformers."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def _target_spans(messages: list[dict], train_on: str) -> tuple[str, list[tuple[int, int]]]:
    """(text, character spans to train on: assistant content + its <|im_end|>)."""
    text, spans, pos = [], [], 0
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    for i, m in enumerate(messages):
        header = f"{IM_START}{m['role']}\n"
        body = f"{m['content']}{IM_END}"
        start = pos + len(header)
        trained = m["role"] == "assistant" and m.get("weight", 1)   # weight 0: context (OpenAI)
        if trained and (train_on == "all" or (train_on == "last" and i == last)):
            spans.append((start, start + len(body)))
        piece = header + body + "\n"
        text.append(piece)
        pos += len(piece)
    return "".join(text), spans


def encode_chat(tok, messages: list[dict], train_on: Literal["all", "last", "none"] = "all",
                add_generation_prompt: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], target mask bool [n]) for a conversation, tokenizer = tokenizers.Tokenizer.

    train_on: "all" assistant replies (SFT), "last" only the final one (DPO responses),
    "none" (prompts).
    """
    text, spans = _target_spans(messages, train_on)
    if add_generation_prompt:
        text += f"{IM_START}assistant\n"
    return encode_spans(tok, text, spans)


def encode_spans(tok, text: str, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids of `text`, mask): a token is a target when its characters overlap a span."""
    enc = tok.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int32)
    mask = np.zeros(len(ids), dtype=bool)
    if spans:
        starts = np.asarray([o[0] for o in enc.offsets])
        ends = np.asarray([o[1] for o in enc.offsets])
        for a, b in spans:
            mask |= (starts < b) & (ends > a)
    return ids, mask


def n_trained(messages: list[dict]) -> int:
    """Assistant replies that are targets (not marked `"weight": 0`)."""
    return sum(m["role"] == "assistant" and bool(m.get("weight", 1)) for m in messages)


def encode_pieces(tok, pieces: list[tuple[str, bool]], eos_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Plain text (no chat template), encoded in one call: (ids, target mask). A token is a
    target when it overlaps a piece marked True; eos is appended (a target when the last
    piece is), so the model learns where the text ends (TRL's prompt/completion, plain text)."""
    text = "".join(t for t, _ in pieces)
    enc = tok.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int32)
    mask = np.zeros(len(ids), dtype=bool)
    starts = np.asarray([o[0] for o in enc.offsets], dtype=np.int64)
    ends = np.asarray([o[1] for o in enc.offsets], dtype=np.int64)
    pos = 0
    for t, target in pieces:
        if target and t:
            mask |= (starts < pos + len(t)) & (ends > pos)
        pos += len(t)
    if eos_id is not None:
        ids = np.append(ids, np.int32(eos_id))
        mask = np.append(mask, bool(pieces and pieces[-1][1]))
    return ids, mask
