"""`lmforge sftdata`: conversation files -> a curated SFT set, every step counted (docs/sftdata.md).

    lmforge sftdata --data corpus/sft.jsonl --set out_dir=runs/sftdata --set task_key=meta.category \\
        --set scoring.kind=judge --set scoring.model=runs/pretrain --set scoring.top_share=0.8 \\
        --set diversity.target=1000

Steps, in this order, each optional (the reports' SFT data practice):
  read            conversations (any SFT format of lmforge.align.formats, written back as OpenAI
                  messages) with a task and a source label
  exact_dedup     prompts (user turns) equal once case and spacing are normalised
  near_dedup      prompts near-duplicate by MinHash (the data pipeline's lmforge.data.dedup.minhash)
  evolve          Yi / WizardLM: harder prompts rewritten by a generator model, answered by it
  score           a reward model (Hugging Face folder) or our own checkpoint as judge (mean reply
                  log-probability per token); drop below `threshold`, keep the `top_share` per task
  source_mix      StableLM 2: per-source weights and caps
  task_mix        per-task weights and caps (Index: supplement tasks short of data)
  diversity       Index: cluster prompts (k-means over TF-IDF, or over sentence embeddings with
                  diversity.backend=embedding), sample evenly across clusters
  system_assign   Yi: designed system prompts given evenly to conversations without one
  system_balance  Yi: no system prompt above `max_share` of the kept set

out_dir: sft.jsonl (the curated conversations, the input records with a `curation` key:
task, source, origin, score, cluster), sftdata.json (every step's stats: in + added = kept
+ removed, in conversations and bytes, with its distributions before and after),
rejected/NN-STEP.jsonl (each dropped conversation with its reason), rejects.jsonl (malformed
lines), work/scores/, work/generations/, work/embeddings/ (reused when an interrupted run is
rerun), DONE.json.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.align import curate, diversity, system_balance
from lmforge.align.curate import Item, StepResult
from lmforge.align.formats import DataFile
from lmforge.config import ConfigError, check, to_dict
from lmforge.data.config import MinhashConfig
from lmforge.data.embed import check_backend
from lmforge.io.atomic import read_json, write_json, write_jsonl
from lmforge.io.documents import ErrorSink
from lmforge.stagekit.runner import data_account
from lmforge.stagekit.stage import DONE, Arg, Stage


# Prompts are short: word bigrams (the pipeline's 5-grams leave a short prompt one or two shingles;
# measured in docs/sftdata.md: bigrams at 0.7 find 99% of 4%-edited copies and merge the fewest
# distinct short prompts).
PROMPT_MINHASH = {"ngram": 2, "threshold": 0.7}


@dataclass
class DedupConfig:
    exact: bool = True             # drop conversations whose normalised prompt was seen before
    near: bool = True              # drop near-duplicate prompts (MinHash below, word 2-grams, 0.7)
    minhash: MinhashConfig = field(default_factory=lambda: MinhashConfig(**PROMPT_MINHASH))

    @classmethod
    def _base(cls, data):  # the prompt defaults stay under keys the user sets
        if isinstance(data, dict) and isinstance(data.get("minhash"), dict):
            data["minhash"] = {**PROMPT_MINHASH, **data["minhash"]}
        return {}


@dataclass
class EvolveConfig:
    """Yi / WizardLM prompt evolution; meant for a capable generator (see lmforge.align.evolve)."""
    generator: str = ""            # "" = off; a checkpoint, run folder or exported HF folder
    methods: list[str] = field(default_factory=lambda: ["constraints", "deepen", "concretize", "reasoning",
                                                        "breadth"])   # WizardLM templates, drawn in turn
    rounds: int = 1                # WizardLM: 4
    share: float = 1.0             # of the single-turn conversations evolved in round 1
    max_new_tokens: int = 256      # longest rewritten prompt
    temperature: float = 0.7       # sampling temperature of the generator
    top_p: float = 0.95            # nucleus sampling of the generator
    batch_size: int = 8            # prompts rewritten per generate call
    device: str = "auto"

    def __post_init__(self):
        check(self.rounds >= 1, "rounds", "must be >= 1")
        check(0.0 <= self.share <= 1.0, "share", "must be in [0, 1]")
        check(bool(self.methods), "methods", "give at least one evolution method")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


@dataclass
class ScoringConfig:
    kind: Literal["none", "reward", "judge"] = "none"   # reward: HF sequence classifier; judge: mean reply log-prob
    model: str = ""                # reward: Hugging Face folder; judge: lmforge checkpoint or run folder
    threshold: float | None = None     # drop scores below it
    top_share: float | None = None     # keep the best share of each task
    label: int | None = None       # reward: which logit is the reward (None: the model has one)
    max_length: int = 0            # tokens scored (0: the judge's context, 2048 for a reward model)
    batch_size: int = 8            # conversations scored per forward pass
    device: str = "auto"

    def __post_init__(self):
        check(self.kind == "none" or bool(self.model), "model", f"scoring.kind={self.kind} needs a model")
        check(self.top_share is None or 0.0 < self.top_share <= 1.0, "top_share", "must be in (0, 1]")
        check(self.max_length >= 0, "max_length", "must be >= 0")


@dataclass
class WeightsConfig:
    """StableLM 2 mixes several public sets: weights (< 1 keeps a share, > 1 repeats) and caps."""
    sources: dict[str, float] = field(default_factory=dict)    # source -> weight (< 1 keeps a share, > 1 repeats)
    source_caps: dict[str, int] = field(default_factory=dict)  # source -> most conversations kept
    tasks: dict[str, float] = field(default_factory=dict)      # task -> weight, as for sources
    task_caps: dict[str, int] = field(default_factory=dict)    # task -> most conversations kept

    def __post_init__(self):
        for name in ("sources", "tasks"):
            for k, v in getattr(self, name).items():
                check(v >= 0, f"{name}.{k}", "must be >= 0")
        for name in ("source_caps", "task_caps"):
            for k, v in getattr(self, name).items():
                check(v >= 0, f"{name}.{k}", "must be >= 0")


Backend = Literal["tfidf", "embedding"]   # the names of the topics stage's `backend` (lmforge.data.config)


@dataclass
class DiversityConfig:
    target: int = 0                # conversations kept; 0 = step off
    clusters: int = 16             # k-means clusters of the prompts
    backend: Backend = "tfidf"     # prompt vectors: TF-IDF, or sentence embeddings (pip install 'lmforge[embed]')
    max_features: int = 20000      # TF-IDF vocabulary size (both backends: TF-IDF names the clusters)

    def __post_init__(self):
        check(self.target >= 0, "target", "must be >= 0 (0 = off)")
        check(self.clusters >= 1, "clusters", "must be >= 1")
        check_backend(self.backend)


@dataclass
class SystemConfig:
    prompts: list[str] = field(default_factory=list)   # designed system instructions to assign
    prompts_file: str = ""         # more of them, one per line
    assign_share: float = 0.0      # of the conversations without a system prompt that get one
    max_share: float = 1.0         # no system prompt above this share of the kept set (1 = off)
    group_by: Literal["text", "cluster"] = "text"   # a group is one exact system prompt, or a cluster of them
    clusters: int = 8              # group_by=cluster: k-means clusters of the system prompts
    backend: Backend = "tfidf"     # group_by=cluster: TF-IDF (character n-grams) or sentence embeddings

    def __post_init__(self):
        check(0.0 <= self.assign_share <= 1.0, "assign_share", "must be in [0, 1]")
        check(0.0 < self.max_share <= 1.0, "max_share", "must be in (0, 1]")
        check(self.clusters >= 1, "clusters", "must be >= 1")
        check_backend(self.backend)

    def all_prompts(self) -> list[str]:
        out = list(self.prompts)
        if self.prompts_file:
            p = Path(self.prompts_file)
            if not p.is_file():
                raise ConfigError(f"system.prompts_file: {p}: no such file")
            out += [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return out


@dataclass
class SFTDataConfig:
    # conversation files: paths or {path, format, columns, tags} (lmforge.align.formats; any SFT format)
    data: list[str | DataFile] = field(default_factory=list)
    out_dir: str = "runs/sftdata"
    task_key: str = "task"         # dotted key of a record's task (e.g. meta.category); else its file's stem
    source_key: str = "meta.source"   # dotted key of a record's source set; else its file's stem
    seed: int = 0                  # sampling seed (diversity, balance, weights, evolution)
    workers: int = 1               # MinHash signature processes
    dedup: DedupConfig = field(default_factory=DedupConfig)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self):
        check(len(self.data) > 0, "data", "give at least one conversation jsonl file")
        check(self.workers >= 1, "workers", "must be >= 1")


# ------------------------------------------------------------------ model-backed steps


def _key(messages: list[dict], salt: str) -> str:
    return hashlib.sha1((salt + json.dumps(messages, ensure_ascii=False, sort_keys=True)).encode()).hexdigest()


class Cache:
    """work/NAME/part-NNNNN.json: results by key, one part written (atomically) per batch of
    work, all parts read back on a rerun; total writing stays linear in the number of results."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data: dict = {}
        self.parts = 0
        for p in sorted(folder.glob("part-*.json")) if folder.is_dir() else []:
            self.data.update(read_json(p))
            self.parts += 1

    def fill(self, keys: list[str], compute, chunk: int = 256) -> list:
        todo = [k for k in dict.fromkeys(keys) if k not in self.data]
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            new = dict(zip(part, compute(part)))
            write_json(self.folder / f"part-{self.parts:05d}.json", new, indent=None)
            self.parts += 1
            self.data.update(new)
        return [self.data[k] for k in keys]


def make_scorer(cfg: ScoringConfig):
    """(function: conversations -> scores, a name for the cache)."""
    from lmforge.device import resolve_device

    device = resolve_device(cfg.device)
    if cfg.kind == "reward":
        from lmforge.eval.reward import RewardModel
        rm = RewardModel(cfg.model, str(device), cfg.max_length or 2048, cfg.batch_size, cfg.label)
        return rm, f"reward:{Path(cfg.model).resolve()}:{cfg.label}:{cfg.max_length}"
    from lmforge.eval.judge import judge_scores
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info
    try:
        model, step_dir = load_checkpoint(cfg.model, device)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"scoring.model: {e}") from None
    tok_dir = tokenizer_dir_of(step_dir)
    if tok_dir is None:
        raise ConfigError(f"scoring.model: no tokenizer folder beside {step_dir}")
    tok, pad = load_tokenizer(tok_dir), tokenizer_info(tok_dir).get("pad_id") or 0
    max_len = min(cfg.max_length or model.cfg.max_seq_len, model.cfg.max_seq_len)
    return (lambda convs: judge_scores(model, tok, convs, max_len=max_len, batch_size=cfg.batch_size, pad_id=pad),
            f"judge:{step_dir.resolve()}:{max_len}")


def make_generator(cfg: EvolveConfig, seed: int):
    """conversations (ending on a user turn) -> the generator's replies, batched."""
    from lmforge.align.chat_template import render
    from lmforge.device import resolve_device
    from lmforge.infer.generate import generate, load_for_generation

    try:
        model, tok = load_for_generation(cfg.generator, str(resolve_device(cfg.device)))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"evolve.generator: {e}") from None

    def gen(convs: list[list[dict]]) -> list[str]:
        out = []
        for s in range(0, len(convs), cfg.batch_size):
            prompts = [render(m, add_generation_prompt=True) for m in convs[s:s + cfg.batch_size]]
            out += generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_p=cfg.top_p, seed=seed + s)
        return out
    return gen


def embed_cached(texts: list[str], folder: Path, chunk: int = 1024):
    """Unit sentence embeddings (lmforge.data.embed) of the texts, each distinct text embedded
    once; work/embeddings/part-NNNNN.npz (text hashes + float32 rows) are reused on a rerun."""
    import numpy as np
    from lmforge.data import embed
    from lmforge.io.atomic import atomic_open

    key = lambda t: hashlib.sha1(f"{embed.PACKAGE}:{t}".encode()).hexdigest()
    have, parts = {}, sorted(folder.glob("part-*.npz")) if folder.is_dir() else []
    for p in parts:
        with np.load(p) as z:
            have.update(zip(z["keys"].tolist(), z["rows"]))
    keys = [key(t) for t in texts]
    todo = list({k: t for k, t in zip(keys, texts) if k not in have}.items())
    for s in range(0, len(todo), chunk):
        ks, ts = zip(*todo[s:s + chunk])
        rows = embed.embed(list(ts))
        with atomic_open(folder / f"part-{len(parts):05d}.npz", "wb") as f:
            np.savez(f, keys=np.array(ks), rows=rows)
        parts.append(folder / f"part-{len(parts):05d}.npz")
        have.update(zip(ks, rows))
    return np.stack([have[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)


def cluster_texts(texts: list[str], backend: str, k: int, seed: int, work: Path, **tfidf_kw):
    """(k-means label per text, TF-IDF rows, their terms, the rows clustered). The TF-IDF rows
    are made on both backends: they name the clusters (top terms of the members) in the report.
    No term at all (e.g. only punctuation): no TF-IDF, and one cluster on the tfidf backend."""
    import numpy as np

    try:
        X, names = diversity.tfidf(texts, **tfidf_kw)
    except ValueError:
        X, names = None, []
    M = embed_cached(texts, work / "embeddings") if backend == "embedding" else X
    labels = diversity.kmeans(M, k, seed) if M is not None else np.zeros(len(texts), dtype=np.int64)
    return labels, X, names, M


# ------------------------------------------------------------------ steps


def step_exact(cfg, items, work):
    return curate.exact_dedup(items)


def step_near(cfg, items, work):
    from lmforge.data.dedup.minhash import dedup_texts
    keep = dedup_texts([curate.prompt_key(i) for i in items], cfg.dedup.minhash, cfg.workers) if items else []
    res = curate.mask_step(items, keep, "near_duplicate", f"MinHash prompt similarity >= {cfg.dedup.minhash.threshold}")
    res.details = {"threshold": cfg.dedup.minhash.threshold, "ngram": cfg.dedup.minhash.ngram}
    return res


def step_evolve(cfg, items, work, failed_out: list):
    from lmforge.align.evolve import evolve
    gen = make_generator(cfg.evolve, cfg.seed)
    cache = Cache(work / "generations")
    salt = f"{Path(cfg.evolve.generator).resolve()}:{cfg.evolve.max_new_tokens}:{cfg.evolve.temperature}"

    def cached(convs):
        keys = [_key(c, salt) for c in convs]
        by_key = dict(zip(keys, convs))
        return cache.fill(keys, lambda ks: gen([by_key[k] for k in ks]), chunk=cfg.evolve.batch_size * 8)
    added, failed, details = evolve(items, cached, cfg.evolve.methods, cfg.evolve.rounds, cfg.evolve.share, cfg.seed)
    failed_out += failed
    return StepResult(items + added, [], added, details)


def step_score(cfg, items, work):
    scorer, name = make_scorer(cfg.scoring)
    cache = Cache(work / "scores")
    keys = [_key(i.messages, name) for i in items]
    by_key = {k: i.messages for k, i in zip(keys, items)}
    scores = cache.fill(keys, lambda ks: scorer([by_key[k] for k in ks]), chunk=max(cfg.scoring.batch_size * 16, 64))
    for it, s in zip(items, scores):
        it.score = float(s)
    res = curate.score_filter(items, cfg.scoring.threshold, cfg.scoring.top_share)
    res.details["scorer"] = name
    return res


def step_sources(cfg, items, work):
    return curate.weigh(items, "source", cfg.weights.sources, cfg.weights.source_caps, cfg.seed)


def step_tasks(cfg, items, work):
    return curate.weigh(items, "task", cfg.weights.tasks, cfg.weights.task_caps, cfg.seed)


def step_diversity(cfg, items, work):
    import numpy as np
    from lmforge.data.text import units

    d = cfg.diversity
    texts = [i.prompt or i.messages[0]["content"] for i in items]   # no user turn: the first message
    labels, X, names, M = cluster_texts(texts, d.backend, d.clusters, cfg.seed, work,
                                        tokenizer=lambda t: units(t, lowercase=True), max_features=d.max_features)
    keep = diversity.sample_evenly(labels, d.target, curate.order_by_priority(items, cfg.seed))
    for it, c in zip(items, labels):
        it.cluster = int(c)
    n = len(np.unique(labels))
    res = curate.mask_step(items, keep, "diversity_sampling", f"even sampling over {n} prompt clusters "
                                                              f"({d.backend}) to {d.target}")
    res.details = {"target": d.target, "backend": d.backend, "clusters": int(n),
                   "cluster_sizes_before": diversity.cluster_sizes(labels),
                   "cluster_sizes_after": diversity.cluster_sizes(labels, keep),
                   "cluster_terms": diversity.top_terms(X, labels, names) if X is not None else {},
                   "cluster_central": diversity.central(M, labels, texts) if M is not None else {}}
    return res


def step_system_assign(cfg, items, work):
    s = cfg.system
    new, used = system_balance.assign(items, s.all_prompts(), s.assign_share, cfg.seed)
    gained = sum(b.nbytes - a.nbytes for a, b in zip(items, new))
    return StepResult(new, modified={"system_prompt_assigned": gained} if gained else {},
                      details={"assigned": used, "system_before": curate.by(items, "system"),
                               "system_after": curate.by(new, "system")})


def step_system_balance(cfg, items, work):
    s = cfg.system
    keys = None
    if s.group_by == "cluster":
        idx = [k for k, it in enumerate(items) if it.system]
        keys = system_balance.group_keys(items)
        if idx:   # distinct prompts are clustered: how often one is used must not shape the groups
            distinct = list(dict.fromkeys(items[k].system for k in idx))
            labels = cluster_texts(distinct, s.backend, s.clusters, cfg.seed, work)[0]
            of = dict(zip(distinct, labels.tolist()))
            for k in idx:
                keys[k] = f"system cluster {of[items[k].system]}"
    return system_balance.balance(items, s.max_share, cfg.seed, keys)


STEPS = [  # (name, enabled(cfg), function)
    ("exact_dedup", lambda c: c.dedup.exact, step_exact),
    ("near_dedup", lambda c: c.dedup.near, step_near),
    ("evolve", lambda c: bool(c.evolve.generator), step_evolve),
    ("score", lambda c: c.scoring.kind != "none", step_score),
    ("source_mix", lambda c: bool(c.weights.sources or c.weights.source_caps), step_sources),
    ("task_mix", lambda c: bool(c.weights.tasks or c.weights.task_caps), step_tasks),
    ("diversity", lambda c: c.diversity.target > 0, step_diversity),
    ("system_assign", lambda c: c.system.assign_share > 0 and bool(c.system.all_prompts()), step_system_assign),
    ("system_balance", lambda c: c.system.max_share < 1, step_system_balance),
]


# ------------------------------------------------------------------ the stage


def _read(cfg: SFTDataConfig, out: Path) -> tuple[list[Item], dict, str]:
    """(conversations, the read step's stats, the one-line account)."""
    (out / "rejects.jsonl").unlink(missing_ok=True)   # rewritten on each read: no duplicates on a rerun
    with ErrorSink(out / "rejects.jsonl") as errors:
        try:
            items, stats = curate.read_items(cfg.data, errors, cfg.task_key, cfg.source_key)
        except FileNotFoundError as e:
            raise ConfigError(f"data: {e}") from None
    counts = {k: stats[k] for k in ("records", "kept", *curate.READ_REJECTS)}
    account = data_account("sftdata", counts, errors, cfg.data)   # DataError (exit 5) when none is usable
    nbytes = sum(i.nbytes for i in items)
    read = {"step": "read", "in": {"docs": stats["records"], "bytes": nbytes}, "added": {},
            "kept": {"docs": len(items), "bytes": nbytes},
            "removed": {k: {"docs": stats[k], "bytes": 0} for k in curate.READ_REJECTS if stats[k]},
            "details": {**stats, "note": "bytes: UTF-8 bytes of message contents (unreadable lines count 0)",
                        "task_before": curate.by(items, "task"), "source_before": curate.by(items, "source")}}
    return items, read, account


def body(cfg: SFTDataConfig, progress: bool = True) -> dict:
    out = Path(cfg.out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    items, read, account = _read(cfg, out)
    steps, failed = [read], []
    for name, enabled, fn in STEPS:
        if not enabled(cfg):
            continue
        res = fn(cfg, items, work, failed) if name == "evolve" else fn(cfg, items, work)
        stats = curate.step_stats(name, items, res)
        n = len(steps)
        drops = [curate.drop_record(d) for d in res.dropped + (failed if name == "evolve" else [])]
        if drops:
            write_jsonl(out / "rejected" / f"{n:02d}-{name}.jsonl", drops)
        steps.append(stats)
        if progress:
            removed = ", ".join(f"{k} {v['docs']}" for k, v in stats["removed"].items()) or "none"
            added = ", ".join(f"{k} {v['docs']}" if v["docs"] else f"{k} (+{v['bytes']} bytes)"
                              for k, v in stats["added"].items()) or "none"
            print(f"sftdata {name}: {stats['in']['docs']} in, {stats['kept']['docs']} kept; removed {removed}; "
                  f"added {added}")
        items = res.kept
    if not items:
        raise ConfigError("no conversation survived curation: loosen the thresholds (see sftdata.json)")
    write_jsonl(out / "sft.jsonl", [i.out_record() for i in items])
    final = {a: curate.by(items, a) for a in ("task", "source", "system", "origin")}
    report = {"config": to_dict(cfg), "steps": steps, "final": final, "output": str(out / "sft.jsonl")}
    write_json(out / "sftdata.json", report)
    summary = {"output": str(out / "sft.jsonl"), "conversations_in": read["in"]["docs"],
               "conversations_out": len(items), "steps": [s["step"] for s in steps],
               "tasks": len(final["task"]), "sources": len(final["source"]), "account": account}
    return summary


STAGE = Stage(kind="sftdata", config=SFTDataConfig, body=body, inputs=("data",),
              help="curate SFT conversations: dedup, scoring, diversity, system-prompt balance",
              example="diversity.target=1000",
              args=(Arg("--data", "data", "conversation jsonl ({'messages': [...]}), added to `data` (repeatable)",
                        append=True, metavar="JSONL"),),
              outputs=("sft.jsonl", "sftdata.json", DONE))
run = STAGE.run
