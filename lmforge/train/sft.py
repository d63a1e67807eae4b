"""`lmforge sft`: supervised fine-tuning on ChatML conversations (Yi, Index-1.9B, StableLM 2).

    lmforge sft --set init.from_checkpoint=runs/pretrain --set data=[corpus/sft.jsonl] --set out_dir=runs/sft

Defaults follow the reports: constant LR 1e-5 (Yi), 2 epochs (2-3 in the reports; the
step count is computed from the epochs before training starts), conversations over 8
turns dropped (StableLM 2), optional NEFTune (Yi: alpha 5 for 6B, 45 for 34B), optional
pretraining text mixed in at 4:6 pretraining:response tokens (`mix.share: 0.4`, Index)
and the pretraining optimizer state loaded with the weights (`init.load_optimizer`, Index).

Like pretraining: a rerun of a finished out_dir skips (DONE.json), an interrupted one
resumes exactly from its last checkpoint; a new out_dir starts from `init.from_checkpoint`.
out_dir gets stats.json (every input line accounted for), rejects.jsonl (malformed lines
with file and line), metrics.jsonl, mixture.json (realised pretraining share), tokenizer/.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.config import ConfigError, check, to_dict
from lmforge.data.documents import ErrorSink
from lmforge.model import Transformer
from lmforge.model.load import copy_tokenizer, model_config_of, resolve_checkpoint, tokenizer_dir_of
from lmforge.train import checkpoint as ckpt
from lmforge.train.pretrain import InitConfig
from lmforge.train.trainer import TrainConfig, Trainer

# Defaults under `train:` per stage. from_dict only merges a dataclass's `_base` one level
# deep, so `stage_defaults` deep-merges them into the given data before it is read.
SFT_TRAIN = {"optim": {"lr": 1e-5}, "schedule": {"kind": "constant", "warmup_steps": 0}, "ckpt_every": 200}


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def stage_defaults(data: dict, train_defaults: dict) -> dict:
    """For `_base`: put the stage's train defaults under the user's keys (in place: from_dict
    merges `{**_base(data), **data}`, so data's own `train` must already hold them)."""
    if isinstance(data, dict) and (data.get("train") is None or isinstance(data.get("train"), dict)):
        data["train"] = deep_merge(train_defaults, data.get("train") or {})
    return {}


@dataclass
class MixConfig:
    """Pretraining text mixed into SFT (Index-1.9B: 4 pretraining : 6 response tokens = share 0.4)."""
    data: str = ""          # token dataset folder; "" = no mixing
    share: float = 0.4      # pretraining share of all trained (target) tokens

    def __post_init__(self):
        check(0.0 <= self.share < 1.0, "share", "must be in [0, 1)")


@dataclass
class SFTConfig:
    data: list[str] = field(default_factory=list)   # conversation jsonl files ({"messages": [...]})
    out_dir: str = "runs/sft"
    init: InitConfig = field(default_factory=InitConfig)
    tokenizer: str = ""            # tokenizer folder; "" = the one beside init.from_checkpoint's run
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: int = 2
    max_steps: int = 0             # > 0: stop after this many steps (smoke tests); 0 = all epochs
    max_turns: int = 8             # drop conversations with more assistant turns (0 = keep all)
    system_prompt: str = ""        # added to conversations that have no system message
    neftune_alpha: float = 0.0     # 0 = off; Yi: 5 (6B), 45 (34B)
    mix: MixConfig = field(default_factory=MixConfig)
    val_fraction: float = 0.0      # conversations held out for val/sft_loss

    @classmethod
    def _base(cls, data):
        return stage_defaults(data, SFT_TRAIN)

    def __post_init__(self):
        check(len(self.data) > 0, "data", "give at least one conversation jsonl file")
        check(bool(self.init.from_checkpoint), "init.from_checkpoint", "SFT starts from a pretrained checkpoint")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = all epochs)")
        check(self.max_turns >= 0, "max_turns", "must be >= 0 (0 = no limit)")
        check(self.neftune_alpha >= 0, "neftune_alpha", "must be >= 0")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check_steps_unset(self.train)


def check_steps_unset(train: TrainConfig) -> None:
    check(train.steps == TrainConfig().steps, "train.steps",
          "this stage runs for `epochs` (the steps are computed from the data); use max_steps to stop early")


# -- shared by the sft / dpo / selfknow runners ---------------------------------------------

@dataclass
class Source:
    step_dir: Path
    model_cfg: object
    tokenizer_dir: Path
    tok: object
    info: dict


def reject_sink(out_dir: str) -> ErrorSink:
    """rejects.jsonl of this run, rewritten each time the data is read (no duplicates on resume)."""
    path = Path(out_dir) / "rejects.jsonl"
    path.unlink(missing_ok=True)
    return ErrorSink(path)


def load_source(init: InitConfig, tokenizer: str) -> Source:
    """The checkpoint to start from, its model config and its tokenizer; ConfigError if unusable."""
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info

    try:
        step_dir = resolve_checkpoint(init.from_checkpoint)
        model_cfg = model_config_of(step_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"init.from_checkpoint: {e}") from None
    tok_dir = Path(tokenizer) if tokenizer else tokenizer_dir_of(step_dir)
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        raise ConfigError(f"tokenizer: no tokenizer folder given and none beside {step_dir} (set tokenizer=DIR)")
    tok, info = load_tokenizer(tok_dir), tokenizer_info(tok_dir)
    if info["vocab_size"] > model_cfg.vocab_size:
        raise ConfigError(f"tokenizer: {tok_dir} has {info['vocab_size']} ids, the model only {model_cfg.vocab_size}")
    for t in ("<|im_start|>", "<|im_end|>"):
        if tok.token_to_id(t) is None:
            raise ConfigError(f"tokenizer: {tok_dir} has no ChatML token {t}")
    if info.get("pad_id") is None:
        raise ConfigError(f"tokenizer: {tok_dir} has no pad token")
    return Source(step_dir, model_cfg, tok_dir, tok, info)


def steps_for(n_micro_batches: int, train: TrainConfig, max_steps: int) -> int:
    steps = max(1, -(-n_micro_batches // train.grad_accum))
    return min(steps, max_steps) if max_steps else steps


def start_trainer(cfg, src: Source, objective, train: TrainConfig, stats: dict, progress: bool,
                  model: torch.nn.Module | None = None) -> Trainer:
    """Trainer on a fresh model; resumed from out_dir's last checkpoint, else initialised from
    the source (weights, and the optimizer state if init.load_optimizer)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    torch.manual_seed(train.seed)
    model = model if model is not None else Transformer(src.model_cfg)
    trainer = Trainer(model, objective, train, out, run_config={**to_dict(cfg), "model": to_dict(src.model_cfg)},
                      progress=progress)
    latest = ckpt.latest(trainer.ckpt_dir)
    if latest is not None:
        trainer.resume(latest)
        if progress:
            print(f"resuming from {latest} (step {trainer.step})")
    else:
        # the loaded optimizer state brings its own hyperparameters; keep this stage's
        mine = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]
        trainer.init_from(src.step_dir, cfg.init.load_optimizer)
        for g, h in zip(trainer.optimizer.param_groups, mine):
            g.update(h)
    copy_tokenizer(src.tokenizer_dir, out)
    return trainer


def finish(cfg, trainer: Trainer) -> dict:
    summary = trainer.fit()
    (Path(cfg.out_dir) / "DONE.json").write_text(json.dumps(summary, indent=1))
    return summary


def done_summary(out_dir: str) -> dict | None:
    done = Path(out_dir) / "DONE.json"
    return {**json.loads(done.read_text()), "skipped": True} if done.exists() else None


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(model)
    return ref.eval().requires_grad_(False)


# -- SFT ------------------------------------------------------------------------------------

def build_objective(cfg: SFTConfig, src: Source, errors: ErrorSink, progress: bool,
                    classes: dict[str, int] | None = None, class_weights: list[float] | None = None,
                    objective_cls=None, load_kwargs: dict | None = None, **objective_kwargs):
    """(objective, stats, steps) for SFT-style stages (SFT, C-RLFT); load_kwargs go to
    sft_data.load_conversations (C-RLFT: path_classes, tag_format)."""
    from lmforge.align import sft_data
    from lmforge.shards import TokenDataset
    from lmforge.train.loader import train_loader
    from lmforge.train.objectives.sft import SFTObjective

    T = cfg.train.seq_len
    if T > src.model_cfg.max_seq_len:
        raise ConfigError(f"train.seq_len: {T} exceeds the model's max_seq_len {src.model_cfg.max_seq_len}")
    try:
        convs, stats = sft_data.load_conversations(cfg.data, src.tok, T, cfg.max_turns, errors,
                                                   cfg.system_prompt or None, classes, progress,
                                                   **(load_kwargs or {}))
    except FileNotFoundError as e:
        raise ConfigError(f"data: {e}") from None
    train_convs, val_convs = sft_data.split_val(convs, cfg.val_fraction, cfg.train.seed)
    if not train_convs:
        raise ConfigError(f"data: no usable conversations in {cfg.data} (see stats: {stats})")
    rows = sft_data.plan_rows(train_convs, T, cfg.epochs, cfg.train.seed)
    val_rows = sft_data.plan_rows(val_convs, T, 1, cfg.train.seed) if val_convs else []
    mix_loader, fp = None, ""
    n_rows = len(rows)
    if cfg.mix.data and cfg.mix.share > 0:
        try:
            ds = TokenDataset(cfg.mix.data, "train")
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"mix.data: {e}") from None
        if ds.n_docs == 0 or ds.vocab_size > src.model_cfg.vocab_size:
            raise ConfigError(f"mix.data: {cfg.mix.data} is empty or its vocabulary exceeds the model's")
        mix_loader, fp = train_loader(ds, T, 1, cfg.train.seed + 1), ds.fingerprint()
        # plan: a pretraining row has ~T targets less one per document boundary
        per_row = max(T * (1 - ds.n_docs / max(ds.n_tokens, 1)) - 1, 1.0)
        sft_targets = sum(sft_data.n_targets(train_convs, r) for r in rows)
        n_rows += int(cfg.mix.share / (1 - cfg.mix.share) * sft_targets / per_row * 1.02) + 1
    cls = objective_cls or SFTObjective
    objective = cls(train_convs, rows, T, cfg.train.micro_batch_size, src.info["pad_id"], val_convs, val_rows,
                    cfg.train.eval_batches, mix_loader, cfg.mix.share, fp, class_weights, **objective_kwargs)
    steps = steps_for(-(-n_rows // cfg.train.micro_batch_size), cfg.train, cfg.max_steps)
    stats = {"conversations": stats, "train_conversations": len(train_convs), "val_conversations": len(val_convs),
             "epochs": cfg.epochs, "rows": len(rows), "planned_steps": steps,
             "row_fill": float(sum(len(train_convs[i].ids) for r in rows for i in r) / max(len(rows) * T, 1))}
    return objective, stats, steps


def build(cfg: SFTConfig, progress: bool = True) -> Trainer:
    src = load_source(cfg.init, cfg.tokenizer)
    errors = reject_sink(cfg.out_dir)
    objective, stats, steps = build_objective(cfg, src, errors, progress)
    errors.close()
    return start_fresh(cfg, src, objective, steps, stats, progress)


def start_fresh(cfg, src: Source, objective, steps: int, stats: dict, progress: bool) -> Trainer:
    """A new model of the source's shape (weights loaded by start_trainer), NEFTune attached
    when cfg.neftune_alpha > 0, trained for `steps`."""
    import dataclasses

    from lmforge.train.objectives.sft import NEFTune

    train = dataclasses.replace(cfg.train, steps=steps)
    torch.manual_seed(train.seed)
    model = Transformer(src.model_cfg)
    if cfg.neftune_alpha > 0:
        NEFTune(cfg.neftune_alpha, src.info["pad_id"]).attach(model)
    return start_trainer(cfg, src, objective, train, stats, progress, model)


def run(cfg: SFTConfig, progress: bool = True) -> dict:
    skipped = done_summary(cfg.out_dir)
    if skipped:
        return skipped
    return finish(cfg, build(cfg, progress))
