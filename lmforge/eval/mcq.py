"""Multiple choice by log-likelihood (MMLU style, zero- and few-shot).

An item is one JSON object per line (docs/eval.md):
    {"question": str, "choices": [str, ...], "answer": int, "subject": str (optional), "id": ...}
The default corpus's `mcq_quiz.jsonl` / `mcq_poems.jsonl` have no top-level subject; their
`meta.file` (quiz) or `meta.kind` (poems) is used instead.

Each choice is scored as a continuation of the prompt

    [k solved examples "Q\\nAnswer: A\\n\\n"]  question "\\nAnswer:"  + " " + choice

by the sum of its tokens' log-probabilities. The metrics are lm-evaluation-harness's
(0.4.13, `ConfigurableTask.process_results` for multiple_choice), by the same names:
  acc        the highest sum
  acc_norm   the highest sum per CHARACTER of the choice: len(choice) in code points,
             without the " " delimiter (lm-eval's `completion_len`)
  acc_bytes  the highest sum per UTF-8 byte of the choice, again without the delimiter
Both normalisations are tokenizer-independent and remove the bias towards short choices;
they differ on non-ASCII text (a CJK character is 3 bytes). Ties go to the first choice
(np.argmax), as in lm-eval. Tokens are split as lm-eval splits them (`encode_pair`): the
context is encoded alone and the continuation is the rest of the whole string's encoding, so
a tokenizer that adds a BOS adds it once, at the start, and a SentencePiece-style one ("▁"
for a space) gives the choice the tokens it has inside the whole prompt. An over-long context
is truncated in the middle (truncate_middle; lm-eval cuts it on the left).
Few-shot examples come from the same file (there is no dev split): other items, the same
subject first, drawn deterministically from `seed` and the item id.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lmforge.eval.perplexity import token_nll
from lmforge.io.jsonl import iter_records
from lmforge.truncate import truncate_middle


@dataclass
class Item:
    question: str
    choices: list[str]
    answer: int
    subject: str = ""
    id: str = ""


@dataclass
class LoadResult:
    items: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # "file:line: reason", one per malformed line


def parse_item(rec, where: str) -> Item:
    """An Item from a decoded JSON record, or ValueError naming what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError("expected a JSON object")
    q, choices, ans = rec.get("question"), rec.get("choices"), rec.get("answer")
    if not isinstance(q, str) or not q.strip():
        raise ValueError("'question' must be a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("'choices' must be a list of at least 2 non-empty strings")
    if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(choices):
        raise ValueError(f"'answer' must be an index into choices (0..{len(choices) - 1}), got {ans!r}")
    meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
    subject = rec.get("subject") or meta.get("subject") or meta.get("file") or meta.get("kind") or ""
    return Item(q, list(choices), ans, str(subject), str(rec.get("id", where)))


def load_items(path: str | Path) -> LoadResult:
    """Read a jsonl item file; malformed lines are reported in `errors`, never dropped silently."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MCQ file not found")
    out = LoadResult()
    for n, _, rec, reason, detail in iter_records(path):   # bytes: bad UTF-8 or JSON cost one line
        if reason:
            out.errors.append(f"{path}:{n}: {detail}")
            continue
        try:
            out.items.append(parse_item(rec, f"{path.name}:{n}"))
        except ValueError as e:
            out.errors.append(f"{path}:{n}: {e}")
    return out


def format_question(item: Item) -> str:
    return f"{item.question.strip()}\nAnswer:"


def few_shot_prefix(item: Item, pool: Sequence[Item], k: int, seed: int) -> str:
    """k solved examples from `pool` (never the item itself), same subject first."""
    if k <= 0:
        return ""
    others = [p for p in pool if p.id != item.id]
    rng = random.Random(f"{seed}:{item.id}")
    same = [p for p in others if p.subject == item.subject]
    rest = [p for p in others if p.subject != item.subject]
    rng.shuffle(same)
    rng.shuffle(rest)
    shots = (same + rest)[:k]
    return "".join(f"{format_question(p)} {p.choices[p.answer]}\n\n" for p in shots)


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample variance: sqrt(var_{n-1} / n).

    For 0/1 outcomes with accuracy p this is sqrt(p (1 - p) / (n - 1)).
    """
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text).ids)


def encode_pair(tokenizer, context: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """(context ids, each continuation's ids) as lm-eval 0.4.13 splits them (TemplateLM._encode_pair).

    Trailing whitespace of the context moves to the continuation; the context is encoded
    alone (once for all continuations) and a continuation is what the encoding of the whole
    string has after as many tokens. Encoding " " + choice on its own instead would put a
    BOS-adding tokenizer's BOS (Llama 3's post-processor) inside the continuation, and give a
    SentencePiece-style one (Llama 2: a "▁" prepended to the text) an extra "▁" token that
    the whole prompt lacks.
    """
    n = len(context) - len(context.rstrip())
    context, moved = (context[:-n], context[-n:]) if n else (context, "")
    ctx = _encode(tokenizer, context)
    return ctx, [_encode(tokenizer, context + moved + c)[len(ctx):] for c in continuations]


def build_requests(items: Sequence[Item], tokenizer, max_len: int, shots: int = 0,
                   pool: Sequence[Item] | None = None, seed: int = 0, bos_id: int | None = None):
    """(context ids, continuation ids) for every (item, choice), item-major.

    `bos_id` is put before a context that does not already start with it."""
    reqs = []
    for item in items:
        context = few_shot_prefix(item, pool if pool is not None else items, shots, seed) + format_question(item)
        ctx, conts = encode_pair(tokenizer, context, [" " + c for c in item.choices])
        if bos_id is not None and ctx[:1] != [bos_id]:
            ctx = [bos_id] + ctx
        for cont in conts:
            cont = cont[: max_len - 1]
            reqs.append((truncate_middle(ctx, max_len - len(cont)), cont))
    return reqs


@torch.no_grad()
def continuation_logprobs(model, requests: Sequence[tuple[list[int], list[int]]], batch_size: int = 16,
                          progress: bool = False, desc: str = "mcq") -> list[float]:
    """Sum of log p(continuation | context) for each (context, continuation) pair."""
    device = next(model.parameters()).device
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    out = [0.0] * len(requests)
    for s in tqdm(range(0, len(order), batch_size), disable=not progress, desc=desc, unit="batch"):
        idx = order[s:s + batch_size]
        seqs = [requests[i][0] + requests[i][1] for i in idx]
        T = max(len(q) for q in seqs) - 1
        ids = np.zeros((len(idx), T), np.int64)
        labels = np.full((len(idx), T), -100, np.int64)
        for b, i in enumerate(idx):
            ctx, cont = requests[i]
            seq = seqs[b]
            ids[b, :len(seq) - 1] = seq[:-1]
            # position p predicts seq[p + 1]; the continuation starts at len(ctx)
            labels[b, len(ctx) - 1:len(seq) - 1] = cont
        # right padding only: causal attention keeps it out of the real positions
        nll = token_nll(model, torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device))
        sums = (-nll.double()).sum(-1).cpu().tolist()
        for b, i in enumerate(idx):
            out[i] = sums[b]
    return out


# metric name -> the length each choice's log-likelihood is divided by (None: not normalised)
METRICS = {
    "acc": None,
    "acc_norm": lambda choice: len(choice),                    # characters (code points)
    "acc_bytes": lambda choice: len(choice.encode("utf-8")),   # UTF-8 bytes
}


def item_correct(item: Item, logprobs: Sequence[float]) -> dict[str, float]:
    """1.0 / 0.0 per metric for one item's choice log-likelihoods (lm-eval's definitions)."""
    out = {}
    for name, length in METRICS.items():
        scores = np.asarray(logprobs, dtype=np.float64)
        if length is not None:
            scores = scores / np.array([float(length(c)) for c in item.choices])
        out[name] = float(int(np.argmax(scores)) == item.answer)
    return out


def score_items(items: Sequence[Item], logprobs: Sequence[float]) -> dict:
    """acc / acc_norm / acc_bytes with standard errors, per subject too, from item-major choice logprobs."""
    rows, by_subject = [], {}
    k = 0
    for item in items:
        row = item_correct(item, logprobs[k:k + len(item.choices)])
        k += len(item.choices)
        rows.append(row)
        by_subject.setdefault(item.subject or "-", []).append(row)
    res = summarize(rows)
    if len(by_subject) > 1:
        res["subjects"] = {s: summarize(v) for s, v in sorted(by_subject.items())}
    return res


def summarize(rows: Sequence[dict[str, float]]) -> dict:
    """n, then every metric's mean and its standard error (`<metric>_stderr`, lm-eval's naming)."""
    n = len(rows)
    out = {"n": n}
    for name in METRICS:
        vals = [r[name] for r in rows]
        out[name] = sum(vals) / n if n else float("nan")
        out[f"{name}_stderr"] = stderr(vals)
    return out


def chance(items: Sequence[Item]) -> float:
    """Expected accuracy of uniform guessing (1/len(choices) averaged over items)."""
    return sum(1.0 / len(i.choices) for i in items) / len(items) if items else float("nan")


def evaluate_mcq(model, tokenizer, items: Sequence[Item], shots: int = 0, seed: int = 0,
                 max_len: int | None = None, batch_size: int = 16, bos_id: int | None = None,
                 pool: Sequence[Item] | None = None, progress: bool = False, desc: str = "mcq") -> dict:
    """acc, acc_norm (per character), acc_bytes (per byte) with standard errors on `items` at `shots` examples."""
    max_len = max_len or model.cfg.max_seq_len
    reqs = build_requests(items, tokenizer, max_len, shots, pool, seed, bos_id)
    lps = continuation_logprobs(model, reqs, batch_size, progress, desc)
    return {"shots": shots, "chance": chance(items), **score_items(items, lps)}
