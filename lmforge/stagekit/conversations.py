"""Conversation stages (SFT, C-RLFT): conversations -> packed rows -> an SFT-style objective,
with optional pretraining text mixed in (Index-1.9B: 4 pretraining : 6 response tokens)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmforge.config import ConfigError, check
from lmforge.device import resolve_device
from lmforge.io.documents import ErrorSink
from lmforge.stagekit.runner import data_account, reject_sink, start_fresh, steps_for
from lmforge.stagekit.source import Source, load_source
from lmforge.stagekit.teacher import attach_teacher
from lmforge.stagekit.tokendata import open_tokens

# Train defaults of conversation stages (Yi: constant 1e-5), deep-merged under the user's keys.
CHAT_TRAIN = {"optim": {"lr": 1e-5}, "schedule": {"kind": "constant", "warmup_steps": 0}, "ckpt_every": 200}


@dataclass
class MixConfig:
    """Pretraining text mixed into SFT (Index-1.9B: 4 pretraining : 6 response tokens = share 0.4)."""
    data: str = ""          # token dataset folder; "" = no mixing
    share: float = 0.4      # pretraining share of all trained (target) tokens

    def __post_init__(self):
        check(0.0 <= self.share < 1.0, "share", "must be in [0, 1)")


@dataclass
class LongInstructConfig:
    """Long instructions mixed into SFT at a set share of conversations (Index-1.9B-32K: long
    SFT used 30K long + 50K general instructions; one of its failed attempts used 1 per mille
    of long instructions: `share: 0.001`)."""
    data: list[str] = field(default_factory=list)   # conversation jsonl files of long instructions
    share: float | None = None   # long / all conversations; None = every long conversation once

    def __post_init__(self):
        check(self.share is None or 0.0 < self.share < 1.0, "share", "must be in (0, 1), or null for all")


def mix_long(general: list, long: list, share: float | None, seed: int) -> tuple[list, dict]:
    """general + long conversations so that long ones are `share` of the whole (by count):
    n_long = round(share / (1 - share) * n_general), drawn without replacement while the long
    set lasts, then cycled again (repeats are counted). Deterministic in `seed`."""
    if not long:
        return general, {"available": 0, "used": 0, "repeats": 0, "share": 0.0}
    n = len(long) if share is None else max(1, round(share / (1 - share) * len(general)))
    rng = np.random.default_rng([seed, 17])
    order = np.concatenate([rng.permutation(len(long)) for _ in range(-(-n // len(long)))])[:n]
    chosen = [long[i] for i in order.tolist()]
    lengths = [len(c.ids) for c in chosen]
    return general + chosen, {"available": len(long), "used": n, "repeats": max(0, n - len(long)),
                              "share": n / (n + len(general)), "target_share": share,
                              "mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths))}


def _mix_loader(cfg, src: Source, T: int):
    from lmforge.train.loader import train_loader

    ds = open_tokens(cfg.mix.data, "train", "mix.data")
    if ds.n_docs == 0 or ds.vocab_size > src.model_cfg.vocab_size:
        raise ConfigError(f"mix.data: {cfg.mix.data} is empty or its vocabulary exceeds the model's")
    return ds, train_loader(ds, T, 1, cfg.train.seed + 1)


def build_conversation_objective(cfg, files: list[str], src: Source, errors: ErrorSink, progress: bool,
                                 system_prompt: str | None = None, classes: dict[str, int] | None = None,
                                 class_weights: list[float] | None = None, objective_cls=None,
                                 load_kwargs: dict | None = None, stage: str = "sft", **objective_kwargs):
    """(objective, stats, steps) for conversation `files`. `cfg` gives train, epochs, max_steps,
    max_turns, mix and val_fraction (and, where it has them, long and packing); load_kwargs go to sft_data.load_conversations (C-RLFT:
    path_classes, tag_format)."""
    from lmforge.align import sft_data
    from lmforge.train.objectives.sft import SFTObjective

    T = cfg.train.seq_len
    if T > src.model_cfg.max_seq_len:
        raise ConfigError(f"train.seq_len: {T} exceeds the model's max_seq_len {src.model_cfg.max_seq_len}")
    try:
        convs, stats = sft_data.load_conversations(files, src.tok, T, cfg.max_turns, errors, system_prompt,
                                                   classes, progress, eos_id=src.info.get("eos_id"), chat=src.chat,
                                                   max_record_bytes=getattr(cfg, "max_record_bytes",
                                                                            sft_data.MAX_RECORD_BYTES),
                                                   **(load_kwargs or {}))
    except FileNotFoundError as e:
        raise ConfigError(f"data: {e}") from None
    account = data_account(stage, stats, errors, files)   # DataError when every record was rejected
    long_cfg, long_stats = getattr(cfg, "long", None), {}
    if long_cfg is not None and long_cfg.data:
        try:
            long, long_stats["conversations"] = sft_data.load_conversations(
                long_cfg.data, src.tok, T, cfg.max_turns, errors, system_prompt, classes, progress,
                chat=src.chat, **(load_kwargs or {}))
        except FileNotFoundError as e:
            raise ConfigError(f"long.data: {e}") from None
        if not long:
            raise ConfigError(f"long.data: no usable conversation in {long_cfg.data} within train.seq_len {T} "
                              f"(see stats: {long_stats['conversations']})")
        convs, mixed = mix_long(convs, long, long_cfg.share, cfg.train.seed)
        long_stats.update(mixed)
    train_convs, val_convs = sft_data.split_val(convs, cfg.val_fraction, cfg.train.seed)
    if not train_convs:
        raise ConfigError(f"data: no usable conversations in {files} (see stats: {stats})")
    packing = getattr(cfg, "packing", True)    # validation stays packed (the same rows either way)
    rows = sft_data.plan_rows(train_convs, T, cfg.epochs, cfg.train.seed, packing)
    val_rows = sft_data.plan_rows(val_convs, T, 1, cfg.train.seed) if val_convs else []
    mix_loader, fp = None, ""
    n_rows = len(rows)
    if cfg.mix.data and cfg.mix.share > 0:
        ds, mix_loader = _mix_loader(cfg, src, T)
        fp = ds.fingerprint()
        # plan: a pretraining row has ~T targets less one per document boundary
        per_row = max(T * (1 - ds.n_docs / max(ds.n_tokens, 1)) - 1, 1.0)
        sft_targets = sum(sft_data.n_targets(train_convs, r) for r in rows)
        n_rows += int(cfg.mix.share / (1 - cfg.mix.share) * sft_targets / per_row * 1.02) + 1
    cls = objective_cls or SFTObjective
    objective = cls(train_convs, rows, T, cfg.train.micro_batch_size, src.info["pad_id"], val_convs, val_rows,
                    cfg.train.eval_batches, mix_loader, cfg.mix.share, fp, class_weights, **objective_kwargs)
    steps = steps_for(-(-n_rows // cfg.train.micro_batch_size), cfg.train, cfg.max_steps)
    stats = {"conversations": stats, "train_conversations": len(train_convs), "val_conversations": len(val_convs),
             "epochs": cfg.epochs, "rows": len(rows), "packing": packing, "planned_steps": steps, "account": account,
             "row_fill": float(sum(len(train_convs[i].ids) for r in rows for i in r) / max(len(rows) * T, 1))}
    if long_stats:
        stats["long"] = long_stats
    return objective, stats, steps


def build_sft_trainer(cfg, progress: bool):
    """The SFT trainer of `cfg` (the `lmforge sft` config's keys: data, out_dir, init, tokenizer,
    system_prompt, neftune_alpha and those of build_conversation_objective): the source
    checkpoint, the conversation objective, a fresh model resumed or initialised from the
    source. `lmforge sft` and each point of the task-mix grid (`lmforge sftgrid`) train this way."""
    src = load_source(cfg.init, cfg.tokenizer, own_format=True)
    with reject_sink(cfg.out_dir) as errors:
        objective, stats, steps = build_conversation_objective(cfg, cfg.data, src, errors, progress,
                                                               cfg.system_prompt or None)
    if getattr(cfg, "distill", None) is not None:
        objective = attach_teacher(objective, cfg.distill, src.model_cfg, resolve_device(cfg.train.device),
                                   src.tokenizer_dir)
    return start_fresh(cfg, src, objective, steps, stats, progress)
