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

out_dir: cells.jsonl (one line per finished cell; a rerun continues from it), needle.json
(config, cells, grids, summary), needle.md (tables), needle.png (length x depth heatmaps),
DONE.json.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from tqdm import tqdm

from lmforge.config import ConfigError, check, to_dict
from lmforge.model.config import MAX_POSITIONS

DEFAULT_NEEDLE = "\nThe special magic number is {value}.\n"
DEFAULT_QUESTION = "\n\nWhat is the special magic number mentioned above? The special magic number is"


@dataclass
class NeedleConfig:
    checkpoint: str = ""           # step dir or run dir (its latest checkpoint)
    tokenizer: str = ""            # tokenizer folder; "" = the one beside the checkpoint's run
    haystack: str = ""             # token dataset folder, or text files/folders (jsonl, txt, parquet, html)
    out_dir: str = "runs/needle"
    lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096])   # prompt tokens
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])   # percent
    trials: int = 1                # different values / haystack offsets per cell
    needle: str = DEFAULT_NEEDLE   # must contain {value} once
    question: str = DEFAULT_QUESTION
    value_digits: int = 6
    distractors: int = 4           # other values ranked against the true one (0 = exact match only)
    rope: Literal["model", "naive", "dynamic", "linear"] = "model"
    rope_factor: float = 8.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        check(bool(self.checkpoint), "checkpoint", "set the checkpoint (or run dir) to evaluate")
        check(bool(self.haystack), "haystack", "set a token dataset folder or text files for the haystack")
        check(len(self.lengths) > 0 and all(1 <= n <= MAX_POSITIONS for n in self.lengths), "lengths",
              f"need at least one length, each in [1, {MAX_POSITIONS}], got {self.lengths}")
        check(len(self.depths) > 0 and all(0.0 <= d <= 100.0 for d in self.depths), "depths",
              f"need depths in percent, 0..100, got {self.depths}")
        check(self.needle.count("{value}") == 1, "needle", "must contain {value} exactly once")
        check(self.trials >= 1, "trials", "must be >= 1")
        check(1 <= self.value_digits <= 30, "value_digits", "must be in [1, 30]")
        n_values = 10 if self.value_digits == 1 else 9 * 10 ** (self.value_digits - 1)
        check(0 <= self.distractors < n_values, "distractors",
              f"must be in [0, {n_values - 1}] ({self.value_digits}-digit values)")
        check(self.rope_factor >= 1.0, "rope_factor", "must be >= 1")
        self.lengths = sorted(set(self.lengths))
        self.depths = sorted(set(float(d) for d in self.depths))


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

    def __init__(self, cfg: NeedleConfig, encode: Callable[[str], list[int]]):
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


def build_cases(cfg: NeedleConfig, text: NeedleText, stream: np.ndarray) -> list[Case]:
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
        from lmforge.data.documents import ErrorSink
        from lmforge.data.readers import iter_documents
        for doc in iter_documents(path, ErrorSink()):
            ids = encode(doc["text"]) + sep
            out.append(np.asarray(ids, dtype=np.int64))
            n += len(ids)
            if n >= need:
                break
    if n == 0:
        raise ConfigError(f"haystack: no text found in {path}")
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


def grids(cfg: NeedleConfig, cells: list[dict]) -> dict:
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
    path.write_text("\n".join(lines))


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ the stage


def settings_key(cfg: NeedleConfig) -> str:
    """What the cells depend on (not out_dir/device): a rerun continues only if it matches."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "device")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prepare(cfg: NeedleConfig):
    """Model config, tokenizer, cases; every bad setting a ConfigError before the model loads."""
    from lmforge.model.load import model_config_of, resolve_checkpoint, tokenizer_dir_of
    from lmforge.model.rope import extension_config, usable_length
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info

    try:
        step_dir = resolve_checkpoint(cfg.checkpoint)
        mcfg = model_config_of(step_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"checkpoint: {e}") from None
    mcfg = dataclasses.replace(extension_config(mcfg, cfg.rope, cfg.rope_factor), attn_backend="sdpa")
    window = usable_length(mcfg) if cfg.rope == "model" else MAX_POSITIONS
    tok_dir = Path(cfg.tokenizer) if cfg.tokenizer else tokenizer_dir_of(step_dir)
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        raise ConfigError(f"tokenizer: no tokenizer folder given and none beside {step_dir} (set tokenizer=DIR)")
    tok = load_tokenizer(tok_dir)
    info = tokenizer_info(tok_dir, tok)
    if info["vocab_size"] > mcfg.vocab_size:
        raise ConfigError(f"tokenizer: {tok_dir} has {info['vocab_size']} ids, the model only {mcfg.vocab_size}")
    text = NeedleText(cfg, lambda s: tok.encode(s, add_special_tokens=False).ids)
    overhead = text.max_overhead()
    if overhead >= cfg.lengths[0]:
        raise ConfigError(f"needle: needle + question + answer take {overhead} tokens, which does not fit in "
                          f"length {cfg.lengths[0]} with any haystack; raise lengths or shorten needle/question")
    longest = cfg.lengths[-1] + len(text.value_ids("9" * cfg.value_digits))
    if longest > window:
        raise ConfigError(f"lengths: {cfg.lengths[-1]} (+ answer) exceeds the model's max_seq_len "
                          f"{mcfg.max_seq_len}; set rope=naive or rope=dynamic to extend without training")
    sep = [info["eos_id"]] if info.get("eos_id") is not None else []
    try:
        stream = haystack_stream(cfg.haystack, text.encode, cfg.lengths[-1] * 2, sep)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"haystack: {e}") from None
    if int(stream.max()) >= mcfg.vocab_size:
        raise ConfigError(f"haystack: token id {int(stream.max())} is outside the model's vocabulary")
    return step_dir, mcfg, build_cases(cfg, text, stream), len(stream)


def load_cells(path: Path, key: str) -> dict[str, dict]:
    """Finished cells of an earlier run with the same settings (a line cut by a kill is redone)."""
    if not path.exists():
        return {}
    cells = {}
    for line in path.read_text().splitlines():
        try:
            c = json.loads(line)
        except ValueError:
            continue
        if c.get("settings") == key:
            cells[c["key"]] = c
    return cells


def run(cfg: NeedleConfig, progress: bool = True, model=None) -> dict:
    """Evaluate; `model` replaces the checkpoint's weights (tests: oracles with the same tokenizer)."""
    from lmforge.model.transformer import Transformer
    from lmforge.train import checkpoint as ckpt
    from lmforge.train.trainer import resolve_device

    out = Path(cfg.out_dir)
    done = out / "DONE.json"
    if done.exists():
        return {**json.loads(done.read_text()), "skipped": True}
    step_dir, mcfg, cases, stream_len = prepare(cfg)
    device = resolve_device(cfg.device)
    if model is None:
        model = Transformer(mcfg)
        ckpt.load_weights(step_dir, model)
        if device.type == "cuda":
            model = model.to(torch.bfloat16)
    model = model.to(device).eval()
    out.mkdir(parents=True, exist_ok=True)
    key = settings_key(cfg)
    cells_path = out / "cells.jsonl"
    finished = load_cells(cells_path, key)
    cells_path.write_text("".join(json.dumps(c) + "\n" for c in finished.values()))
    todo = [c for c in cases if c.key not in finished]
    with open(cells_path, "a") as f:
        for case in tqdm(todo, desc="needle", unit="cell", disable=not progress):
            cell = {**score_case(model, case, device), "settings": key}
            f.write(json.dumps(cell) + "\n")
            f.flush()
            finished[case.key] = cell
    cells = [finished[c.key] for c in cases]
    g, summary = grids(cfg, cells), summarize(cells)
    title = f"{step_dir} (rope: {cfg.rope}{'' if cfg.rope in ('model', 'naive') else f' x{cfg.rope_factor:g}'})"
    rope_info = {"mode": cfg.rope, "rope_theta": mcfg.rope_theta, "max_seq_len": mcfg.max_seq_len,
                 "rope_scaling": to_dict(mcfg.rope_scaling)}
    result = {"config": to_dict(cfg), "checkpoint": str(step_dir), "rope": rope_info,
              "haystack_tokens": stream_len, "summary": summary, "grid": g,
              "cells": [{k: v for k, v in c.items() if k != "settings"} for c in cells]}
    (out / "needle.json").write_text(json.dumps(result, indent=1))
    write_markdown(out / "needle.md", g, summary, title)
    plot_heatmap(out / "needle.png", g, title, with_rank=cfg.distractors > 0)
    done_info = {**summary, "checkpoint": str(step_dir), "rope": cfg.rope, "lengths": cfg.lengths,
                 "depths": cfg.depths, "needle_json": str(out / "needle.json")}
    done.write_text(json.dumps(done_info, indent=1))
    return done_info
