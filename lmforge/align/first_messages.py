"""First user messages sampled from a base model (StableLM 2 self-knowledge, step 1).

StableLM 2 builds its self-knowledge data from 10k first messages of conversations sampled
from the *base* model, deduplicated. A base model knows no chat format, so the prompt is
a plain-text document that lists conversation openings and stops where the next one starts
(`DEFAULT_OPENING`, with `{examples}` filled in):

    The first messages people sent to an AI assistant, one per line.

    User: {example 1}
    User: {example 2}
    User: {example 3}
    User:

The base model's continuation up to the end of its line is one first message. The
examples are `shots` messages drawn per prompt (seeded) from a pool (few-shot, as
Self-Instruct seeds its generations); with no pool the prompt is zero-shot. The prompt
ends with "User:" and no space: byte-level BPE attaches a space to the word after it, so
a trailing space would leave the model at an unusual token boundary.

Every sample lands in one bucket of the stats: `unfinished` (the line did not end within
max_new_tokens), `too_short` / `too_long` (characters, after stripping), `exact_dup`
(equal to a kept message after normalisation: NFKC, casefold, every run of punctuation
and whitespace one space), `near_dup` (the `near_dedup` keep mask: MinHash LSH over word
n-grams, lmforge.data.dedup.minhash, bound by the stage), or `kept`. Sampling goes on in
rounds until `count` messages are kept or `max_samples` are drawn.
"""
from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from typing import Callable

from tqdm import tqdm

DEFAULT_OPENING = "The first messages people sent to an AI assistant, one per line.\n\n{examples}User:"
EXAMPLE_LINE = "User: {text}\n"
# The few-shot pool: general requests and questions about the assistant itself, in the
# proportion a chat log might show them.
DEFAULT_EXAMPLES = [
    "Can you help me write a short email to my landlord about a broken heater?",
    "What is the difference between a list and a tuple in Python?",
    "Who are you?",
    "Give me three ideas for a birthday present for my sister.",
    "How do I sort a dictionary by its values?",
    "What is your name?",
    "Explain what a black hole is in simple words.",
    "Translate 'good morning' into Chinese.",
    "Who made you?",
    "Write a haiku about autumn rain.",
    "Why does my code say 'list index out of range'?",
    "Are you a human?",
]

Complete = Callable[[list[str], int], list]   # (prompt texts, seed) -> first line, or None if unfinished
NearDedup = Callable[[list[str]], list]       # texts -> keep mask (first of each near-duplicate cluster)


def normalise(text: str) -> str:
    """The exact-dedup key: NFKC, casefolded, punctuation and whitespace runs -> one space."""
    return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def opening_prompt(opening: str, examples: list[str], shots: int, rng: random.Random) -> str:
    """One sampling prompt: `shots` examples drawn from the pool, in `opening`'s {examples}."""
    chosen = rng.sample(examples, min(shots, len(examples))) if examples else []
    return opening.replace("{examples}", "".join(EXAMPLE_LINE.format(text=e) for e in chosen))


def sample_first_messages(complete: Complete, count: int, *, opening: str = DEFAULT_OPENING,
                          examples: list[str] | None = None, shots: int = 3, seed: int = 0,
                          max_samples: int = 0, batch_size: int = 64, min_chars: int = 2, max_chars: int = 500,
                          given: list[str] | None = None, near_dedup: NearDedup | None = None,
                          progress: bool = False) -> tuple[list[str], dict]:
    """(first messages, stats): `given` messages first (deduplicated), then up to `count`
    sampled ones. `complete(prompts, seed)` returns each prompt's first line (None when the
    line did not end); max_samples 0 = 4 x count."""
    examples = list(DEFAULT_EXAMPLES if examples is None else examples)
    max_samples = max_samples or 4 * count
    rng = random.Random(seed)
    stats: Counter = Counter({k: 0 for k in ("sampled", "unfinished", "too_short", "too_long", "exact_dup",
                                             "near_dup", "kept")})
    kept: list[str] = []
    seen: set[str] = set()
    for text in given or []:
        key = normalise(text)
        if key and key not in seen:
            seen.add(key)
            kept.append(text.strip())
    n_given = len(kept)
    bar = tqdm(total=count, desc="first messages", disable=not progress)
    rounds = 0
    while len(kept) - n_given < count and stats["sampled"] < max_samples:
        want = min(batch_size, max_samples - stats["sampled"])
        prompts = [opening_prompt(opening, examples, shots, rng) for _ in range(want)]
        lines = complete(prompts, seed + 7919 * rounds)
        rounds += 1
        stats["sampled"] += len(lines)
        for line in lines:
            text = None if line is None else line.strip()
            bucket = ("unfinished" if text is None else "too_short" if len(text) < min_chars
                      else "too_long" if len(text) > max_chars else "exact_dup" if normalise(text) in seen
                      else None)
            if bucket:
                stats[bucket] += 1
                continue
            seen.add(normalise(text))
            kept.append(text)
        if near_dedup is not None:
            keep = near_dedup(kept)
            stats["near_dup"] += sum(not k for k in keep[n_given:])
            kept = kept[:n_given] + [t for t, k in zip(kept[n_given:], keep[n_given:]) if k]
        kept = kept[:n_given + count]
        bar.update(len(kept) - n_given - bar.n)
    bar.close()
    sampled = len(kept) - n_given
    # what was cut at `count` in the last round counts as kept-then-dropped: not a filter's doing
    stats["over_count"] = stats["sampled"] - sum(stats[k] for k in ("unfinished", "too_short", "too_long",
                                                                    "exact_dup", "near_dup")) - sampled
    stats["kept"] = sampled
    stats.update(given=n_given, rounds=rounds, count=count, short_of_count=max(0, count - sampled))
    return kept, dict(stats)
