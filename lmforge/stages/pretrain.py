"""`lmforge pretrain`: next-token training on token shards, resumable at any moment.

Two ways to start from existing weights, kept apart on purpose (users of other tools get
bitten by one silently acting as the other):
- resume: the out_dir already holds a complete checkpoint of THIS run; weights,
  optimizer, schedule position, loader position and RNG are all restored, and the data
  fingerprint must match.
- init.from_checkpoint: a new run (fresh schedule, fresh loader) that starts from another
  run's weights, optionally with its optimizer state (`init.load_optimizer`). Leave `model`
  unset to take the checkpoint's architecture (e.g. after `lmforge grow`). When the new
  data's tokenizer is larger (an extended vocabulary, Skywork), the embedding and head get
  new rows initialised to the mean of the existing rows; old token ids keep their rows.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError, check, to_dict
from lmforge.device import resolve_device
from lmforge.io.atomic import write_json
from lmforge.model import ModelConfig, Transformer
from lmforge.model.flops import flops_per_token, peak_flops
from lmforge.model.load import config_diff, model_config_of, open_source, resolve_checkpoint
from lmforge.shards import TokenDataset, tokenizer_path
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.lm_effects import pretrain_effect
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import InitConfig, source_checkpoint
from lmforge.stagekit.teacher import attach_teacher
from lmforge.stagekit.tokendata import open_tokens
from lmforge.train import mixture
from lmforge.train.mixture import MixtureConfig, StageConfig
from lmforge.train.objectives.distill import DistillConfig
from lmforge.train.objectives.lm import LMObjective
from lmforge.train.schedules import ScheduleConfig
from lmforge.train.trainer import TrainConfig, Trainer


@dataclass
class PretrainConfig:
    data: str = ""                        # token dataset folder (lmforge tokenizer encode output) or URL (s3://...)
    out_dir: str = "runs/pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: InitConfig = field(default_factory=InitConfig)
    z_loss: float = 0.0                   # PaLM z-loss coefficient (e.g. 1e-4); StableLM 2 found it unhelpful
    mixture: MixtureConfig | None = None  # one-stage domain mixture (None: shuffled passes over all documents)
    stages: list[StageConfig] = field(default_factory=list)  # curriculum: each stage its steps, mixture, LR
    distill: DistillConfig | None = None  # logit distillation from a teacher (same tokenizer), mixed with the LM loss

    def __post_init__(self):
        check(bool(self.data), "data", "set the token dataset folder (e.g. --set data=runs/tokens)")
        check(self.z_loss >= 0, "z_loss", "must be >= 0")
        if not (self.init.from_checkpoint and self.model == ModelConfig()):   # else: the source's length decides
            check(self.train.seq_len <= self.model.max_seq_len, "train.seq_len",
                  f"{self.train.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}")
        if self.stages:
            check(self.mixture is None, "mixture", "with stages, give each stage its own mixture")
            check(self.train.schedule == ScheduleConfig(), "train.schedule",
                  "with stages, give each stage its own schedule (stages[i].schedule)")
            total = sum(s.steps for s in self.stages)
            check(self.train.steps in (total, TrainConfig().steps), "train.steps",
                  f"with stages the run is their total ({total} steps); leave train.steps unset")
            names = [s.name for s in self.stages if s.name]
            check(len(names) == len(set(names)), "stages", "stage names must be unique")

    def effective_stages(self) -> list[StageConfig]:
        if self.stages:
            return self.stages
        if self.mixture is not None:
            return [StageConfig(name="main", steps=self.train.steps, mixture=self.mixture)]
        return []

    def effective_train(self) -> TrainConfig:
        """TrainConfig with the stages' schedules joined into one multistage schedule."""
        if not self.stages:
            return self.train
        sched = ScheduleConfig(kind="multistage", stages=[
            dataclasses.replace(s.schedule, steps=s.steps) for s in self.stages])
        return dataclasses.replace(self.train, schedule=sched, steps=sched.total_steps(0))


def validate_data(cfg: PretrainConfig) -> TokenDataset:
    ds = open_tokens(cfg.data, "train")
    if ds.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} is smaller than the data's vocabulary "
                          f"{ds.vocab_size} ({cfg.data}/meta.json)")
    counts = mixture.domain_token_counts(ds)
    for i, st in enumerate(cfg.effective_stages()):
        mixture.validate(st.mixture, counts, f"stages[{i}].mixture" if cfg.stages else "mixture")
    return ds


def resolve_model(cfg: PretrainConfig) -> tuple[PretrainConfig, int | None]:
    """The model config this run trains, and the source vocab size when it must grow.

    Resuming: the run's own checkpoint decides; a `model` given that differs from it is
    refused (it would otherwise be ignored without a word). From init.from_checkpoint: the
    source's architecture, unless `model` was given (then it must match the source's)."""
    own = ckpt.latest(Path(cfg.out_dir) / "checkpoints")
    if own is not None:
        saved = model_config_of(own)
        diff = config_diff(cfg.model, saved) if cfg.model != ModelConfig() else []
        if diff:
            raise ConfigError(
                f"model: {', '.join(diff)}: differs from the checkpoint {own} that {cfg.out_dir} would resume; "
                f"rerun with the checkpoint's model settings (or none) to resume, use a new out_dir for a new "
                f"model, or to continue from these weights on purpose start a new out_dir with "
                f"init.from_checkpoint={own}")
        return dataclasses.replace(cfg, model=saved), None
    if not cfg.init.from_checkpoint:
        return cfg, None
    _, src_cfg = source_checkpoint(cfg.init.from_checkpoint, load_optimizer=cfg.init.load_optimizer)
    given, source = to_dict(cfg.model), to_dict(src_cfg)
    diff = sorted(k for k, v in given.items() if k != "preset" and source.get(k) != v)
    if cfg.model != ModelConfig() and diff:
        raise ConfigError(f"model: differs from the checkpoint's architecture in {', '.join(diff)} "
                          f"({cfg.init.from_checkpoint}); leave model unset to continue from it")
    ds_vocab = TokenDataset(cfg.data, "train").vocab_size
    if ds_vocab > src_cfg.vocab_size:
        check(not cfg.init.load_optimizer, "init.load_optimizer",
              "cannot reuse the optimizer state when the vocabulary grows")
        return dataclasses.replace(cfg, model=dataclasses.replace(src_cfg, vocab_size=ds_vocab)), src_cfg.vocab_size
    return dataclasses.replace(cfg, model=src_cfg), None


@torch.no_grad()
def grow_vocab(model: Transformer, state: dict[str, torch.Tensor], old_vocab: int) -> None:
    """Load weights of a smaller vocabulary; new embedding/head rows = mean of the old rows."""
    own, new_vocab = model.state_dict(), model.cfg.vocab_size
    for name, w in state.items():
        target = own[name]
        if name in ("embed_tokens.weight", "lm_head.weight"):   # [padded vocab, d]
            target[:old_vocab] = w[:old_vocab]
            target[old_vocab:new_vocab] = w[:old_vocab].mean(0)
        else:
            target.copy_(w)


def build(cfg: PretrainConfig, progress: bool = True) -> Trainer:
    cfg, old_vocab = resolve_model(cfg)
    check(cfg.train.seq_len <= cfg.model.max_seq_len, "train.seq_len",
          f"{cfg.train.seq_len} exceeds the model's max_seq_len {cfg.model.max_seq_len}")
    ds = validate_data(cfg)
    train = cfg.effective_train()
    device = resolve_device(train.device)
    if train.precision == "fp8":   # refused in one line before the mixture plan prints (the Trainer checks too)
        from lmforge.train import fp8
        fp8.check_supported(device)
    stages = cfg.effective_stages()
    if stages and progress:
        tokens_per_step = train.seq_len * train.micro_batch_size * train.grad_accum
        print(mixture.format_plan(mixture.plan(stages, mixture.domain_token_counts(ds), tokens_per_step)))
    torch.manual_seed(train.seed)
    model = Transformer(cfg.model)
    if old_vocab is not None:
        src = open_source(cfg.init.from_checkpoint)
        grow_vocab(model, src.state_dict(), old_vocab)
        model.grown_from = src.path
    objective = LMObjective(cfg.data, train.seq_len, train.micro_batch_size, train.seed,
                            z_loss=cfg.z_loss, eval_batches=train.eval_batches, stages=stages)
    if cfg.distill is not None:
        objective = attach_teacher(objective, cfg.distill, cfg.model, device, tokenizer_path(ds.meta, ds.folder))
    return Trainer(model, objective, train, cfg.out_dir, run_config=to_dict(cfg),
                   flops_per_token=flops_per_token(cfg.model, cfg.train.seq_len),
                   peak_flops=peak_flops(device), progress=progress)


def body(cfg: PretrainConfig, progress: bool = True) -> dict:
    out = Path(cfg.out_dir)
    trainer = build(cfg, progress)
    main = trainer.dist.is_main
    latest = trainer.resume_latest()
    if latest is not None:
        if main:
            print(f"resuming from {latest} (step {trainer.step})")
    elif getattr(trainer.model, "grown_from", None) is not None:
        if main:
            print(f"initialised from {trainer.model.grown_from} with the vocabulary grown to "
                  f"{trainer.model.cfg.vocab_size} (new rows = mean of the old ones)")
    elif cfg.init.from_checkpoint:
        src = resolve_checkpoint(cfg.init.from_checkpoint)
        trainer.init_from(src, cfg.init.load_optimizer)
        if main:
            print(f"initialised from {src}" + (" (with optimizer state)" if cfg.init.load_optimizer else "")
                  + (f"; batch carried: grad_accum {trainer.grad_accum()}" if "carried_from" in trainer.batch_growth.state else ""))
    if main:
        out.mkdir(parents=True, exist_ok=True)
        ds = trainer.objective.train_set
        tok = tokenizer_path(ds.meta, ds.folder)
        if tok is None and ds.meta.get("tokenizer"):
            print(f"warning: the tokenizer recorded in {ds.folder}/meta.json ({ds.meta['tokenizer']}) is not there: "
                  f"the run gets no tokenizer/ copy (SFT and export need one) and no val_bpb", file=sys.stderr)
        ckpt.copy_tokenizer(tok.parent if tok is not None and tok.suffix == ".json" else tok, out)
        write_json(out / "config.json", trainer.run_config)
    summary = trainer.fit()
    # the input model (the unigram from scratch; before growth for a grown model) vs the output, on
    # every rank: under FSDP each forward pass gathers the shards from all ranks, so all take part
    effect = pretrain_effect(cfg, trainer)
    if effect:
        summary["effect"] = effect
    return summary


def recipe_check(checker, st, cfg: PretrainConfig) -> Facts:
    """Its model (its own, or the source checkpoint's with the vocabulary grown to the data's) against
    the data: training length, vocabulary, mixture domains."""
    data = checker.facts_of(cfg.data)
    model = cfg.model
    if cfg.init.from_checkpoint:
        source = checker.model_of(cfg.init.from_checkpoint)
        if source is not None:
            given, have = to_dict(cfg.model), to_dict(source)
            diff = sorted(k for k, v in given.items() if k != "preset" and have.get(k) != v)
            if cfg.model != ModelConfig() and diff and not (diff == ["vocab_size"] and data.vocab
                                                              and data.vocab > source.vocab_size):
                checker.problem(st, "model", f"differs from the source checkpoint's architecture "
                                             f"({cfg.init.from_checkpoint}) in {', '.join(diff)}")
            model = source if cfg.model == ModelConfig() else cfg.model
            if data.vocab and data.vocab > model.vocab_size:
                model = dataclasses.replace(model, vocab_size=data.vocab)   # grown rows (Skywork)
        elif cfg.model == ModelConfig():
            model = None
    if model is not None:
        checker.check_len(st, "train.seq_len", cfg.train.seq_len, model)
        checker.check_vocab(st, model, data)
    checker.check_mixtures(st, cfg, data)
    return Facts(model=model)


STAGE = Stage(kind="pretrain", config=PretrainConfig, body=body, inputs=("data",),
              help="train a model on token shards (resumes automatically)",
              example="train.steps=200", outputs=("checkpoints", "tokenizer", "metrics.jsonl", DONE),
              distributed=True, check=recipe_check,
              extra={"sets_smoke_scale": True})   # its length and steps set --smoke's factors
run = STAGE.run
