"""`lmforge longstudy`: Index-1.9B-32K's long-context study in one run.

For a list of settings (a checkpoint + a RoPE setting: as trained, naive extrapolation,
Dynamic NTK with a factor, linear interpolation, and/or another RoPE base applied without
training) it measures, and writes as ONE comparison:

  ppl        validation perplexity by context length (lmforge.eval.context_ppl: sequences
             of L + 1 tokens from held-out documents that long, else concatenations; the
             source of every length is recorded), also over the last quarter of positions;
  short      short-context ability for the long/short seesaw: per-domain perplexity at a
             short length (default: the baseline setting's trained length) and multiple
             choice accuracy, with the change against the `baseline` setting (Index-32K:
             short-text ability fell ~25% after the 32K stages);
  needle     needle in a haystack by length x depth (lmforge.eval.needle), per setting;
  tasks      multi-needle, multi-value and key-value retrieval by length (lmforge.eval.long_tasks);
  longbench  LongBench-format files with LongBench's metrics (lmforge.eval.longbench).

A setting with `rope: model` is only run up to its trained length (max_seq_len); past it
the cells are marked "beyond the trained length" (that is what `rope: naive` measures).

    settings:
      - {name: base, checkpoint: runs/x/pretrain}                       # before the long stage
      - {name: 32k, checkpoint: runs/x/longctx}                         # after it
      - {name: base+ntk8, checkpoint: runs/x/pretrain, rope: dynamic, factor: 8}
      - {name: base+naive, checkpoint: runs/x/pretrain, rope: naive}
      - {name: 32k@1e6, checkpoint: runs/x/longctx, rope_theta: 1.0e6}  # another base, untrained

out_dir: longstudy.json (everything), longstudy.md (tables), ppl_vs_length.png,
rope_heatmap.png, needle.png (heatmaps side by side), seesaw.png, parts/ (each finished
setting x section, so an interrupted study resumes), DONE.json.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.config import ConfigError, check, to_dict
from lmforge.io.atomic import write_json, write_text
from lmforge.model.config import MAX_POSITIONS
from lmforge.stagekit.parts import Parts
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import source_checkpoint, source_tokenizer

ROPES = ("model", "naive", "dynamic", "linear")


@dataclass
class StudySetting:
    name: str = ""
    checkpoint: str = ""                 # step dir or run dir (its latest checkpoint)
    rope: Literal["model", "naive", "dynamic", "linear"] = "model"
    factor: float = 8.0                  # dynamic / linear (Index-32K compared Dynamic NTK x8)
    rope_theta: float | None = None      # another RoPE base, applied without training

    def __post_init__(self):
        check(bool(self.name), "name", "every setting needs a name")
        check(bool(self.checkpoint), "checkpoint", f"setting {self.name!r} needs a checkpoint")
        check(self.factor >= 1.0, "factor", "must be >= 1")
        check(self.rope_theta is None or self.rope_theta > 1.0, "rope_theta", "must be > 1")


@dataclass
class StudyPplConfig:
    data: str = ""                       # token dataset folder; "" = no perplexity (and no short ppl)
    split: Literal["val", "train"] = "val"
    lengths: list[int] = field(default_factory=lambda: [512, 1024, 2048, 4096])
    max_seqs: int = 8                    # sequences per length
    min_docs: int = 4                    # fewer documents that long: concatenate (concat: auto)
    concat: Literal["auto", "never", "always"] = "auto"

    def __post_init__(self):
        check(all(2 <= n <= MAX_POSITIONS for n in self.lengths), "lengths", f"each in [2, {MAX_POSITIONS}]")
        check(self.max_seqs >= 1 and self.min_docs >= 1, "max_seqs", "max_seqs and min_docs must be >= 1")
        self.lengths = sorted(set(self.lengths))


@dataclass
class StudyShortConfig:
    seq_len: int = 0                     # 0 = the baseline setting's max_seq_len (its trained length)
    max_docs_per_domain: int = 32
    mcq: list[str] = field(default_factory=list)   # multiple-choice jsonl files
    mcq_max_items: int = 100
    shots: int = 0

    def __post_init__(self):
        check(self.seq_len >= 0 and self.max_docs_per_domain >= 0 and self.mcq_max_items >= 0, "seq_len",
              "seq_len, max_docs_per_domain and mcq_max_items must be >= 0")
        check(0 <= self.shots <= 64, "shots", "must be in 0..64")


@dataclass
class StudyNeedleConfig:
    haystack: str = ""                   # token dataset or text files; "" = no needle / tasks
    lengths: list[int] = field(default_factory=list)   # [] = ppl.lengths
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    trials: int = 1
    needle: str = "\nThe special magic number is {value}.\n"
    question: str = "\n\nWhat is the special magic number mentioned above? The special magic number is"
    value_digits: int = 6
    distractors: int = 4
    seed: int = 0

    def __post_init__(self):
        check(all(0.0 <= d <= 100.0 for d in self.depths) and self.depths, "depths", "percent, 0..100")
        check(self.needle.count("{value}") == 1, "needle", "must contain {value} exactly once")
        check(self.trials >= 1 and 2 <= self.value_digits <= 30 and self.distractors >= 0, "trials",
              "trials >= 1, value_digits in [2, 30], distractors >= 0")
        self.depths = sorted(set(float(d) for d in self.depths))


@dataclass
class StudyTasksConfig:
    kinds: list[Literal["multi_needle", "multi_value", "kv"]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)   # [] = the needle lengths
    trials: int = 2
    needles: int = 4                     # multi_needle: needles; multi_value: values
    kv_depths: list[float] = field(default_factory=lambda: [0.0, 50.0, 100.0])
    distractors: int = 4
    seed: int = 0

    def __post_init__(self):
        check(self.trials >= 1 and 2 <= self.needles <= 16 and self.distractors >= 0, "needles",
              "needles in [2, 16], trials >= 1, distractors >= 0")


@dataclass
class StudyLongBenchConfig:
    files: list[str] = field(default_factory=list)     # LongBench-format jsonl files
    prompt_file: str = ""                # LongBench's config/dataset2prompt.json
    maxlen_file: str = ""                # LongBench's config/dataset2maxlen.json
    max_length: int = 0                  # prompt tokens; 0 = the setting's window minus the answer
    max_items: int = 0                   # per dataset; 0 = all
    chat: bool = True                    # ChatML wrapper (except LongBench's raw-prompt tasks)


@dataclass
class LongStudyConfig:
    settings: list[StudySetting] = field(default_factory=list)
    baseline: str = ""                   # the "before" setting of the seesaw; "" = the first
    out_dir: str = "runs/longstudy"
    tokenizer: str = ""                  # "" = the one beside the first setting's checkpoint
    device: str = "auto"
    ppl: StudyPplConfig = field(default_factory=StudyPplConfig)
    short: StudyShortConfig = field(default_factory=StudyShortConfig)
    needle: StudyNeedleConfig = field(default_factory=StudyNeedleConfig)
    tasks: StudyTasksConfig = field(default_factory=StudyTasksConfig)
    longbench: StudyLongBenchConfig = field(default_factory=StudyLongBenchConfig)

    def __post_init__(self):
        check(len(self.settings) > 0, "settings", "give at least one {name, checkpoint, rope} setting")
        names = [s.name for s in self.settings]
        check(len(set(names)) == len(names), "settings", f"names must be unique, got {names}")
        check(not self.baseline or self.baseline in names, "baseline", f"{self.baseline!r} is not one of {names}")
        check(bool(self.ppl.data or self.needle.haystack or self.longbench.files), "ppl.data",
              "nothing to measure: set ppl.data, needle.haystack or longbench.files")
        check(not self.tasks.kinds or bool(self.needle.haystack), "tasks.kinds", "needs needle.haystack")

    @property
    def base_name(self) -> str:
        return self.baseline or self.settings[0].name


# ------------------------------------------------------------------ settings and caching


@dataclass
class Prepared:
    setting: StudySetting
    step_dir: Path
    cfg: object                           # ModelConfig as run
    window: int                           # longest usable prompt

    def info(self) -> dict:
        c = self.cfg
        return {"name": self.setting.name, "checkpoint": str(self.step_dir), "rope": self.setting.rope,
                "factor": self.setting.factor if self.setting.rope in ("dynamic", "linear") else None,
                "rope_theta": c.rope_theta, "trained_rope_theta": self.trained_theta,
                "max_seq_len": c.max_seq_len, "window": self.window, "rope_scaling": to_dict(c.rope_scaling)}

    trained_theta: float = 0.0


def prepare(s: StudySetting, key: str) -> Prepared:
    from lmforge.model.rope import extension_config, usable_length

    step_dir, mcfg = source_checkpoint(s.checkpoint, f"{key}.checkpoint")
    trained = mcfg.rope_theta
    if s.rope_theta is not None:
        mcfg = dataclasses.replace(mcfg, rope_theta=float(s.rope_theta))
    mcfg = dataclasses.replace(extension_config(mcfg, s.rope, s.factor), attn_backend="sdpa")
    window = usable_length(mcfg) if s.rope == "model" else MAX_POSITIONS
    return Prepared(s, step_dir, mcfg, window, trained)


def load_model(p: Prepared, device):
    import torch

    from lmforge import checkpoint as ckpt
    from lmforge.model.transformer import Transformer

    model = Transformer(p.cfg)
    ckpt.load_weights(p.step_dir, model)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    return model.to(device).eval()


# ------------------------------------------------------------------ sections


def ppl_section(model, p: Prepared, cfg: LongStudyConfig, sequences: dict, device) -> dict:
    from lmforge.eval.context_ppl import ppl_at_length

    out = {}
    for L in cfg.ppl.lengths:
        seqs, _ = sequences[L]
        out[str(L)] = None if L > p.window else ppl_at_length(model, seqs, device) if seqs else None
    return out


def short_section(model, tok, cfg: LongStudyConfig, seq_len: int, progress: bool) -> dict:
    from lmforge.eval.mcq import evaluate_mcq, load_items
    from lmforge.eval.perplexity import perplexity
    from lmforge.shards import TokenDataset

    out: dict = {"seq_len": seq_len}
    if cfg.ppl.data:
        res = perplexity(model, TokenDataset(cfg.ppl.data, cfg.ppl.split), tok, seq_len, 8,
                         cfg.short.max_docs_per_domain)
        out["ppl"] = {d: r["ppl"] for d, r in res.items()}
        out["bpb"] = {d: r["bpb"] for d, r in res.items() if r["bpb"] is not None}
    for f in cfg.short.mcq:
        items = load_items(f).items
        items = items[:cfg.short.mcq_max_items] if cfg.short.mcq_max_items else items
        if items:
            r = evaluate_mcq(model, tok, items, cfg.short.shots, max_len=seq_len, progress=False)
            out.setdefault("mcq", {})[Path(f).stem] = r["acc"]
    return out


def needle_section(model, p: Prepared, cfg: LongStudyConfig, cases, device) -> dict:
    from lmforge.eval.needle import grids, score_case, summarize

    ok = [c for c in cases if len(c.prompt) + len(c.target) <= p.window]
    cells = [score_case(model, c, device) for c in ok]
    nc = dataclasses.replace(cfg.needle, lengths=needle_lengths(cfg))
    return {"grid": grids(nc, cells), "summary": summarize(cells), "skipped_cells": len(cases) - len(ok)}


def tasks_section(model, p: Prepared, queries, device) -> dict:
    from lmforge.eval.long_tasks import score_query, summarize_tasks

    cells = [score_query(model, q, device) for q in queries if len(q.prompt) + len(q.target) <= p.window]
    return summarize_tasks(cells)


def longbench_section(model, tok, p: Prepared, cfg: LongStudyConfig, progress: bool) -> dict:
    from lmforge.eval import longbench as lb
    from lmforge.infer.generate import default_stop_ids, generate_ids

    loaded = lb.load(cfg.longbench.files)
    prompts, maxlen = lb.read_templates(cfg.longbench.prompt_file or None, cfg.longbench.maxlen_file or None)
    by_ds: dict[str, list] = {}
    for it in loaded.items:
        by_ds.setdefault(it.dataset, []).append(it)
    stop = default_stop_ids(tok)
    out = {"malformed": loaded.errors}
    for ds, items in by_ds.items():
        items = items[:cfg.longbench.max_items] if cfg.longbench.max_items else items
        gen = int(maxlen.get(ds, lb.DEFAULT_MAX_GEN))
        window = min(p.window, MAX_POSITIONS)
        max_len = cfg.longbench.max_length or (min(window, p.cfg.max_seq_len if p.setting.rope == "model"
                                                   else window) - gen - 16)
        if max_len < 32:
            out[ds] = {"skipped": f"window {p.window} leaves {max_len} prompt tokens after a {gen}-token answer"}
            continue
        preds = []
        for it in items:
            ids = lb.prompt_ids(tok, it, prompts.get(ds, lb.DEFAULT_PROMPT), max_len, cfg.longbench.chat)
            new = generate_ids(model, [ids], max_new_tokens=gen, stop_ids=stop, max_prompt_len=len(ids))[0]
            preds.append(tok.decode(new, skip_special_tokens=True))
        out[ds] = {**lb.score_dataset(ds, preds, items), "max_length": max_len, "max_new_tokens": gen}
    return out


def needle_lengths(cfg: LongStudyConfig) -> list[int]:
    return sorted(set(cfg.needle.lengths or cfg.ppl.lengths))


# ------------------------------------------------------------------ the stage


def inputs(cfg: LongStudyConfig, tok, info: dict):
    """Sequences per length, needle cases and task queries: built once, shared by every setting."""
    from lmforge.eval.context_ppl import long_sequences
    from lmforge.eval.long_tasks import Pieces, kv_retrieval, multi_needle, multi_value
    from lmforge.eval.needle import NeedleText, build_cases, haystack_stream
    from lmforge.shards import TokenDataset

    encode = lambda s: tok.encode(s, add_special_tokens=False).ids   # noqa: E731
    sequences, sources = {}, {}
    if cfg.ppl.data:
        try:
            ds = TokenDataset(cfg.ppl.data, cfg.ppl.split)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"ppl.data: {e}") from None
        for L in cfg.ppl.lengths:
            sequences[L] = long_sequences(ds, L, cfg.ppl.max_seqs, cfg.ppl.min_docs, cfg.ppl.concat)
            sources[str(L)] = sequences[L][1]
    cases, queries = [], []
    if cfg.needle.haystack:
        nc = dataclasses.replace(cfg.needle, lengths=needle_lengths(cfg))
        text = NeedleText(nc, encode)
        longest = max(nc.lengths + (cfg.tasks.lengths or []))
        sep = [info["eos_id"]] if info.get("eos_id") is not None else []
        try:
            stream = haystack_stream(nc.haystack, encode, longest * 2, sep)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"needle.haystack: {e}") from None
        if text.max_overhead() >= nc.lengths[0]:
            raise ConfigError(f"needle.lengths: {nc.lengths[0]} leaves no room for a haystack")
        cases = build_cases(nc, text, stream)
        t = cfg.tasks
        pc = Pieces(encode, nc.value_digits)
        for L in sorted(set(t.lengths or nc.lengths)):
            for trial in range(t.trials):
                if "multi_needle" in t.kinds:
                    queries += multi_needle(pc, stream, L, trial, t.needles, t.distractors, t.seed)
                if "multi_value" in t.kinds:
                    queries += multi_value(pc, stream, L, trial, t.needles, t.seed)
                if "kv" in t.kinds:
                    for d in t.kv_depths:
                        queries += kv_retrieval(pc, L, d, trial, t.distractors, t.seed)
    return sequences, sources, cases, queries


def seesaw(short: dict, base: str) -> dict:
    """Per setting: % change of each short-context perplexity and accuracy vs the baseline."""
    b = short.get(base) or {}
    out = {}
    for name, r in short.items():
        row = {}
        for d, v in (r.get("ppl") or {}).items():
            bv = (b.get("ppl") or {}).get(d)
            if bv and v is not None:
                row[f"ppl/{d}"] = 100.0 * (v / bv - 1.0)
        for s, v in (r.get("mcq") or {}).items():
            bv = (b.get("mcq") or {}).get(s)
            if bv:
                row[f"mcq/{s}"] = 100.0 * (v / bv - 1.0)
        out[name] = row
    return out


def body(cfg: LongStudyConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from lmforge.device import resolve_device
    from lmforge.report.longstudy import study_markdown, write_plots

    out = Path(cfg.out_dir)
    prepared = [prepare(s, f"settings[{i}]") for i, s in enumerate(cfg.settings)]
    _, tok, info = source_tokenizer(prepared[0].step_dir, cfg.tokenizer)
    base = next(p for p in prepared if p.setting.name == cfg.base_name)
    short_len = cfg.short.seq_len or base.cfg.max_seq_len
    sequences, sources, cases, queries = inputs(cfg, tok, info)
    device = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    parts = Parts(out)
    res: dict = {"ppl": {}, "short": {}, "needle": {}, "tasks": {}, "longbench": {}}
    for p in tqdm(prepared, desc="longstudy", unit="setting", disable=not progress):
        model = load_model(p, device)
        key = [str(p.step_dir), to_dict(p.setting), to_dict(p.cfg)]
        name = p.setting.name
        if cfg.ppl.data:
            res["ppl"][name] = parts.get_or_run(f"{name}-ppl", [key, to_dict(cfg.ppl)],
                                                lambda: ppl_section(model, p, cfg, sequences, device))
        if cfg.ppl.data or cfg.short.mcq:
            res["short"][name] = parts.get_or_run(f"{name}-short", [key, to_dict(cfg.ppl), to_dict(cfg.short),
                                                                    short_len],
                                                  lambda: short_section(model, tok, cfg, short_len, progress))
        if cases:
            res["needle"][name] = parts.get_or_run(f"{name}-needle", [key, to_dict(cfg.needle), cfg.ppl.lengths],
                                                   lambda: needle_section(model, p, cfg, cases, device))
        if queries:
            res["tasks"][name] = parts.get_or_run(f"{name}-tasks", [key, to_dict(cfg.tasks), to_dict(cfg.needle)],
                                                  lambda: tasks_section(model, p, queries, device))
        if cfg.longbench.files:
            res["longbench"][name] = parts.get_or_run(f"{name}-longbench", [key, to_dict(cfg.longbench)],
                                                      lambda: longbench_section(model, tok, p, cfg, progress))
        del model
    study = {"config": to_dict(cfg), "baseline": cfg.base_name, "settings": [p.info() for p in prepared],
             "ppl": {"lengths": cfg.ppl.lengths, "sources": sources, "results": res["ppl"]},
             "short": {"seq_len": short_len, "results": res["short"], "seesaw": seesaw(res["short"], cfg.base_name)},
             "needle": {"lengths": needle_lengths(cfg), "depths": cfg.needle.depths, "results": res["needle"]},
             "tasks": res["tasks"], "longbench": res["longbench"]}
    write_json(out / "longstudy.json", study)
    images = write_plots(study, out)
    write_text(out / "longstudy.md", study_markdown(study, images))
    summary = {"longstudy_json": str(out / "longstudy.json"), "settings": [p.setting.name for p in prepared],
               "plots": [i.name for i in images]}
    for name, r in res["ppl"].items():
        for L, v in r.items():
            if v:
                summary[f"ppl/{name}/{L}"] = round(v["ppl"], 3)
    return (summary)


STAGE = Stage(kind="longstudy", config=LongStudyConfig, body=body,
              help="long-context study over checkpoints x RoPE settings: perplexity by length, needle heatmaps, "
                   "retrieval tasks, LongBench, the short-context seesaw",
              example="ppl.lengths=[512,1024]", outputs=("longstudy.json", "longstudy.md", DONE))
run = STAGE.run
