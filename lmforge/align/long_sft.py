"""Long-context instruction conversations built from real documents (Index-1.9B-32K's long SFT).

Index trained its 32K model on ~30K long and ~50K general instructions; its long data is not
public, so these are built offline from the corpus, each a retrieval task whose answer is in
the context and nowhere else (so the model must read the whole window to learn it):

    quote    several documents, each headed "Document k: TITLE"; asked for the first sentence
             of one of them (the answer is copied from the context).
    locate   the same documents; asked which document contains a given sentence taken from
             the middle of one of them (answer: "Document k").
    fact     a one-line fact with a random value ("The code for the north archive is 48213.")
             hidden at a random depth between documents; asked for the value.

Lengths are measured with the model's tokenizer: each conversation's context is filled with
documents until it reaches a length drawn uniformly from `length_range` tokens.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

TASKS = ("quote", "locate", "fact")
_SENTENCE = re.compile(r"[^.!?。！？\n]{20,300}[.!?。！？]")
_PLACES = ("north archive", "east gate", "river station", "old library", "west tower", "harbour office")


@dataclass
class Doc:
    title: str
    text: str


def first_sentence(text: str) -> str | None:
    m = _SENTENCE.search(text)
    return m.group(0).strip() if m else None


def middle_sentence(text: str, rng: random.Random) -> str | None:
    found = [m.group(0).strip() for m in _SENTENCE.finditer(text)]
    inner = found[1:-1] if len(found) > 2 else []
    return rng.choice(inner) if inner else None


def _context(docs: list[Doc]) -> str:
    return "\n\n".join(f"Document {i + 1}: {d.title}\n{d.text}" for i, d in enumerate(docs))


def _fill(pool: list[Doc], rng: random.Random, n_tokens: Callable[[str], int], target: int) -> list[Doc]:
    """Documents drawn from the pool until their context is about `target` tokens (at least 2)."""
    chosen, total = [], 0
    for _ in range(len(pool)):
        d = pool[rng.randrange(len(pool))]
        cost = n_tokens(d.text) + 8
        if total + cost > target and len(chosen) >= 2:
            break
        # every task needs two documents: the first may fill half the window, the second
        # what is left; a longer one contributes its beginning (it used to take the whole
        # window, and the second document then overshot it by up to its own length)
        room = target // 2 if not chosen else target - total
        if cost > room:
            d = Doc(d.title, d.text[: max(200, len(d.text) * max(room, 0) // cost)])
            cost = n_tokens(d.text) + 8
        chosen.append(d)
        total += cost
    return chosen


def make_conversation(task: str, docs: list[Doc], rng: random.Random) -> dict | None:
    """One conversation for `task` over `docs`, or None if the documents do not allow it."""
    k = rng.randrange(len(docs))
    if task == "quote":
        answer = first_sentence(docs[k].text)
        if answer is None:
            return None
        question = f"What is the first sentence of Document {k + 1}? Quote it exactly."
        context = _context(docs)
    elif task == "locate":
        probe = middle_sentence(docs[k].text, rng)
        if probe is None or sum(probe in d.text for d in docs) != 1:
            return None
        question = f"Which document contains this sentence: \"{probe}\"? Answer with the document number."
        answer = f"Document {k + 1}"
        context = _context(docs)
    else:
        place, value = rng.choice(_PLACES), str(rng.randrange(10000, 100000))
        fact = f"The code for the {place} is {value}."
        parts = [f"Document {i + 1}: {d.title}\n{d.text}" for i, d in enumerate(docs)]
        parts.insert(rng.randrange(len(parts) + 1), fact)
        context = "\n\n".join(parts)
        question = f"What is the code for the {place}? Answer with the number only."
        answer = value
    return {"messages": [{"role": "user", "content": f"{context}\n\n{question}"},
                         {"role": "assistant", "content": answer}],
            "meta": {"source": "long_sft", "task": task, "docs": len(docs)}}


def long_pool(docs: Iterable[Doc]) -> list[Doc]:
    """The documents long enough to draw from (>= 200 characters); at least 2 are needed."""
    pool = [d for d in docs if len(d.text) >= 200]
    if len(pool) < 2:
        raise ValueError(f"need at least 2 documents of >= 200 characters, found {len(pool)}")
    return pool


def iter_long_conversations(pool: list[Doc], count: int, length_range: tuple[int, int],
                            n_tokens: Callable[[str], int], seed: int = 0, tasks: tuple[str, ...] = TASKS,
                            stats: dict | None = None) -> Iterator[dict]:
    """Up to `count` long conversations (tasks in turn), one at a time, so that a stage can write
    them as they come (30K of 16-32K tokens are gigabytes); `stats` gets the documents, the tries
    and the kept count per task. At most 10 tries per conversation asked for."""
    rng = random.Random(seed)
    st = stats if stats is not None else {}
    st.update(documents=len(pool), tries=0, kept={t: 0 for t in tasks})
    lo, hi = length_range
    made = 0
    while made < count and st["tries"] < count * 10:
        task = tasks[st["tries"] % len(tasks)]
        st["tries"] += 1
        conv = make_conversation(task, _fill(pool, rng, n_tokens, rng.randint(lo, hi)), rng)
        if conv is None:
            continue
        conv["id"] = f"long-{made}"
        made += 1
        st["kept"][task] += 1
        yield conv


def length_stats(lengths: list[int]) -> dict:
    """conversations, min/max/mean tokens of the contexts as the tokenizer counts them."""
    return {"conversations": len(lengths), "min_tokens": min(lengths, default=0),
            "max_tokens": max(lengths, default=0), "mean_tokens": sum(lengths) / len(lengths) if lengths else 0.0}


def build_long_conversations(docs: Iterable[Doc], count: int, length_range: tuple[int, int],
                             n_tokens: Callable[[str], int], seed: int = 0,
                             tasks: tuple[str, ...] = TASKS) -> tuple[list[dict], dict]:
    """`count` long conversations (tasks in turn) and stats (tries, kept per task, lengths)."""
    stats: dict = {}
    out = list(iter_long_conversations(long_pool(docs), count, length_range, n_tokens, seed, tasks, stats))
    stats.update(length_stats([n_tokens(c["messages"][0]["content"]) for c in out]))
    return out, stats
