"""Preference pairs for DPO: jsonl -> filtered, tokenized (prompt, chosen, rejected).

Record (one per line; .json arrays and .parquet too):
    {"prompt": str | [messages], "chosen": str | [messages], "rejected": str | [messages],
     "score_chosen": float?, "score_rejected": float?}
TRL's explicit and implicit forms, string or conversational (lmforge.align.formats.to_pair):
a string prompt is one user message; a message-list `chosen`/`rejected` (Zephyr /
UltraFeedback-binarized style) must end with the assistant reply; without `prompt`, the
prompt is what chosen and rejected share (the messages before the reply, or for strings
their common beginning). Messages may be OpenAI or ShareGPT style; `columns` renames keys.

Filters (StableLM 2 on Zephyr-style data), every dropped pair counted by reason in
stats.json, malformed lines written to rejects.jsonl with file and line:
  malformed        not JSON / missing or invalid fields
  invalid_utf8     a line that is not UTF-8
  empty_reply      the chosen reply is empty (broken data; written to rejects.jsonl)
  tie              chosen == rejected text, or equal scores
  inverted         score_chosen < score_rejected (the labels contradict the scores)
  low_score        score_chosen under `min_score_chosen` (StableLM 2: below 8 of 10)
  rejected_kind    `meta.rejected_kind` not one of `rejected_kinds` (when given: e.g. keep only
                   the synthetic pairs whose rejected reply answers the same prompt)
  duplicate        the same (prompt, chosen, rejected) seen before
  too_long         prompt + reply longer than the context, or a line over `max_record_bytes`
                   (read in chunks, never whole; rejects.jsonl gets its line)
  unreadable       the line lost to damage in a .jsonl.gz / .jsonl.zst file
Memory per pair is bounded before tokenizing, as for SFT (lmforge.align.sft_data): the byte
cap per line, then a pair whose characters alone need more than seq_len tokens is dropped
without being tokenized.

No preference data ships offline. `lmforge corpus build` makes dpo.jsonl from the SFT
dialogs: prompt = the conversation up to an assistant turn, chosen = the real reply,
rejected = a reply from another conversation (off-topic), or the real reply truncated or
word-shuffled, with scores 1.0 vs 0.0 / 0.25 / 0.1 so the filters have something to do
(see lmforge/align/pairs.py). Any SFT jsonl is turned into pairs the same way by
`pairs_from_sft` (used by `lmforge dpo --build-pairs FILE` / `pairs_from_sft.files`).
Index-1.9B prefers model-generated rejected replies to hand-written ones:
`self_sampled_rejected` replaces `rejected` by the model's own sample
(`pairs_from_sft.rejected: model`; uses lmforge.infer.generate).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tqdm import tqdm

from lmforge.align.chat_template import encode_chat, message_error
from lmforge.align.formats import DataFile, to_pair, to_sft
from lmforge.align.sft_data import MAX_RECORD_BYTES, iter_data, surely_too_long
from lmforge.io.documents import ErrorSink


@dataclass
class Pair:
    chosen: np.ndarray            # int32 ids: prompt + chosen reply + <|im_end|>\n
    chosen_mask: np.ndarray       # bool: targets (the reply and its <|im_end|>)
    rejected: np.ndarray
    rejected_mask: np.ndarray


def normalise(rec: dict, spec: DataFile | None = None, ignored: Counter | None = None
              ) -> tuple[list[dict], str, str, float | None, float | None]:
    """(prompt messages, chosen, rejected, score_chosen, score_rejected); raises ValueError."""
    pair = to_pair(rec, spec or DataFile(path="-"), ignored if ignored is not None else Counter())
    err = message_error(pair["prompt"])
    if err:
        raise ValueError(f"prompt: {err}")
    scores = []
    for key in ("score_chosen", "score_rejected"):
        v = pair[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{key}: not a number")
        scores.append(None if v is None else float(v))
    return pair["prompt"], pair["chosen"], pair["rejected"], scores[0], scores[1]


def drop_reason(chosen: str, rejected: str, sc: float | None, sr: float | None,
                min_score_chosen: float | None) -> str | None:
    if not chosen.strip():
        return "empty_reply"
    if chosen.strip() == rejected.strip() or (sc is not None and sr is not None and sc == sr):
        return "tie"
    if sc is not None and sr is not None and sc < sr:
        return "inverted"
    if min_score_chosen is not None and sc is not None and sc < min_score_chosen:
        return "low_score"
    return None


def rejected_kind(rec: dict) -> str | None:
    """The record's `meta.rejected_kind` (lmforge.align.pairs: other / truncated / shuffled;
    model_sample, given), None when it has none."""
    meta = rec.get("meta")
    return meta.get("rejected_kind") if isinstance(meta, dict) else None


def encode_pair(tok, prompt: list[dict], chosen: str, rejected: str, chat=None) -> Pair:
    """Both replies after the prompt, the last reply the only target; `chat`: the tokenizer's
    own format (lmforge.align.chat_format), None = ChatML. ValueError: the template refuses it."""
    encode = chat.encode if chat is not None else encode_chat
    c, cm = encode(tok, [*prompt, {"role": "assistant", "content": chosen}], "last")
    r, rm = encode(tok, [*prompt, {"role": "assistant", "content": rejected}], "last")
    return Pair(c, cm, r, rm)


def load_pairs(paths: list[str | DataFile], tok, seq_len: int, errors: ErrorSink, min_score_chosen: float | None = None,
               progress: bool = False, max_record_bytes: int = MAX_RECORD_BYTES, chat=None,
               rejected_kinds: Sequence[str] = ()) -> tuple[list[Pair], dict]:
    stats: Counter = Counter({k: 0 for k in ("records", "kept", "malformed", "invalid_utf8", "empty_reply", "tie",
                                             "inverted", "low_score", "rejected_kind", "duplicate", "too_long")})
    seen: set[str] = set()
    ignored: Counter = Counter()
    out: list[Pair] = []
    for p, n, rec, spec in tqdm(iter_data(paths, errors, stats, max_record_bytes), desc="dpo data", unit="pair",
                                disable=not progress):
        try:
            prompt, chosen, rejected, sc, sr = normalise(rec, spec, ignored)
        except ValueError as e:
            stats["malformed"] += 1
            errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False)[:2000], detail=str(e))
            continue
        reason = drop_reason(chosen, rejected, sc, sr, min_score_chosen)
        if reason is None and rejected_kinds and rejected_kind(rec) not in rejected_kinds:
            reason = "rejected_kind"
        key = json.dumps([prompt, chosen, rejected], ensure_ascii=False, sort_keys=True)
        if reason is None and key in seen:
            reason = "duplicate"
        prompt_text = [m["content"] for m in prompt]
        if reason is None and surely_too_long(tok, [*prompt_text, max(chosen, rejected, key=len)], seq_len):
            reason = "too_long"
        if reason is None:
            try:
                pair = encode_pair(tok, prompt, chosen, rejected, chat)
            except ValueError as e:   # the tokenizer's own template refuses it (e.g. Gemma: no system role)
                stats["malformed"] += 1
                errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False)[:2000], detail=str(e))
                continue
            if max(len(pair.chosen), len(pair.rejected)) > seq_len:
                reason = "too_long"
        if reason:
            stats[reason] += 1
            if reason == "empty_reply":   # broken data, not a filter: kept aside with its line
                errors.add(p, n, reason, raw=json.dumps(rec, ensure_ascii=False)[:2000], detail="chosen is empty")
            continue
        seen.add(key)
        stats["kept"] += 1
        out.append(pair)
    dropped = sum(v for k, v in stats.items() if k not in ("records", "kept"))
    assert stats["kept"] + dropped == stats["records"], stats
    return out, {**stats, **({"ignored_keys": dict(ignored)} if ignored else {})}


def self_sampled_rejected(model, tok, records: list[dict], generate_fn, **gen_kwargs) -> list[dict]:
    """Replace each record's `rejected` by the model's own sample for its prompt (Index-1.9B
    prefers model-generated rejected replies); `generate_fn` = lmforge.infer.generate.generate."""
    from lmforge.align.chat_template import render

    out = []
    prompts = []
    for rec in records:
        prompt, *_ = normalise(rec)
        prompts.append(render(prompt, add_generation_prompt=True))
    samples = generate_fn(model, tok, prompts, **gen_kwargs)
    for rec, s in zip(records, samples):
        text = s if isinstance(s, str) else getattr(s, "text", str(s))
        out.append({**rec, "rejected": text, "score_rejected": None,
                    "meta": {**(rec.get("meta") or {}), "rejected_kind": "model_sample"}})
    return out


def pairs_from_sft(paths: list[str | DataFile], seed: str, errors: ErrorSink) -> tuple[list[dict], dict]:
    """Preference records built from SFT conversations (no preference data ships offline):
    for each assistant turn, prompt = the messages before it, chosen = the real reply,
    rejected = another conversation's reply, or the real reply truncated or word-shuffled
    (lmforge.align.pairs.make_pairs; scores 1.0 vs 0.0/0.25/0.1). Deterministic in
    `seed`. Returns (records, stats); unusable lines go to `errors`."""
    from lmforge.align.pairs import make_pairs

    stats: Counter = Counter()
    convs = []
    for p, n, rec, spec in iter_data(paths, errors, stats):
        try:
            msgs = to_sft(rec, spec, Counter()).messages
            err = "plain text has no replies to pair" if msgs is None else message_error(msgs)
        except ValueError as e:
            err = str(e)
        if err:
            stats["malformed"] += 1
            errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False, default=str)[:2000], detail=err)
            continue
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        stats["conversations"] += 1
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        convs.append({"id": str(rec.get("id", f"{p.name}:{n}")), "messages": msgs,
                      "meta": {**meta, "lang": meta.get("lang", "en")}})
    pairs = make_pairs(convs, seed)
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)
