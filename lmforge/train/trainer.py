"""The one training loop: pretraining, SFT, DPO and C-RLFT all run through `Trainer.fit`.

Per step: fetch `grad_accum` micro-batches, normalise the loss by the step's total target
count, backward under autocast (bf16 on CUDA), measure the gradient norm (and the LM
head's share of it, which Norm-Head is meant to tame), skip the update if anything is
non-finite, clip, step AdamW at the LR the schedule gives for this step, log, evaluate.
Checkpointing, batch-size growth, experiment trackers and the input account are callbacks
(lmforge.train.callbacks) the loop calls at fixed points. Everything needed to continue
exactly is in the checkpoint (the callbacks' state included).
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError, check
from lmforge.device import autocast, autocast_dtype, resolve_device
from lmforge.io.atomic import naming, write_json, write_text
from lmforge.model.load import OURS, open_source
from lmforge.model.lora import lora_layers
from lmforge.train import distributed, fp8
from lmforge.train import trackers as tracking
from lmforge.train.callbacks import BatchGrowth, Callback, Checkpointing, Tracking
from lmforge.train.checkpoint import save as save_checkpoint
from lmforge.train.objectives.base import Objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.schedules import ScheduleConfig, lr_at
from lmforge.train.trackers import TrackerName


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is left intact."""


@dataclass
class BatchGrowthConfig:
    """Yi-9B: grow the global batch (here: micro-batches per step) on a schedule, or
    whenever the validation loss stops falling, at a fixed LR."""
    schedule: dict[int, int] = field(default_factory=dict)  # step -> grad_accum from that step on
    plateau_patience: int = 0      # > 0: multiply by `factor` after this many evals without improvement
    factor: int = 2
    max_grad_accum: int = 64
    min_delta: float = 0.0         # an eval must beat the best val loss by this much to count as progress
    carry: bool = False            # init.from_checkpoint: start at the batch the source run had grown to (Yi-9B phase 2)

    def __post_init__(self):
        for k, v in self.schedule.items():
            check(k >= 0 and v > 0, f"schedule.{k}", "steps >= 0 and grad_accum > 0")
        check(self.plateau_patience >= 0, "plateau_patience", "must be >= 0")
        check(self.factor >= 1, "factor", "must be >= 1")
        check(self.max_grad_accum >= 1, "max_grad_accum", "must be >= 1")


@dataclass
class TrainConfig:
    steps: int = 1000
    micro_batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 512
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: Literal["auto", "fp32", "bf16", "fp8"] = "auto"   # auto: bf16 autocast on CUDA, fp32 on CPU; fp8: torchao float8 linears (GPU >= sm89)
    fp8_recipe: Literal["tensorwise", "rowwise"] = "tensorwise"  # torchao float8 scaling (precision: fp8); tensorwise is the fastest
    compile: bool = False
    device: str = "auto"
    log_every: int = 10           # progress-bar refresh; metrics.jsonl gets every step
    eval_every: int = 0           # 0: evaluate only at the end
    eval_batches: int = 4
    ckpt_every: int = 100
    keep_last: int = 2
    max_bad_steps: int = 5        # non-finite steps in a row before the run stops
    activation_checkpointing: bool = False  # recompute each block in backward: memory for compute
    batch_growth: BatchGrowthConfig = field(default_factory=BatchGrowthConfig)
    trackers: list[TrackerName] = field(default_factory=list)   # also log metrics to: tensorboard, wandb

    def __post_init__(self):
        tracking.check_available(self.trackers)
        for name in ("steps", "micro_batch_size", "grad_accum", "seq_len", "max_bad_steps"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("eval_every", "ckpt_every", "keep_last", "eval_batches", "log_every"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device",
              f"unknown device {self.device!r} (auto, cpu, cuda, cuda:N)")
        check(not self.batch_growth.plateau_patience or self.eval_every > 0, "batch_growth.plateau_patience",
              "needs train.eval_every > 0 (growth is decided on validation loss)")


def head_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    head = getattr(model, "lm_head", None)
    return list(head.parameters()) if head is not None else []


def grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of the gradients (whole tensors also when FSDP shards them)."""
    norms = [distributed.to_local(torch.linalg.vector_norm(p.grad.float())) for p in params if p.grad is not None]
    if not norms:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack(norms))


class Trainer:
    def __init__(self, model: torch.nn.Module, objective: Objective, cfg: TrainConfig, out_dir: str | Path,
                 run_config: dict | None = None, flops_per_token: float | None = None,
                 peak_flops: float | None = None, progress: bool = True, callbacks: Sequence[Callback] = ()):
        """`callbacks` run after the trainer's own: checkpointing, batch growth, trackers."""
        self.cfg, self.objective, self.out_dir = cfg, objective, Path(out_dir)
        self.device = resolve_device(cfg.device)
        self.dist = distributed.setup(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.model = model.to(self.device)
        if cfg.precision == "fp8":       # before sharding and compiling: they wrap the swapped layers
            fp8.check_supported(self.device)
            decisions = fp8.convert(self.model, cfg.fp8_recipe)
            if self.dist.is_main:
                print(fp8.summary(decisions, cfg.fp8_recipe))
        self.model.activation_checkpointing = cfg.activation_checkpointing
        if self.dist.enabled:
            distributed.shard(self.model, self.device.type, cfg.activation_checkpointing)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.run_config = run_config or {}
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.progress = progress and self.dist.is_main
        self.total_steps = cfg.schedule.total_steps(cfg.steps)
        self.step, self.tokens_seen, self.bad_steps, self.bad_in_a_row = 0, 0, 0, 0
        self.batch_growth = BatchGrowth(cfg)
        self.callbacks: list[Callback] = [Checkpointing(), self.batch_growth,
                                          *([Tracking(cfg.trackers)] if cfg.trackers else []), *callbacks]
        self.autocast_dtype = autocast_dtype(cfg.precision, self.device)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"

    # -- state ----------------------------------------------------------------------------
    def trainer_state(self) -> dict:
        return {"tokens_seen": self.tokens_seen, "bad_steps": self.bad_steps,
                **{cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key},
                "objective": self.objective.state_dict(), "fingerprint": self.objective.fingerprint(),
                "objective_name": self.objective.name, "config": self.run_config}

    def save_checkpoint(self) -> Path:
        path = save_checkpoint(self.ckpt_dir, self.step, self.model, self.optimizer, self.trainer_state(), self.dist)
        if self.dist.is_main:
            ckpt.prune(self.ckpt_dir, self.cfg.keep_last)
        distributed.barrier(self.dist)
        return path

    def _load_state(self, path: Path, optimizer: bool) -> None:
        """Weights (+ optimizer) from a single-process or a sharded (torchrun) checkpoint."""
        if optimizer and ckpt.is_sharded(path):
            distributed.load_sharded(path / "dcp", self.model, self.optimizer)  # reshards to any world size
        elif self.dist.enabled:
            if optimizer:
                raise ConfigError(f"{path}: optimizer state of a single-process checkpoint cannot be loaded under "
                                 f"torchrun; continue with one process, or start from its weights only")
            distributed.load_full_weights(path, self.model)
        else:
            ckpt.load_weights(path, self.model)
            if optimizer:
                try:
                    ckpt.load_optimizer(path, self.optimizer)
                except ValueError as e:   # torch: the saved parameter groups do not match ours
                    raise ConfigError(f"{path}/optimizer.pt: not a state of this run's optimizer "
                                      f"(train.optim.name: {self.cfg.optim.name}): {e}") from None

    def resume(self, path: Path) -> None:
        """Full resume: weights, optimizer, step, loader position, RNG. Refuses other data."""
        state = ckpt.load_trainer_state(path)
        if state.get("fingerprint") != self.objective.fingerprint():
            raise ConfigError(   # a ValueError: one line at the CLI, exit 2
                f"{path}: checkpoint was trained on other data or loader settings (fingerprint "
                f"{state.get('fingerprint')} != {self.objective.fingerprint()}); to start on new data from "
                f"these weights use `init.from_checkpoint` with a new out_dir instead of resuming")
        self._load_state(path, optimizer=True)
        self.objective.load_state_dict(state["objective"])
        self.step, self.tokens_seen, self.bad_steps = state["step"], state["tokens_seen"], state["bad_steps"]
        for cb in self.callbacks:
            if cb.state_key:
                cb.load_state_dict(state[cb.state_key])
        ckpt.load_rng(path, state["rng"])

    def resume_latest(self) -> Path | None:
        """Resume from the newest complete checkpoint that can be read (None: there is none).

        A checkpoint whose files are present but unreadable (a corrupt optimizer.pt or
        safetensors header) is skipped for the previous complete one, and that is said on
        stderr; when none can be read, CorruptCheckpoint names every one. Other refusals
        (other data, another model) are not corruption and stop the run."""
        failures = []
        for path in reversed(ckpt.list_complete(self.ckpt_dir)):
            try:
                ckpt.verify(path)   # a truncated file is corruption, not an unfinished save
                self.resume(path)
            except ckpt.CorruptCheckpoint as e:
                failures.append(str(e))
                continue
            if failures and self.dist.is_main:
                print(f"warning: {'; '.join(failures)}; falling back to the previous complete checkpoint "
                      f"{path} (step {self.step}); the steps after it are redone", file=sys.stderr)
            return path
        if failures:
            raise ckpt.CorruptCheckpoint(f"no readable checkpoint in {self.ckpt_dir}: {'; '.join(failures)}; "
                                         f"delete the checkpoints to start over")
        return None

    def init_from(self, path: Path, load_optimizer: bool = False) -> None:
        """Continue from weights (and optionally the optimizer) with a fresh schedule and data.

        `path`: one of our checkpoints (a LoRA run's adapters merged) or a Hugging Face folder
        (lmforge.model.load); only our own full-weight checkpoints carry an optimizer state."""
        src = open_source(path)
        if load_optimizer and (not src.has_optimizer or lora_layers(self.model)):
            why = src.why_no_optimizer() if not src.has_optimizer else "this run trains LoRA adapters"
            raise ConfigError(f"init.load_optimizer: {why}; set init.load_optimizer=false")
        if src.format == OURS and src.lora is None and not lora_layers(self.model):
            self._load_state(src.path, optimizer=load_optimizer)   # sharded / torchrun paths as before
        elif self.dist.enabled:
            distributed.load_full_state(self.model, src.state_dict())
        else:
            src.load_into(self.model)
        if self.cfg.batch_growth.carry and src.format == OURS:
            self.batch_growth.carry_from(src.path)

    def _truncate_metrics(self, step: int) -> dict:
        """Keep only the metric lines of steps up to `step` (where training starts now): a fresh
        start drops what a killed first attempt logged before its first checkpoint, a resume
        what was logged after the checkpoint (both are redone, so nothing appears twice).
        The final evaluation line (step == `step`, no loss) is redone too. Rewritten through
        a temporary file: a kill or a full disk here never loses the metrics kept. Returns the
        kept record of step `step` itself ({} if none): a run resumed from its final checkpoint
        trains no step, and its summary's final loss is that record's."""
        if not self.metrics_path.exists() or not self.dist.is_main:
            return {}
        keep, last = [], {}
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
                s = rec.get("step", 0)
                if s < step or (s == step and "loss" in rec):
                    keep.append(line)
                    last = rec if s == step else last
            except (ValueError, AttributeError):  # a line cut short by a kill
                continue
        write_text(self.metrics_path, "".join(line + "\n" for line in keep))
        return last

    # -- one step -------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, self.autocast_dtype)

    def grad_accum(self) -> int:
        """Micro-batches this step (the batch-growth callback's schedule and multiplier)."""
        return self.batch_growth.grad_accum(self.step)

    def train_step(self) -> dict | None:
        self.objective.on_step(self.step)
        batches = []
        for _ in range(self.grad_accum()):
            b = self.objective.next_batch()
            if b is None:
                break
            batches.append(b)
        if not batches:
            return None
        total_weight = sum(self.objective.weight(b) for b in batches)
        lr = lr_at(self.cfg.schedule, self.step, self.total_steps, self.cfg.optim.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_total, extra = 0.0, {}
        # FSDP averages gradients over ranks; each rank's share of the loss is scaled up to match.
        scale = self.dist.world / max(total_weight, 1.0)
        for b in batches:
            b = {k: v.to(self.device, non_blocking=True) for k, v in distributed.local_rows(b, self.dist).items()}
            with self._autocast():
                loss_sum, metrics = self.objective.loss(self.forward_model, b)
            (loss_sum * scale).backward()
            loss_total += float(loss_sum.detach())
            for k, v in metrics.items():
                extra[k] = extra.get(k, 0.0) + float(v)
        params = [p for p in self.model.parameters() if p.grad is not None]
        head_norm = float(grad_norm(head_parameters(self.model)))
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        norm = float(distributed.to_local(torch.nn.utils.clip_grad_norm_(params, clip)))
        loss_total = distributed.all_reduce_sum(loss_total, self.dist, self.device)
        extra = {k: distributed.all_reduce_sum(v, self.dist, self.device) for k, v in extra.items()}
        loss = loss_total / max(total_weight, 1.0)
        finite = math.isfinite(loss) and math.isfinite(norm)
        if finite:
            self.optimizer.step()
            self.bad_in_a_row = 0
        else:
            self.bad_steps += 1
            self.bad_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        n_tokens = sum(int(b["input_ids"].numel()) for b in batches)
        self.tokens_seen += n_tokens
        out = {"loss": loss, "lr": lr, "grad_norm": norm,
               "head_grad_share": (head_norm / norm) ** 2 if finite and norm > 0 else float("nan"),
               "tokens": n_tokens, "skipped": not finite, "grad_accum": len(batches)}
        out.update({k: v / max(total_weight, 1.0) for k, v in extra.items() if k.endswith("_sum")})
        return out

    # -- the loop -------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:   # a full disk: the error line names metrics.jsonl
            raise naming(e, self.metrics_path) from e
        for cb in self.callbacks:
            cb.on_log(self, record)

    def evaluate(self) -> dict:
        self.model.eval()
        try:
            with self._autocast():
                return self.objective.evaluate(self.model)
        finally:
            self.model.train()

    def fit(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # fresh start or resume: never append to a killed attempt
        last = self._truncate_metrics(self.step)
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress,
                   desc=f"{self.objective.name}", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        while self.step < self.total_steps:
            out = self.train_step()
            if out is None:  # a finite objective ran out of data
                break
            dt, t0 = time.perf_counter() - t0, time.perf_counter()
            out["tokens_per_s"] = out["tokens"] / dt if dt > 0 else 0.0
            if self.flops_per_token and self.peak_flops:
                out["mfu"] = out["tokens_per_s"] * self.flops_per_token / self.peak_flops
            self.step += 1
            record = {"step": self.step, **out, "tokens_seen": self.tokens_seen}
            if self.bad_in_a_row >= self.cfg.max_bad_steps:
                self._log(record)
                raise TrainingDiverged(
                    f"{self.bad_in_a_row} non-finite steps in a row (loss {out['loss']}, grad norm "
                    f"{out['grad_norm']}) at step {self.step}; last good checkpoint: {ckpt.latest(self.ckpt_dir)}. "
                    f"Lower the LR or check the data.")
            if self.cfg.eval_every and self.step % self.cfg.eval_every == 0 and self.step < self.total_steps:
                record.update(self.evaluate())
                for cb in self.callbacks:
                    cb.on_eval(self, record)
            self._log(record)
            last = record
            if self.progress and (self.step % max(self.cfg.log_every, 1) == 0 or self.step == self.total_steps):
                bar.set_postfix(loss=f"{out['loss']:.3f}", lr=f"{out['lr']:.2e}",
                                tok_s=f"{out['tokens_per_s']:.0f}")
            bar.update(1)
            for cb in self.callbacks:
                cb.on_step_end(self, record)
            t0 = time.perf_counter()  # checkpoint and eval time are not training throughput
        bar.close()
        final_eval = self.evaluate()
        if final_eval:
            self._log({"step": self.step, **final_eval})
        summary = {"step": self.step, "tokens_seen": self.tokens_seen, "bad_steps": self.bad_steps,
                   "checkpoint": None, "final_loss": last.get("loss"), **final_eval}
        if "distill_sum" in last and "ce_sum" in last:   # the loss mixes the LM and distillation terms:
            summary["final_lm_loss"] = last["ce_sum"]    # the LM part alone compares with a plain run
            summary["final_distill"] = last["distill_sum"]
        for cb in self.callbacks:           # the final checkpoint fills in "checkpoint"
            cb.on_train_end(self, summary)
        mixture = self.objective.realised_mixture()
        if mixture is not None:
            write_json(self.out_dir / "mixture.json", mixture)
        return summary
