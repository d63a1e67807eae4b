"""`lmforge dpo`: Direct Preference Optimization (Index-1.9B; StableLM 2 / Zephyr).

    lmforge dpo --set init.from_checkpoint=runs/sft --set data=[corpus/dpo.jsonl] --set out_dir=runs/dpo
    lmforge dpo --build-pairs corpus/sft.jsonl --set init.from_checkpoint=runs/sft --set out_dir=runs/dpo

Defaults follow the reports: beta 1.0 (Index), lr 1e-6 with a cosine schedule, one epoch.
Pairs are filtered (ties, duplicates, inverted scores, chosen score under
`min_score_chosen` - StableLM 2 kept pairs whose chosen reply scored >= 8/10 -, a
`meta.rejected_kind` outside `rejected_kinds` when that is given, and pairs longer than the
context), every drop counted by reason in stats.json.

No preference data ships offline, so pairs can be built from SFT conversations
(`pairs_from_sft.files`, or `--build-pairs FILE` on the command line):
- rejected: synthetic (default): the real reply is chosen; the rejected reply is a reply
  from another conversation, or the real reply truncated or word-shuffled
  (lmforge.align.pairs, the same pairs `lmforge corpus build` writes to dpo.jsonl);
- rejected: model: the rejected reply is the starting model's own sample for the prompt
  (Index-1.9B prefers model-generated rejected replies to hand-written ones).
The built pairs are written to out_dir/pairs_from_sft.jsonl (reused on resume).

Safety pairs with model-written refusals (Index-1.9B; lmforge.align.refusals): for each
unsafe prompt in `refusals.prompts` ("builtin" = a small shipped set) the SFT model is told
to refuse, and its refusal is the chosen reply (trained without that instruction); the
rejected reply is the record's, else the model's own uninstructed answer. out_dir/
refusals.json records the perplexity under the SFT model of the human-written refusals
(the records' `refusal`) against the model-written ones; the run report shows it.

The reference is the starting checkpoint: its log-probs are precomputed once
(`reference: precompute`, cached in out_dir/ref_logps.npz; no second model in memory
while training) or it runs beside the policy as a frozen model (`reference: model`).
Either way the reference goes through the policy's precision path (`train.precision`: bf16
autocast on CUDA), so the margin starts at zero; stats.json's `step0` records the first
micro-batch's margin before any update (it must be ~0; a warning is printed otherwise).
With `lora:` only adapters train, and `reference: model` is the policy itself with its
adapters switched off (the base: no second copy of the weights); the export merges them.
metrics.jsonl logs per step (means over the step's pairs, names ending in `_sum` as all
per-target means in the loop): dpo_loss_sum, reward_chosen_sum, reward_rejected_sum,
margin_sum, accuracy_sum (preference accuracy), logp_chosen_sum; `val/...` the same on
held-out pairs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lmforge.align.formats import DataFile
from lmforge.align.sft_data import MAX_RECORD_BYTES
from lmforge.config import ConfigError, check
from lmforge.device import resolve_device
from lmforge.io.atomic import atomic_path, read_json, write_json, write_jsonl
from lmforge.model.lora import BaseOf, LoRAConfig
from lmforge.stagekit.runner import (check_steps_unset, data_account, new_model, reject_sink, stage_defaults,
                                     start_trainer, steps_for, trainer_body)
from lmforge.stagekit.facts import conversations
from lmforge.stagekit.stage import DONE, Arg, Stage
from lmforge.stagekit.source import InitConfig, Source, load_source
from lmforge.train.trainer import TrainConfig, Trainer

DPO_TRAIN = {"optim": {"lr": 1e-6}, "schedule": {"kind": "cosine", "warmup_steps": 0, "min_ratio": 0.0},
             "ckpt_every": 200}


@dataclass
class PairsFromSFTConfig:
    """Build preference pairs from SFT conversation files (no preference data ships offline)."""
    files: list[str | DataFile] = field(default_factory=list)
    rejected: Literal["synthetic", "model"] = "synthetic"
    seed: str = "dpo"
    max_new_tokens: int = 64       # rejected: model - sampling settings
    temperature: float = 0.7
    top_p: float = 0.95

    def __post_init__(self):
        check(self.max_new_tokens > 0, "max_new_tokens", "must be > 0")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")


@dataclass
class RefusalsConfig:
    """Safety pairs whose chosen reply is the SFT model's own refusal (Index-1.9B)."""
    prompts: list[str] = field(default_factory=list)   # unsafe-prompt jsonl files; "builtin" = the shipped set
    system: str = ""               # the instruction to refuse; "" = lmforge.align.refusals.REFUSAL_SYSTEM
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95

    def __post_init__(self):
        check(self.max_new_tokens > 0 and self.temperature >= 0 and 0 < self.top_p <= 1, "max_new_tokens",
              "max_new_tokens > 0, temperature >= 0, top_p in (0, 1]")


@dataclass
class DPOConfig:
    data: list[str | DataFile] = field(default_factory=list)   # preference files, or {path, format, columns, tags}
    pairs_from_sft: PairsFromSFTConfig = field(default_factory=PairsFromSFTConfig)
    refusals: RefusalsConfig = field(default_factory=RefusalsConfig)
    out_dir: str = "runs/dpo"
    init: InitConfig = field(default_factory=InitConfig)
    tokenizer: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: int = 1
    max_steps: int = 0
    beta: float = 1.0                       # Index-1.9B: 1.0; Zephyr: 0.1
    sft_coef: float = 0.0                   # > 0: + NLL of the chosen reply (keeps its likelihood up)
    reference: Literal["precompute", "model"] = "precompute"
    min_score_chosen: float | None = None   # StableLM 2: 8 (on a 10-point scale)
    rejected_kinds: list[str] = field(default_factory=list)   # keep pairs of these meta.rejected_kind; [] = all
    val_fraction: float = 0.0
    lora: LoRAConfig | None = None          # train LoRA adapters (the reference: the base, adapters off)
    max_record_bytes: int = MAX_RECORD_BYTES   # a longer line is too_long, never read whole (16 MiB)

    @classmethod
    def _base(cls, data):
        return stage_defaults(data, DPO_TRAIN)

    def __post_init__(self):
        check(bool(self.data) or bool(self.pairs_from_sft.files) or bool(self.refusals.prompts), "data",
              "give preference jsonl files, or SFT files in pairs_from_sft.files (--build-pairs)")
        check(bool(self.init.from_checkpoint), "init.from_checkpoint", "DPO starts from a (SFT) checkpoint")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = all epochs)")
        check(self.beta > 0, "beta", "must be > 0")
        check(self.sft_coef >= 0, "sft_coef", "must be >= 0")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check(self.max_record_bytes > 0, "max_record_bytes", "must be > 0")
        check(self.lora is None or not self.init.load_optimizer, "init.load_optimizer",
              "cannot continue a full-weight optimizer state with lora (set one of them)")
        check_steps_unset(self.train)


def build_pairs_file(cfg: DPOConfig, src: Source, errors, progress: bool) -> tuple[Path, dict]:
    """out_dir/pairs_from_sft.jsonl from cfg.pairs_from_sft (kept if already there: resume)."""
    from lmforge.align.preference_data import pairs_from_sft, self_sampled_rejected

    bp = cfg.pairs_from_sft
    path = Path(cfg.out_dir) / "pairs_from_sft.jsonl"
    stats_path = path.with_suffix(".stats.json")
    if path.exists() and stats_path.exists():
        return path, read_json(stats_path)
    try:
        records, stats = pairs_from_sft(bp.files, bp.seed, errors)
    except FileNotFoundError as e:
        raise ConfigError(f"pairs_from_sft.files: {e}") from None
    if bp.rejected == "model" and records:
        from lmforge.infer.generate import generate
        from lmforge.model.load import load_checkpoint

        model, _ = load_checkpoint(src.step_dir)
        if progress:
            print(f"sampling {len(records)} rejected replies from {src.step_dir}")
        records = self_sampled_rejected(model, src.tok, records, generate, max_new_tokens=bp.max_new_tokens,
                                        temperature=bp.temperature, top_p=bp.top_p, seed=0)
        for r in records:
            r["meta"]["synthetic"] = False
    stats["rejected"] = bp.rejected
    write_jsonl(path, records)
    write_json(stats_path, stats)
    return path, stats


def build_refusal_pairs(cfg: DPOConfig, src: Source, errors, progress: bool) -> tuple[Path, dict]:
    """out_dir/refusal_pairs.jsonl + refusals.json (perplexity of human vs model refusals under
    the SFT model); kept if already there (resume)."""
    from lmforge.align.refusals import REFUSAL_SYSTEM, load_unsafe, refusal_pairs
    from lmforge.eval.reply_ppl import reply_perplexity
    from lmforge.infer.generate import generate
    from lmforge.model.load import load_checkpoint

    out = Path(cfg.out_dir)
    path, info_path = out / "refusal_pairs.jsonl", out / "refusals.json"
    if path.exists() and info_path.exists():
        return path, read_json(info_path)
    if src.chat is None or src.chat.kind != "chatml":   # the samplers below write ChatML prompts
        raise ConfigError(f"refusals.prompts: model-written refusals are sampled with ChatML prompts; "
                          f"{src.tokenizer_dir} has its own chat template (leave refusals.prompts empty)")
    rc = cfg.refusals
    try:
        records, stats = load_unsafe(rc.prompts, errors)
    except FileNotFoundError as e:
        raise ConfigError(f"refusals.prompts: {e}") from None
    model, _ = load_checkpoint(src.step_dir)
    if progress:
        print(f"writing refusals for {len(records)} unsafe prompts with {src.step_dir}")
    sample = lambda texts, k: generate(model, src.tok, texts, max_new_tokens=rc.max_new_tokens,   # noqa: E731
                                       temperature=rc.temperature, top_p=rc.top_p, seed=cfg.train.seed + 1000 * k)
    score = lambda prompt, reply: reply_perplexity(model, src.tok, prompt, reply)   # noqa: E731
    pairs, info = refusal_pairs(records, sample, score, rc.system or REFUSAL_SYSTEM)
    info["input"] = dict(stats)
    write_jsonl(path, pairs)
    write_json(info_path, info)
    return path, info


def cached_reference_logps(out_dir: str, name: str, ref_model, pairs, pad_id: int, batch_size: int,
                           progress: bool, device=None, autocast=None) -> np.ndarray:
    """[n, 2] reference log-probs, cached in out_dir/ref_logps.npz under the pairs' fingerprint
    and the precision they were computed in (the training loop's autocast dtype)."""
    from lmforge.train.objectives.dpo import pairs_digest, reference_logps

    path = Path(out_dir) / "ref_logps.npz"
    key = f"{name}_{pairs_digest(pairs)}_{str(autocast).replace('torch.', '') if autocast else 'fp32'}"
    cache = dict(np.load(path)) if path.exists() else {}
    if key not in cache:
        cache[key] = reference_logps(ref_model, pairs, pad_id, batch_size, device or 'cpu', progress, autocast)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **cache)
    return cache[key]


def load_all_pairs(cfg: DPOConfig, src: Source, progress: bool):
    """(train pairs, val pairs, stats) from data files and/or pairs built from SFT files."""
    from lmforge.align.preference_data import load_pairs

    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    errors = reject_sink(cfg.out_dir)
    files, stats = list(cfg.data), {}
    if cfg.pairs_from_sft.files:
        built, stats["pairs_from_sft"] = build_pairs_file(cfg, src, errors, progress)
        files.append(str(built))
    if cfg.refusals.prompts:
        built, info = build_refusal_pairs(cfg, src, errors, progress)
        stats["refusals"] = {"pairs": info["pairs"], "summary": info["summary"]}
        files.append(str(built))
    try:
        pairs, stats["pairs"] = load_pairs(files, src.tok, cfg.train.seq_len, errors, cfg.min_score_chosen, progress,
                                            cfg.max_record_bytes, chat=src.chat, rejected_kinds=cfg.rejected_kinds)
    except FileNotFoundError as e:
        raise ConfigError(f"data: {e}") from None
    finally:
        errors.close()
    stats["account"] = data_account("dpo", stats["pairs"], errors, files)   # DataError when nothing is usable
    val: list = []
    if cfg.val_fraction > 0 and len(pairs) > 1:
        perm = np.random.default_rng([cfg.train.seed, 11]).permutation(len(pairs))
        n_val = min(max(1, round(cfg.val_fraction * len(pairs))), len(pairs) - 1)
        held = set(perm[:n_val].tolist())
        val = [p for i, p in enumerate(pairs) if i in held]
        pairs = [p for i, p in enumerate(pairs) if i not in held]
    return pairs, val, stats


def build(cfg: DPOConfig, progress: bool = True) -> Trainer:
    from lmforge.device import autocast_dtype
    from lmforge.model.load import load_checkpoint
    from lmforge.train.objectives.dpo import DPOObjective, step0_check

    src = load_source(cfg.init, cfg.tokenizer, own_format=True)
    if cfg.train.seq_len > src.model_cfg.max_seq_len:
        raise ConfigError(f"train.seq_len: {cfg.train.seq_len} exceeds the model's max_seq_len "
                          f"{src.model_cfg.max_seq_len}")
    pairs, val, stats = load_all_pairs(cfg, src, progress)
    pad = src.info["pad_id"]
    # the reference is always the starting checkpoint (also when this run resumes later weights)
    device = resolve_device(cfg.train.device)
    # the reference goes through the policy's precision path (bf16 autocast on CUDA)
    amp = autocast_dtype(cfg.train.precision, device)
    kwargs: dict = {}
    model = None   # built by start_trainer, unless the reference needs it first
    if cfg.lora is not None and cfg.reference == "model":
        torch.manual_seed(cfg.train.seed)
        model = new_model(cfg, src)
        ref_model = BaseOf(model)   # the policy with its adapters off: the starting weights, no copy
    else:
        ref_model, _ = load_checkpoint(src.step_dir, device)
    if cfg.reference == "precompute":
        bs = cfg.train.micro_batch_size
        kwargs["ref_logps"] = cached_reference_logps(cfg.out_dir, "train", ref_model, pairs, pad, bs,
                                                     progress, device, amp)
        if val:
            kwargs["val_ref_logps"] = cached_reference_logps(cfg.out_dir, "val", ref_model, val, pad, bs,
                                                             progress, device, amp)
    else:
        kwargs["reference"] = ref_model
    objective = DPOObjective(pairs, cfg.train.micro_batch_size, cfg.epochs, cfg.train.seed, pad, cfg.beta,
                             cfg.sft_coef, val_pairs=val, eval_batches=cfg.train.eval_batches, **kwargs)
    # the policy starts as the reference: the first micro-batch's margin must be ~0
    stats["step0"] = step0_check(ref_model, objective, device, amp)
    if progress and stats["step0"]["max_abs_margin"] > 1e-2 * cfg.beta:
        print(f"warning: DPO margin at step 0 is {stats['step0']['max_abs_margin']:.3g}, not ~0 "
              f"(reference and policy precision differ?)")
    del ref_model
    steps = steps_for(objective.n_micro_batches(), cfg.train, cfg.max_steps)
    stats.update({"train_pairs": len(pairs), "val_pairs": len(val), "epochs": cfg.epochs, "planned_steps": steps})
    train = dataclasses.replace(cfg.train, steps=steps)
    return start_trainer(cfg, src, objective, train, stats, progress, model)


def heldout_effect(cfg: DPOConfig, trainer: Trainer) -> dict | None:
    """Every held-out pair (val_fraction) scored by the starting model (before) and the trained
    one (after): the log-prob margin log p(chosen) - log p(rejected) (summed over the reply
    tokens, as DPO scores them), the preference accuracy (share of pairs with margin > 0) and
    the DPO reward accuracy (share of pairs whose margin the training raised)."""
    from lmforge.eval.effect import paired_effect, target_logps
    from lmforge.model.load import load_checkpoint

    val = trainer.objective.val_pairs
    if not val:
        return None
    src = load_source(cfg.init, cfg.tokenizer, own_format=True)
    start, _ = load_checkpoint(src.step_dir, next(trainer.model.parameters()).device)

    def margins(model) -> np.ndarray:
        chosen, _ = target_logps(model, [(p.chosen, p.chosen_mask) for p in val])
        rejected, _ = target_logps(model, [(p.rejected, p.rejected_mask) for p in val])
        return chosen - rejected

    before, after = margins(start), margins(trainer.model)
    # the headline is the margin DPO optimises (its change is the mean implicit reward margin /
    # beta); the raw accuracy is length-bound where the rejected reply is a truncation (a half
    # as long reply is always the likelier one), so it moves little even when DPO learns
    accuracy = paired_effect("held-out preference accuracy (log p chosen > log p rejected)",
                             (before > 0).astype(float), (after > 0).astype(float), True)
    return paired_effect("held-out log-prob margin, chosen - rejected (nats)", before, after, True,
                         reward_accuracy=float(((after - before) > 0).mean()), more=[accuracy])


def smoke_settings(cfg: DPOConfig, sizes: dict) -> DPOConfig:
    """The same loss; a frozen copy scores only the pairs the capped steps use, where precompute
    would score every pair of the file first."""
    return dataclasses.replace(cfg, reference="model") if cfg.reference == "precompute" else cfg


STAGE = Stage(kind="dpo", config=DPOConfig, body=trainer_body(build, heldout_effect), inputs=("data", "pairs_from_sft.files"),
              distributed=True,
              help="direct preference optimization on preference pairs", example="beta=0.1",
              args=(Arg("--data", "data", "preference jsonl (prompt, chosen, rejected[, scores]), added to `data` "
                        "(repeatable)", append=True, metavar="JSONL"),
                    Arg("--build-pairs", "pairs_from_sft.files", "build pairs from SFT conversations (real reply "
                        "vs another conversation's reply, truncated or shuffled; pairs_from_sft.rejected=model: the "
                        "model's own sample)", append=True, metavar="SFT_JSONL")),
              outputs=("checkpoints", "tokenizer", "metrics.jsonl", DONE),
              check=conversations, smoke=smoke_settings, extra={"objective": "dpo"})
run = STAGE.run
