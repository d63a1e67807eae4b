"""What every training stage does the same way: resume an interrupted out_dir from its last
complete checkpoint, else start from the source; train; the summary. (Skipping a finished
out_dir, the lock and DONE.json are the contract of lmforge.stagekit.stage, which wraps every
stage; `run_trainer_stage` applies it to a part of a stage, e.g. a grid point.)"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from lmforge import checkpoint as ckpt
from lmforge.config import check, deep_merge, to_dict
from lmforge.io.account import Account, first_rejects
from lmforge.io.atomic import write_json
from lmforge.io.documents import ErrorSink
from lmforge.model import Transformer
from lmforge.model.lora import attach_lora
from lmforge.stagekit.source import Source
from lmforge.stagekit.stage import done_summary, write_done
from lmforge.train.callbacks import InputAccount
from lmforge.train.trainer import TrainConfig, Trainer

def stage_defaults(data: dict, train_defaults: dict) -> dict:
    """For a config's `_base`: put the stage's train defaults under the user's keys (in place:
    from_dict merges `{**_base(data), **data}`, so data's own `train` must already hold them)."""
    if isinstance(data, dict) and (data.get("train") is None or isinstance(data.get("train"), dict)):
        data["train"] = deep_merge(train_defaults, data.get("train") or {})
    return {}


def check_steps_unset(train: TrainConfig) -> None:
    check(train.steps == TrainConfig().steps, "train.steps",
          "this stage runs for `epochs` (the steps are computed from the data); use max_steps to stop early")


def reject_sink(out_dir: str | Path) -> ErrorSink:
    """rejects.jsonl of this run, rewritten each time the data is read (no duplicates on resume)."""
    path = Path(out_dir) / "rejects.jsonl"
    path.unlink(missing_ok=True)
    return ErrorSink(path)


def data_account(stage: str, counts: dict, errors: ErrorSink, files) -> str:
    """The stage's one-line account of its input records (rejects file put in place first);
    DataError with the count, reasons and first rejects when nothing was kept."""
    errors.close()
    acc = Account.from_stats(stage, counts, errors.path)
    acc.require_kept(first_rejects(errors.records), what=", ".join(map(str, files)))
    return acc.line()


def steps_for(n_micro_batches: int, train: TrainConfig, max_steps: int) -> int:
    steps = max(1, -(-n_micro_batches // train.grad_accum))
    return min(steps, max_steps) if max_steps else steps


def new_model(cfg, src: Source, init_model: Callable[[torch.nn.Module], None] | None = None) -> Transformer:
    """A model of the source's shape (weights are loaded by start_trainer, or here by
    `init_model(model)` before any adapter), with LoRA adapters attached when the stage
    config has `lora` (only the adapters train)."""
    model = Transformer(src.model_cfg)
    if init_model is not None:
        init_model(model)
    lora = getattr(cfg, "lora", None)
    return attach_lora(model, lora) if lora is not None else model


def start_trainer(cfg, src: Source, objective, train: TrainConfig, stats: dict, progress: bool,
                  model: torch.nn.Module | None = None, initialised: bool = False) -> Trainer:
    """Trainer on a fresh model; resumed from out_dir's last checkpoint, else initialised from
    the source (weights, and the optimizer state if cfg.init.load_optimizer), unless
    `initialised`: `model` already holds the source's weights (e.g. with new vocabulary rows)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "stats.json", stats)
    write_json(out / "config.json", to_dict(cfg))
    torch.manual_seed(train.seed)
    model = model if model is not None else new_model(cfg, src)
    trainer = Trainer(model, objective, train, out, run_config={**to_dict(cfg), "model": to_dict(src.model_cfg)},
                      progress=progress, callbacks=[InputAccount(stats.get("account"))])
    latest = trainer.resume_latest()
    if latest is not None:
        if progress:
            print(f"resuming from {latest} (step {trainer.step})")
    elif not initialised:
        # the loaded optimizer state brings its own hyperparameters; keep this stage's
        mine = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]
        trainer.init_from(src.step_dir, cfg.init.load_optimizer)
        for g, h in zip(trainer.optimizer.param_groups, mine):
            g.update(h)
    ckpt.copy_tokenizer(src.tokenizer_dir, out)
    return trainer


def start_fresh(cfg, src: Source, objective, steps: int, stats: dict, progress: bool,
                init_model: Callable[[torch.nn.Module], None] | None = None) -> Trainer:
    """A new model of the source's shape (weights loaded by start_trainer, or by
    `init_model(model)` when given: e.g. a source with a grown vocabulary; LoRA adapters when
    cfg.lora), NEFTune attached when cfg.neftune_alpha > 0, trained for `steps`."""
    from lmforge.train.objectives.sft import NEFTune

    train = dataclasses.replace(cfg.train, steps=steps)
    torch.manual_seed(train.seed)
    model = new_model(cfg, src, init_model)
    if getattr(cfg, "neftune_alpha", 0) > 0:
        NEFTune(cfg.neftune_alpha, src.info["pad_id"]).attach(model)
    return start_trainer(cfg, src, objective, train, stats, progress, model, initialised=init_model is not None)


def trained(trainer: Trainer, cfg=None, effect: Callable | None = None) -> dict:
    """Train to the end; the summary (with the input account, from start_trainer's callback)
    and, with `effect(cfg, trainer)`, the stage's before/after dict
    (lmforge.eval.effect.paired_effect) under "effect", computed before DONE.json is written so
    a finished stage always has it."""
    summary = trainer.fit()
    if effect is not None:
        result = effect(cfg, trainer)
        if result:
            summary["effect"] = result
    return summary


def finish(cfg, trainer: Trainer, effect: Callable | None = None) -> dict:
    return write_done(cfg.out_dir, trained(trainer, cfg, effect))


def trainer_body(build, effect: Callable | None = None):
    """The body of a stage whose `build(cfg, progress)` returns its Trainer (resumed if
    interrupted): train it to the end and measure `effect` (lmforge.stagekit.stage.Stage.run adds
    skip and DONE.json)."""
    return lambda cfg, progress=True: trained(build(cfg, progress), cfg, effect)


def run_trainer_stage(cfg, build, progress: bool, effect: Callable | None = None) -> dict:
    """A part of a stage trained on its own (a grid point, a reference model): skip when
    finished, else build (resuming if interrupted), train, measure `effect`, write DONE.json."""
    return done_summary(cfg.out_dir) or finish(cfg, build(cfg, progress), effect)
