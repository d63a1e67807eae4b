"""Long-context retrieval beyond one needle (NeedleBench / RULER / Lost-in-the-Middle style).

Three synthetic tasks, built from token ids so that the answer's tokens after the question
are exactly the tokens inside the context (a model that copies can copy):

  multi_needle  k needles "The special magic number for {key} is {value}." with k different
                keys at evenly spread depths in a haystack; each needle is asked for in turn
                ("... The special magic number for {key} is"). The other k - 1 values in the
                context are the hard distractors (a model that copies the nearest or last
                number fails), plus `distractors` random values.
  multi_value   one key, k values ("One of the special magic numbers for {key} is {value}.")
                at spread depths; the answer is all k values in order of appearance. Recall is
                the share of values whose every token is the model's greedy (argmax) choice
                given the gold text before it.
  kv            key-value retrieval (Lost in the Middle, "LongEval" lines): the whole context is
                lines "{key}: {value}" of random hex strings, as many as fit the length; the
                queried line sits at the depth; distractors are the other lines' values.
                Lines instead of a JSON object keep every key and value a token-aligned piece.

Each case is scored like the single needle (lmforge.eval.needle): `exact` (teacher-forced
greedy), `rank` of the true answer's log-likelihood among the distractors', `logprob`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lmforge.eval.needle import continuation, take

KEYS = ["apple", "river", "candle", "mountain", "violin", "garden", "rocket", "harbor", "pepper", "lantern",
        "meadow", "falcon", "marble", "thunder", "saddle", "orchid"]
TASKS = ("multi_needle", "multi_value", "kv")


@dataclass
class Query:
    """One scored question: prompt ids, the answer as pieces (spans), distractor answers."""
    task: str
    length: int
    depth: float
    trial: int
    prompt: list[int]
    pieces: list[list[int]]               # answer = concatenation; values are the even pieces
    value_pieces: list[int]               # indices into pieces that are values (scored for recall)
    distractors: list[list[int]] = field(default_factory=list)
    label: str = ""

    @property
    def target(self) -> list[int]:
        return [t for p in self.pieces for t in p]

    @property
    def key(self) -> str:
        return f"{self.task}/{self.length}/{self.depth:g}/{self.trial}/{self.label}"


class Pieces:
    """Token pieces for the tasks' texts, encoded one piece at a time (`encode(str) -> ids`)."""

    def __init__(self, encode: Callable[[str], list[int]], digits: int = 6):
        self.encode, self.digits = encode, digits

    def value(self, rng: random.Random) -> str:
        return str(rng.randrange(10 ** (self.digits - 1), 10 ** self.digits))

    def values(self, rng: random.Random, n: int, avoid: set[str] = frozenset()) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            v = self.value(rng)
            if v not in out and v not in avoid:
                out.append(v)
        return out


def _spread(n: int) -> list[float]:
    """n depths (fractions) evenly inside the haystack: 1/(n+1), ..., n/(n+1)."""
    return [(i + 1) / (n + 1) for i in range(n)]


def _insert(hay: list[int], needles: list[list[int]], fractions: list[float]) -> list[int]:
    """The haystack with each needle inserted at its fraction of the haystack's length."""
    at = [round(f * len(hay)) for f in fractions]
    out, prev = [], 0
    for a, n in sorted(zip(at, needles), key=lambda x: x[0]):
        out += hay[prev:a] + n
        prev = a
    return out + hay[prev:]


def _haystack(stream: np.ndarray, n_hay: int, seed: int, length: int, trial: int) -> list[int]:
    """`n_hay` tokens of the stream from a start drawn by (seed, length, trial): the same
    haystack for every task of one length and trial."""
    start = random.Random(f"{seed}/{length}/{trial}/hay").randrange(max(len(stream) - n_hay, 0) + 1)
    return [int(t) for t in take(stream, start, n_hay)]


def multi_needle(pc: Pieces, stream: np.ndarray, length: int, trial: int, k: int, n_random: int,
                 seed: int) -> list[Query]:
    rng = random.Random(f"{seed}/multi_needle/{length}/{trial}")
    keys = rng.sample(KEYS, k)
    values = pc.values(rng, k)
    lead = {key: pc.encode(f"\nThe special magic number for {key} is") for key in keys}
    needles = [lead[key] + pc.encode(" " + v) + pc.encode(".\n") for key, v in zip(keys, values)]
    queries = []
    for j, key in enumerate(keys):
        question = pc.encode(f"\n\nWhat is the special magic number for {key} mentioned above?") + lead[key]
        n_hay = length - sum(map(len, needles)) - len(question)
        if n_hay < 0:
            return []
        prompt = _insert(_haystack(stream, n_hay, seed, length, trial), needles, _spread(k)) + question
        others = [v for v in values if v != values[j]] + pc.values(rng, n_random, set(values))
        queries.append(Query("multi_needle", length, 100.0 * _spread(k)[j], trial, prompt,
                             [pc.encode(" " + values[j])], [0], [pc.encode(" " + v) for v in others], key))
    return queries


def multi_value(pc: Pieces, stream: np.ndarray, length: int, trial: int, k: int, seed: int) -> list[Query]:
    rng = random.Random(f"{seed}/multi_value/{length}/{trial}")
    key = rng.choice(KEYS)
    values = pc.values(rng, k)
    lead = pc.encode(f"\nOne of the special magic numbers for {key} is")
    needles = [lead + pc.encode(" " + v) + pc.encode(".\n") for v in values]
    question = pc.encode(f"\n\nWhat are all the special magic numbers for {key} mentioned above? "
                         f"The special magic numbers for {key} are")
    pieces: list[list[int]] = []
    for i, v in enumerate(values):
        if i:
            pieces.append(pc.encode(","))
        pieces.append(pc.encode(" " + v))
    n_hay = length - sum(map(len, needles)) - len(question)
    if n_hay < 0:
        return []
    prompt = _insert(_haystack(stream, n_hay, seed, length, trial), needles, _spread(k)) + question
    return [Query("multi_value", length, 50.0, trial, prompt, pieces, list(range(0, len(pieces), 2)), [], key)]


def kv_retrieval(pc: Pieces, length: int, depth: float, trial: int, n_random: int, seed: int,
                 chars: int = 8) -> list[Query]:
    rng = random.Random(f"{seed}/kv/{length}/{depth:g}/{trial}")
    hexes = lambda: "".join(rng.choice("0123456789abcdef") for _ in range(chars))   # noqa: E731
    head = pc.encode("Each line below is a key and its value.\n\n")
    colon, newline = pc.encode(":"), pc.encode("\n")
    tail_q = pc.encode("\nWhat is the value of the key below?\n")
    lines, pairs, used = [], [], len(head) + len(tail_q) + 2 * (chars + 2)
    while True:
        key, value = hexes(), hexes()
        key_ids, value_ids = pc.encode(key), pc.encode(" " + value)
        line = key_ids + colon + value_ids + newline
        if used + len(line) > length:
            break
        lines.append(line)
        pairs.append((key_ids, value_ids))
        used += len(line)
    if len(pairs) < 2:
        return []
    q = min(len(pairs) - 1, round(depth / 100.0 * (len(pairs) - 1)))
    prompt = head + [t for line in lines for t in line] + tail_q + pairs[q][0] + colon
    order = [i for i in range(len(pairs)) if i != q]
    rng.shuffle(order)
    return [Query("kv", length, depth, trial, prompt, [pairs[q][1]], [0],
                  [pairs[i][1] for i in order[:n_random]], f"line{q}")]


def score_query(model, qy: Query, device) -> dict:
    """exact (all answer values greedy-correct), recall (share of values), rank, logprob."""
    import torch

    target = qy.target
    ids = torch.tensor([qy.prompt + target], dtype=torch.long, device=device)
    from lmforge.eval.needle import tail_logits
    with torch.no_grad():
        logits = tail_logits(model, ids[:, :-1], len(target)).float()[0]
    logp = torch.log_softmax(logits, -1)
    tgt = torch.tensor(target, device=logp.device)
    ll = float(logp.gather(1, tgt[:, None]).sum())
    hit = (logits.argmax(-1) == tgt).tolist()
    spans, at = [], 0
    for p in qy.pieces:
        spans.append((at, at + len(p)))
        at += len(p)
    got = [all(hit[a:b]) for a, b in (spans[i] for i in qy.value_pieces)]
    rank = sum(continuation(model, qy.prompt, d, device)[0] >= ll for d in qy.distractors)
    return {"key": qy.key, "task": qy.task, "length": qy.length, "depth": qy.depth, "trial": qy.trial,
            "prompt_tokens": len(qy.prompt), "exact": all(got), "recall": sum(got) / len(got), "rank": rank,
            "distractors": len(qy.distractors), "logprob": ll}


def summarize_tasks(cells: list[dict]) -> dict:
    """Per task and length: mean exact, recall and rank accuracy (rank 0 among distractors)."""
    out: dict = {}
    for c in cells:
        out.setdefault(c["task"], {}).setdefault(str(c["length"]), []).append(c)
    res = {}
    for task, by_len in out.items():
        res[task] = {}
        for L, cs in sorted(by_len.items(), key=lambda kv: int(kv[0])):
            n = len(cs)
            res[task][L] = {"n": n, "exact": sum(c["exact"] for c in cs) / n,
                            "recall": sum(c["recall"] for c in cs) / n,
                            "rank_acc": sum(c["rank"] == 0 for c in cs if c["distractors"]) /
                            max(sum(1 for c in cs if c["distractors"]), 1)}
    return res
