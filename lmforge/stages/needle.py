"""`lmforge needle`: needle-in-a-haystack eval over prompt length x depth (Index-1.9B-32K).

The cases and their scoring are lmforge.eval.needle. The model can run as trained, with naive
RoPE extrapolation past its length, or with a training-free Dynamic NTK / linear scaling
(`rope`, `rope_factor`; Index compared NTK x8).

out_dir: cells.jsonl (one line per finished cell; a rerun continues from it), needle.json
(config, cells, grids, summary), needle.md (tables), needle.png (length x depth heatmaps),
DONE.json.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from lmforge.config import ConfigError, check, to_dict
from lmforge.device import resolve_device
from lmforge.eval.needle import (DEFAULT_NEEDLE, DEFAULT_QUESTION, NeedleText, build_cases, grids, haystack_stream,
                                 plot_heatmap, score_case, summarize, write_markdown)
from lmforge.io.atomic import write_json, write_jsonl
from lmforge.model.config import MAX_POSITIONS
from lmforge.model.load import load_weights
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.score_effects import needle_effect
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import source_checkpoint, source_tokenizer


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


def settings_key(cfg: NeedleConfig) -> str:
    """What the cells depend on (not out_dir/device): a rerun continues only if it matches."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "device")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prepare(cfg: NeedleConfig):
    """Model config, tokenizer, cases; every bad setting a ConfigError before the model loads."""
    from lmforge.model.rope import extension_config, usable_length

    step_dir, mcfg = source_checkpoint(cfg.checkpoint, "checkpoint")
    mcfg = dataclasses.replace(extension_config(mcfg, cfg.rope, cfg.rope_factor), attn_backend="sdpa")
    window = usable_length(mcfg) if cfg.rope == "model" else MAX_POSITIONS
    tok_dir, tok, info = source_tokenizer(step_dir, cfg.tokenizer, mcfg.vocab_size)
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


def body(cfg: NeedleConfig, progress: bool = True, model=None) -> dict:
    """Evaluate; `model` replaces the checkpoint's weights (tests: oracles with the same tokenizer)."""
    from lmforge.model.transformer import Transformer

    out = Path(cfg.out_dir)
    step_dir, mcfg, cases, stream_len = prepare(cfg)
    device = resolve_device(cfg.device)
    if model is None:
        model = Transformer(mcfg)
        load_weights(step_dir, model)
        if device.type == "cuda":
            model = model.to(torch.bfloat16)
    model = model.to(device).eval()
    out.mkdir(parents=True, exist_ok=True)
    key = settings_key(cfg)
    cells_path = out / "cells.jsonl"
    finished = load_cells(cells_path, key)
    write_jsonl(cells_path, finished.values())
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
    write_json(out / "needle.json", result)
    write_markdown(out / "needle.md", g, summary, title)
    plot_heatmap(out / "needle.png", g, title, with_rank=cfg.distractors > 0)
    done_info = {**summary, "checkpoint": str(step_dir), "rope": cfg.rope, "lengths": cfg.lengths,
                 "depths": cfg.depths, "needle_json": str(out / "needle.json")}
    effect = needle_effect(cells, cfg.distractors)   # against chance: the stage trains nothing
    if effect:
        done_info["effect"] = effect
    return done_info


NEEDLE_ANSWER_SLACK = 2   # tokens beyond the value's digits (a leading space, an end token)


def recipe_check(checker, st, cfg: NeedleConfig) -> Facts:
    """The longest prompt plus its answer fits the model (unless a RoPE extension is tested)."""
    model = checker.model_of(cfg.checkpoint)
    if model is None or cfg.rope != "model":
        return Facts()
    answer = cfg.value_digits + NEEDLE_ANSWER_SLACK
    longest = max(cfg.lengths)
    if longest + answer > model.max_seq_len:
        checker.problem(st, "lengths", f"{longest} (+ up to {answer} answer tokens) exceeds max_seq_len "
                                       f"{model.max_seq_len} of {cfg.checkpoint}: use lengths up to "
                                       f"{model.max_seq_len - answer}, or rope: dynamic|naive to test past it")
    return Facts()


STAGE = Stage(kind="needle", config=NeedleConfig, body=body,
              help="needle-in-a-haystack eval: retrieval over prompt length x depth (needle.json, needle.md, "
                   "needle.png)",
              example="lengths=[1024,2048]", outputs=("needle.json", "needle.md", "needle.png", DONE),
              check=recipe_check)


def run(cfg: NeedleConfig, progress: bool = True, model=None) -> dict:
    """The stage contract around the evaluation; `model` replaces the checkpoint's weights."""
    return dataclasses.replace(STAGE, body=lambda c, p: body(c, p, model)).run(cfg, progress)
