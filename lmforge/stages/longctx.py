"""`lmforge longctx`: continued pretraining at a longer context (Index-1.9B-32K).

    lmforge longctx --set init.from_checkpoint=runs/pretrain --set data=runs/tokens --set out_dir=runs/longctx

Index-32K took Index-1.9B (4096 tokens, RoPE base 10000), raised the RoPE base to
32*10000 and the sequence/position length to 32768, and continued pretraining on long
documents, packed with per-document attention masks and position ids reset at every
document, at a low peak LR (1e-5, cosine, warmup). Those are the defaults here:

    model: {rope_theta: 320000}        # overrides on top of the checkpoint's model config
    train: {seq_len: 32768, optim: {lr: 1e-5}, schedule: {kind: cosine, warmup_steps: 20}}
    min_doc_tokens: null               # null: train.seq_len // 4

Ablations the report tried (and found no gain in), so they can be rerun:
    seq_warmup: {start: 4096, steps: 200}   # context-length warmup: rows grow to train.seq_len
    packing: false                          # one document per row, padded (report: <1% apart)

The loop is pretraining's (LMObjective on the long-document subset, Trainer). The model
is the checkpoint's config with `model` overrides applied (RoPE base, max_seq_len; the
latter defaults to max(checkpoint's, train.seq_len)); checkpoints record the new config,
so `load_checkpoint`, SFT (long SFT) and export read it from there.

out_dir gets lengths.json / lengths.md / lengths.png (document length distribution of the
corpus and of the subset used), metrics.jsonl, checkpoints/, tokenizer/, DONE.json.
Rerun: skipped if DONE.json exists, else resumed from the last complete checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError, check, deep_merge, to_dict
from lmforge.device import resolve_device
from lmforge.io.atomic import save_figure, write_json, write_text
from lmforge.model import ModelConfig, Transformer
from lmforge.model.config import ContextOverrides
from lmforge.model.flops import flops_per_token, peak_flops
from lmforge.model.load import config_diff, model_config_of, tokenizer_dir_of
from lmforge.shards import TokenDataset, tokenizer_path
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import InitConfig, source_checkpoint
from lmforge.stagekit.tokendata import open_tokens
from lmforge.train.objectives.lm import LMObjective
from lmforge.train.seqlen import SeqWarmupConfig
from lmforge.train.trainer import TrainConfig, Trainer

INDEX_32K_TRAIN = {"seq_len": 32768, "optim": {"lr": 1e-5},
                   "schedule": {"kind": "cosine", "warmup_steps": 20, "min_ratio": 0.1}}
INDEX_32K_MODEL = {"rope_theta": 320000.0}


@dataclass
class LongCtxConfig:
    data: str = ""                        # token dataset folder
    out_dir: str = "runs/longctx"
    init: InitConfig = field(default_factory=InitConfig)       # init.from_checkpoint: required
    model: ContextOverrides = field(default_factory=ContextOverrides)
    train: TrainConfig = field(default_factory=TrainConfig)
    min_doc_tokens: int | None = None     # long-document subset; None = train.seq_len // 4, 0 = all
    domains: list[str] = field(default_factory=list)           # only these domains ([] = all)
    z_loss: float = 0.0
    packing: bool = True                  # false: one document per row, padded (Index-32K ablation)
    seq_warmup: SeqWarmupConfig = field(default_factory=SeqWarmupConfig)   # context-length warmup

    @classmethod
    def _base(cls, data):
        """Index-32K defaults under the user's own `train` and `model` keys (deep-merged)."""
        if isinstance(data, dict):
            for key, defaults in (("train", INDEX_32K_TRAIN), ("model", INDEX_32K_MODEL)):
                if data.get(key) is None or isinstance(data.get(key), dict):
                    data[key] = deep_merge(defaults, data.get(key) or {})
        return {}

    def __post_init__(self):
        check(bool(self.data), "data", "set the token dataset folder (e.g. --set data=runs/tokens)")
        check(bool(self.init.from_checkpoint), "init.from_checkpoint",
              "set the checkpoint (or run dir) to continue from")
        check(self.min_doc_tokens is None or self.min_doc_tokens >= 0, "min_doc_tokens", "must be >= 0")
        check(self.z_loss >= 0, "z_loss", "must be >= 0")
        check(self.seq_warmup.start < self.train.seq_len, "seq_warmup.start",
              f"must be below train.seq_len {self.train.seq_len} (0 = off)")

    @property
    def min_tokens(self) -> int:
        return self.train.seq_len // 4 if self.min_doc_tokens is None else self.min_doc_tokens


def slowest_wavelength(cfg: ModelConfig) -> float:
    """Positions per turn of the lowest rotary frequency: 2*pi*theta^((d-2)/d)."""
    d = cfg.rotary_dim
    return 2 * math.pi * cfg.rope_theta ** ((d - 2) / d)


def long_model_config(cfg: LongCtxConfig, source: ModelConfig) -> ModelConfig:
    """The checkpoint's config with the overrides; ConfigError if the model cannot use it."""
    over = cfg.model
    if over.max_seq_len is None:
        over = dataclasses.replace(over, max_seq_len=max(source.max_seq_len, cfg.train.seq_len))
    new = over.apply(source, prefix="model")
    if cfg.train.seq_len > new.max_seq_len:
        raise ConfigError(f"train.seq_len: {cfg.train.seq_len} exceeds model.max_seq_len {new.max_seq_len}")
    wave = slowest_wavelength(new)
    if wave < new.max_seq_len:
        raise ConfigError(f"model.rope_theta: {new.rope_theta:g} is too small for {new.max_seq_len} positions "
                          f"(its slowest rotary frequency repeats every {wave:.0f} positions; Index-32K used "
                          f"320000 for 32768)")
    return new


def doc_lengths(ds: TokenDataset) -> np.ndarray:
    """Token count of every document, in the dataset's global document order."""
    parts = [np.diff(s.starts) for s in ds.shards]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def long_docs(cfg: LongCtxConfig, ds: TokenDataset) -> tuple[np.ndarray, np.ndarray]:
    """(global indices of the documents to train on, all document lengths)."""
    lengths = doc_lengths(ds)
    keep = lengths >= cfg.min_tokens
    if cfg.domains:
        unknown = [d for d in cfg.domains if d not in ds.domain_names]
        if unknown:
            raise ConfigError(f"domains: {unknown} not in the data's domains {ds.domain_names}")
        wanted = [ds.domain_names.index(d) for d in cfg.domains]
        keep &= np.isin(ds.doc_domain, wanted)
    ids = np.flatnonzero(keep)
    if len(ids) == 0:
        longest = int(lengths.max()) if len(lengths) else 0
        raise ConfigError(f"min_doc_tokens: no train document has >= {cfg.min_tokens} tokens"
                          f"{' in domains ' + str(cfg.domains) if cfg.domains else ''} (longest: {longest}); "
                          f"lower min_doc_tokens")
    return ids, lengths


def length_report(lengths: np.ndarray, kept: np.ndarray, min_tokens: int, seq_len: int) -> dict:
    """Counts, tokens, quantiles and a power-of-two histogram, for all documents and the subset."""
    top = max(int(lengths.max()), 1)
    edges = [0] + [2 ** k for k in range(0, int(math.ceil(math.log2(top))) + 2)]
    def stats(x: np.ndarray) -> dict:
        q = np.percentile(x, [50, 90, 99]) if len(x) else [0, 0, 0]
        return {"docs": int(len(x)), "tokens": int(x.sum()), "mean": float(x.mean()) if len(x) else 0.0,
                "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": int(x.max()) if len(x) else 0,
                "histogram": np.histogram(x, bins=edges)[0].tolist(),
                "docs_at_least_seq_len": int((x >= seq_len).sum())}
    sub = lengths[kept]
    return {"min_doc_tokens": min_tokens, "seq_len": seq_len, "bin_edges": edges,
            "all": stats(lengths), "used": stats(sub),
            "used_rows_per_pass": int(sub.sum()) // seq_len}


def write_length_report(out: Path, report: dict) -> None:
    write_json(out / "lengths.json", report)
    e = report["bin_edges"]
    lines = [f"Documents of >= {report['min_doc_tokens']} tokens are used (seq_len {report['seq_len']}).", "",
             "| | docs | tokens | mean | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("all", "used"):
        s = report[name]
        lines.append(f"| {name} | {s['docs']} | {s['tokens']} | {s['mean']:.0f} | {s['p50']:.0f} | {s['p90']:.0f} "
                     f"| {s['p99']:.0f} | {s['max']} |")
    lines += ["", "| length bin | all docs | used docs |", "|---|---:|---:|"]
    for i, (a, u) in enumerate(zip(report["all"]["histogram"], report["used"]["histogram"])):
        if a:
            lines.append(f"| [{e[i]}, {e[i + 1]}) | {a} | {u} |")
    write_text(out / "lengths.md", "\n".join(lines) + "\n")
    plot_lengths(out / "lengths.png", report)


def plot_lengths(path: Path, report: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = report["bin_edges"]
    labels = [f"<{e[i + 1]}" for i in range(len(e) - 1)]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5, len(labels) * 0.35), 3.2))
    ax.bar(x - 0.2, report["all"]["histogram"], 0.4, label="all documents")
    ax.bar(x + 0.2, report["used"]["histogram"], 0.4, label=f">= {report['min_doc_tokens']} tokens (used)")
    ax.set_xticks(x, labels, rotation=60, fontsize=7)
    ax.set_yscale("symlog")
    ax.set_xlabel("document length (tokens)")
    ax.set_ylabel("documents")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def data_tokenizer(ds: TokenDataset) -> Path | None:
    """The tokenizer folder recorded in the token dataset's meta.json, if any."""
    tok = tokenizer_path(ds.meta, ds.folder)
    return (tok.parent if tok.suffix == ".json" else tok) if tok is not None else None


def validate(cfg: LongCtxConfig) -> tuple[Path, ModelConfig, TokenDataset]:
    """Source checkpoint, new model config and data, all checked before any work."""
    src, source_cfg = source_checkpoint(cfg.init.from_checkpoint, load_optimizer=cfg.init.load_optimizer)
    mcfg = long_model_config(cfg, source_cfg)
    ds = open_tokens(cfg.data, "train")
    if ds.vocab_size > mcfg.vocab_size:
        raise ConfigError(f"data: vocabulary {ds.vocab_size} exceeds the model's {mcfg.vocab_size}")
    return src, mcfg, ds


def build(cfg: LongCtxConfig, progress: bool = True) -> tuple[Trainer, Path, dict]:
    src, mcfg, ds = validate(cfg)
    ids, lengths = long_docs(cfg, ds)
    report = length_report(lengths, ids, cfg.min_tokens, cfg.train.seq_len)
    train = cfg.train
    torch.manual_seed(train.seed)
    model = Transformer(mcfg)
    objective = LMObjective(cfg.data, train.seq_len, train.micro_batch_size, train.seed, z_loss=cfg.z_loss,
                            eval_batches=train.eval_batches, doc_subset=ids, packing=cfg.packing,
                            seq_warmup=cfg.seq_warmup)
    run_config = {**to_dict(cfg), "model_overrides": to_dict(cfg.model), "model": to_dict(mcfg)}
    trainer = Trainer(model, objective, train, cfg.out_dir, run_config=run_config,
                      flops_per_token=flops_per_token(mcfg, train.seq_len),
                      peak_flops=peak_flops(resolve_device(train.device)), progress=progress)
    return trainer, src, report


MAX_WINDOWS = 48   # held-out windows scored for the before/after effect (two forward passes each)


def long_context_effect(cfg: LongCtxConfig, src: Path, model: Transformer) -> dict | None:
    """Held-out windows of the new length (val documents longer than the source's window): the loss per
    token at the positions past the source's max_seq_len, under the source model run there
    as it is (plain RoPE, its own base: the un-extended model) and under the trained model.
    None when the val split has fewer than 2 such documents."""
    from lmforge.eval.effect import mean_target_nll, paired_effect
    from lmforge.model.load import load_weights

    old = model_config_of(src)
    try:
        val = TokenDataset(cfg.data, "val")
    except (FileNotFoundError, ValueError):
        return None
    new_len = model.cfg.max_seq_len
    # every full window of new_len tokens of the val documents (the one window of a shorter
    # document that still reaches past the old window), at most MAX_WINDOWS spread evenly
    docs = []
    for i in range(val.n_docs):
        d = np.asarray(val.doc(i), dtype=np.int64)
        starts = range(0, max(len(d) - new_len, 0) + 1, new_len)
        docs += [d[a:a + new_len] for a in starts if len(d[a:a + new_len]) > old.max_seq_len + 16]
    if len(docs) < 2:
        return None
    docs = [docs[k] for k in np.linspace(0, len(docs) - 1, min(len(docs), MAX_WINDOWS)).round().astype(int)]
    before_model = Transformer(dataclasses.replace(old, max_seq_len=new_len))
    load_weights(src, before_model)
    before_model.to(next(model.parameters()).device)
    items = [(d, np.arange(len(d)) >= old.max_seq_len) for d in docs]
    return paired_effect(f"held-out loss past the old window (positions {old.max_seq_len}-{new_len}, nats/token)",
                         mean_target_nll(before_model, items), mean_target_nll(model, items), False,
                         baseline="source model, plain RoPE extrapolated")


def body(cfg: LongCtxConfig, progress: bool = True) -> dict:
    out = Path(cfg.out_dir)
    trainer, src, report = build(cfg, progress)
    main = trainer.dist.is_main
    latest = ckpt.latest(trainer.ckpt_dir)
    if latest is not None:
        diff = config_diff(trainer.model.cfg, model_config_of(latest))
        if diff:
            raise ConfigError(f"model: {', '.join(diff)}: differs from {latest}, which this out_dir would "
                              f"resume; use a new out_dir")
        latest = trainer.resume_latest()
    if latest is not None:
        if main:
            print(f"resuming from {latest} (step {trainer.step})")
    else:
        trainer.init_from(src, cfg.init.load_optimizer)
        if main:
            m = trainer.model.cfg
            print(f"initialised from {src}: rope_theta {m.rope_theta:g}, max_seq_len {m.max_seq_len}, "
                  f"{report['used']['docs']} documents of >= {cfg.min_tokens} tokens")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_length_report(out, report)
        ckpt.copy_tokenizer(tokenizer_dir_of(src) or data_tokenizer(trainer.objective.train_set), out)
        write_json(out / "config.json", trainer.run_config)
    summary = trainer.fit()
    m = trainer.model.cfg
    summary = {**summary, "rope_theta": m.rope_theta, "max_seq_len": m.max_seq_len, "source": str(src),
               "long_docs": {k: report["used"][k] for k in ("docs", "tokens", "p50", "max")}}
    if main:
        effect = long_context_effect(cfg, src, trainer.model)
        if effect:
            summary["effect"] = effect
    return summary


def recipe_check(checker, st, cfg: LongCtxConfig) -> Facts:
    """The long model (the source's with the new RoPE and length) against its data."""
    source = checker.model_of(cfg.init.from_checkpoint)
    data = checker.facts_of(cfg.data)
    if source is None:
        return Facts()
    try:
        model = long_model_config(cfg, source)
    except ConfigError as e:
        checker.problem_from(st, e)
        return Facts()
    have = data.domains.get("")
    for d in sorted(set(cfg.domains) - (have or set(cfg.domains))):
        checker.problem(st, "domains", f"{d!r} is not in the token data (domains: {', '.join(sorted(have))})")
    checker.check_vocab(st, model, data, "data")
    return Facts(model=model)


STAGE = Stage(kind="longctx", config=LongCtxConfig, body=body, inputs=("data",),
              help="continued pretraining at a longer context with a new RoPE base (Index-1.9B-32K defaults; "
                   "resumes automatically)",
              example="train.seq_len=4096", outputs=("checkpoints", "tokenizer", "metrics.jsonl", DONE),
              distributed=True, check=recipe_check)
run = STAGE.run
