"""Needle in a haystack (Index-1.9B-32K): can the model retrieve a fact from any depth?

For every prompt length L and depth d (percent), a needle sentence carrying a random value
("The special magic number is 417093.") is inserted at d% of a haystack of corpus text
(token shards or text documents), and a question ending like the needle's lead-in
("... The special magic number is") closes the prompt, L tokens in all. Scores per cell:

  exact     the greedy continuation reproduces the value's tokens (teacher-forced argmax
            at every value token, which is the same test as greedy decoding them, and
            needs one forward pass)
  rank      how many of `distractors` other random values of the same shape get a
            log-likelihood >= the true value's (0 = retrieved); rank_acc = share of rank 0
  logprob   log-likelihood of the true value's tokens

The model can run as trained, with naive RoPE extrapolation past its length, or with a
training-free Dynamic NTK / linear scaling (`rope`, `rope_factor`; Index compared NTK x8).

This module builds the cases and scores them; the `needle` stage (lmforge.stages.needle)
loads the model, runs the cells resumably and writes needle.json / needle.md / needle.png.
`cfg` below is that stage's NeedleConfig.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from lmforge.io.atomic import save_figure, write_text


DEFAULT_NEEDLE = "\nThe special magic number is {value}.\n"
DEFAULT_QUESTION = "\n\nWhat is the special magic number mentioned above? The special magic number is"


@dataclass
class Case:
    length: int
    depth: float
    trial: int
    prompt: list[int]
    value: str
    target: list[int]
    distractors: list[list[int]]
    needle_at: int                 # token index where the needle starts in the prompt

    @property
    def key(self) -> str:
        return f"{self.length}/{self.depth:g}/{self.trial}"


# ------------------------------------------------------------------ building the prompts


class NeedleText:
    """Token pieces of the needle and the question for a tokenizer (`encode(str) -> ids`).

    The needle's lead-in and the question end the same way, and the value (with the space
    before it) is encoded on its own, so the value's tokens after the question are exactly
    the tokens that follow the lead-in inside the needle: a model that copies can copy.
    """

    def __init__(self, cfg, encode: Callable[[str], list[int]]):
        self.encode = encode
        before, self.after = cfg.needle.split("{value}")
        self.before = before.rstrip(" ")
        self.space = before[len(self.before):]          # spaces move into the value
        self.before_ids, self.after_ids = encode(self.before), encode(self.after)
        self.question_ids = encode(cfg.question.rstrip(" "))
        self.digits = cfg.value_digits

    def value_ids(self, value: str) -> list[int]:
        return self.encode(self.space + value)

    def needle_ids(self, value: str) -> list[int]:
        return self.before_ids + self.value_ids(value) + self.after_ids

    def max_overhead(self) -> int:
        """Tokens of needle + question + answer for the widest value (all 9s)."""
        v = "9" * self.digits
        return len(self.needle_ids(v)) + len(self.question_ids) + len(self.value_ids(v))

    def random_value(self, rng: random.Random) -> str:
        return str(rng.randrange(10 ** (self.digits - 1), 10 ** self.digits)) if self.digits > 1 \
            else str(rng.randrange(10))


def build_cases(cfg, text: NeedleText, stream: np.ndarray) -> list[Case]:
    """One case per (length, depth, trial); values and haystack offsets from cfg.seed."""
    cases = []
    for length in cfg.lengths:
        for depth in cfg.depths:
            for trial in range(cfg.trials):
                rng = random.Random(f"{cfg.seed}/{length}/{depth:g}/{trial}")
                value = text.random_value(rng)
                others = set()
                while len(others) < cfg.distractors:
                    v = text.random_value(rng)
                    if v != value:
                        others.add(v)
                needle = text.needle_ids(value)
                n_hay = length - len(needle) - len(text.question_ids)
                start = rng.randrange(max(len(stream) - n_hay, 0) + 1) if trial else 0
                hay = [int(t) for t in take(stream, start, n_hay)]
                at = round(depth / 100.0 * n_hay)
                prompt = hay[:at] + needle + hay[at:] + text.question_ids
                cases.append(Case(length, depth, trial, prompt, value, text.value_ids(value),
                                  [text.value_ids(v) for v in sorted(others)], at))
    return cases


def take(stream: np.ndarray, start: int, n: int) -> np.ndarray:
    """n tokens of the stream from `start`, wrapping around when the corpus is shorter."""
    if n <= 0:
        return stream[:0]
    reps = -(-(start + n) // len(stream))
    return np.tile(stream, reps)[start:start + n] if reps > 1 else stream[start:start + n]


def haystack_stream(path: str, encode: Callable[[str], list[int]], need: int, sep: list[int]) -> np.ndarray:
    """Up to `need` tokens of corpus text: a token dataset's documents (val split first), or
    text documents encoded with the tokenizer, joined with `sep` (the eos token)."""
    p = Path(path)
    out, n = [], 0
    if (p / "meta.json").is_file():
        from lmforge.shards import TokenDataset
        for split in ("val", "train"):
            ds = TokenDataset(p, split)
            for i in range(ds.n_docs):
                doc = np.asarray(ds.doc(i), dtype=np.int64)
                out.append(doc)
                n += len(doc)
                if n >= need:
                    return np.concatenate(out)
    else:
        from lmforge.io.documents import ErrorSink
        from lmforge.io.readers import iter_documents
        for doc in iter_documents(path, ErrorSink()):
            ids = encode(doc["text"]) + sep
            out.append(np.asarray(ids, dtype=np.int64))
            n += len(ids)
            if n >= need:
                break
    if n == 0:
        raise ValueError(f"no text found in {path}")
    return np.concatenate(out)


# ------------------------------------------------------------------ scoring


def tail_logits(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Logits [B, n, V] of the last n positions of plain causal rows.

    For a lmforge Transformer only those n positions go through the LM head (at 32k tokens
    and a 65k vocabulary the full logits would take 8 GB); other modules are called whole.
    """
    from lmforge.model.transformer import Transformer

    if not isinstance(model, Transformer):
        return model(ids)[:, -n:]
    return model.tail_logits(ids, n)


@torch.no_grad()
def continuation(model, prompt: list[int], target: list[int], device) -> tuple[float, bool]:
    """(log-likelihood of `target` after `prompt`, whether greedy decoding yields `target`)."""
    ids = torch.tensor([prompt + target], dtype=torch.long, device=device)
    logits = tail_logits(model, ids[:, :-1], len(target)).float()[0]          # predicts target[i]
    logp = torch.log_softmax(logits, dim=-1)
    tgt = torch.tensor(target, device=logp.device)
    ll = float(logp.gather(1, tgt[:, None]).sum())
    return ll, bool((logits.argmax(-1) == tgt).all())


def score_case(model, case: Case, device) -> dict:
    ll, exact = continuation(model, case.prompt, case.target, device)
    others = [continuation(model, case.prompt, d, device)[0] for d in case.distractors]
    rank = sum(o >= ll for o in others)
    return {"key": case.key, "length": case.length, "depth": case.depth, "trial": case.trial,
            "value": case.value, "needle_at": case.needle_at, "prompt_tokens": len(case.prompt),
            "exact": exact, "rank": rank, "logprob": ll}


# ------------------------------------------------------------------ results


def grids(cfg, cells: list[dict]) -> dict:
    """Mean exact / rank accuracy / logprob per (length, depth), rows = lengths."""
    out = {"lengths": cfg.lengths, "depths": cfg.depths}
    for name, f in (("exact", lambda c: float(c["exact"])), ("rank_acc", lambda c: float(c["rank"] == 0)),
                    ("logprob", lambda c: c["logprob"])):
        grid = []
        for L in cfg.lengths:
            row = []
            for d in cfg.depths:
                vals = [f(c) for c in cells if c["length"] == L and c["depth"] == d]
                row.append(sum(vals) / len(vals) if vals else None)
            grid.append(row)
        out[name] = grid
    return out


def summarize(cells: list[dict]) -> dict:
    n = max(len(cells), 1)
    return {"cells": len(cells), "exact": sum(c["exact"] for c in cells) / n,
            "rank_acc": sum(c["rank"] == 0 for c in cells) / n,
            "mean_logprob": sum(c["logprob"] for c in cells) / n}


def write_markdown(path: Path, g: dict, summary: dict, title: str) -> None:
    lines = [f"# Needle in a haystack: {title}", "",
             f"exact (greedy) {summary['exact']:.3f}, rank accuracy {summary['rank_acc']:.3f} over "
             f"{summary['cells']} cells", ""]
    for name, fmt in (("exact", "{:.2f}"), ("rank_acc", "{:.2f}"), ("logprob", "{:.2f}")):
        lines += [f"## {name} (rows: prompt length, columns: needle depth %)", "",
                  "| length | " + " | ".join(f"{d:g}%" for d in g["depths"]) + " |",
                  "|---:|" + "---:|" * len(g["depths"])]
        for L, row in zip(g["lengths"], g[name]):
            lines.append(f"| {L} | " + " | ".join("" if v is None else fmt.format(v) for v in row) + " |")
        lines.append("")
    write_text(path, "\n".join(lines))


def plot_heatmap(path: Path, g: dict, title: str, with_rank: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["exact", "rank_acc"] if with_rank else ["exact"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 + 0.5 * len(g["depths"]) * len(names),
                                                     1.5 + 0.4 * len(g["lengths"])), squeeze=False)
    for ax, name in zip(axes[0], names):
        data = np.array([[np.nan if v is None else v for v in row] for row in g[name]], dtype=float)
        im = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
        ax.set_xticks(range(len(g["depths"])), [f"{d:g}" for d in g["depths"]])
        ax.set_yticks(range(len(g["lengths"])), [str(L) for L in g["lengths"]])
        ax.set_xlabel("needle depth (%)")
        ax.set_ylabel("prompt length (tokens)")
        ax.set_title({"exact": "exact greedy retrieval", "rank_acc": "value ranked first"}[name])
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if not np.isnan(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
