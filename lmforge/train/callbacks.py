"""What the training loop does around its steps, each a callback: checkpointing, batch-size
growth, experiment trackers, the input account.

`Trainer.fit` calls every callback's hooks in list order (the trainer's own first, then
those passed to it):
- `on_train_start(trainer)`: before the first step (a resumed run's first redone step);
- `on_eval(trainer, record)`: a periodic evaluation was merged into the step's record (it is
  not logged yet);
- `on_log(trainer, record)`: a record went to metrics.jsonl (main process only): every step,
  the final evaluation, the last step of a diverged run;
- `on_step_end(trainer, record)`: the step is logged;
- `on_train_end(trainer, summary)`: after the final evaluation; may fill in the summary.
A callback whose state a resume needs names its `state_key`: `state_dict()` is saved in the
checkpoint's trainer.json under that key and handed back to `load_state_dict()` on resume.
"""
from __future__ import annotations

from pathlib import Path

from lmforge import checkpoint as ckpt
from lmforge.train import trackers as tracking


class Callback:
    state_key: str | None = None

    def on_train_start(self, trainer) -> None:
        """Before the first step of this attempt."""

    def on_eval(self, trainer, record: dict) -> None:
        """After a periodic evaluation, its metrics in `record`."""

    def on_log(self, trainer, record: dict) -> None:
        """After `record` was appended to metrics.jsonl."""

    def on_step_end(self, trainer, record: dict) -> None:
        """After the step's record was logged."""

    def on_train_end(self, trainer, summary: dict) -> None:
        """After the final evaluation."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """The state saved under `state_key` (a resume)."""


class Checkpointing(Callback):
    """Every `train.ckpt_every` steps (the last step excepted: the end saves it anyway) and at
    the end, through `trainer.save_checkpoint`; first the temp, trash and half-deleted folders a
    killed attempt left are removed."""

    def on_train_start(self, trainer) -> None:
        if trainer.dist.is_main:
            ckpt.clean(trainer.ckpt_dir)

    def on_step_end(self, trainer, record: dict) -> None:
        every = trainer.cfg.ckpt_every
        if every and trainer.step % every == 0 and trainer.step < trainer.total_steps:
            trainer.save_checkpoint()

    def on_train_end(self, trainer, summary: dict) -> None:
        summary["checkpoint"] = str(trainer.save_checkpoint())


class BatchGrowth(Callback):
    """Yi-9B: micro-batches per step from `train.batch_growth.schedule`, times a multiplier
    that grows by `factor` whenever the validation loss (val/mean) has not beaten its best
    for `plateau_patience` evaluations; capped at max_grad_accum. `cfg` is the TrainConfig."""
    state_key = "growth"

    def __init__(self, cfg):
        self.cfg = cfg
        self.state = {"mult": 1, "best": None, "since_best": 0}

    def grad_accum(self, step: int) -> int:
        g = self.cfg.batch_growth
        accum = self.cfg.grad_accum
        for start, value in sorted(g.schedule.items()):
            if step >= start:
                accum = value
        return min(accum * self.state["mult"], max(g.max_grad_accum, self.cfg.grad_accum))

    def on_eval(self, trainer, record: dict) -> None:
        self.observe(record.get("val/mean"))

    def observe(self, val_loss: float | None) -> None:
        """One evaluation's loss: a new best resets the count, a plateau grows the batch."""
        g = self.cfg.batch_growth
        if not g.plateau_patience or val_loss is None:
            return
        best = self.state["best"]
        if best is None or val_loss < best - g.min_delta:
            self.state.update(best=val_loss, since_best=0)
            return
        self.state["since_best"] += 1
        if self.state["since_best"] >= g.plateau_patience:
            self.state.update(mult=self.state["mult"] * g.factor, since_best=0, best=val_loss)

    def carry_from(self, step_dir: Path) -> None:
        """Yi-9B's second phase goes on at the batch the first had grown to, not back at 4M tokens.

        The source run's last batch in tokens (its grad_accum x growth multiplier, capped as it was,
        x rows x length, from its trainer.json) becomes this run's multiplier, rounded to the
        nearest whole one. The plateau bookkeeping starts afresh: the new phase's data mix moves
        the loss, so the old best would count a data change as a plateau."""
        try:
            state = ckpt.load_trainer_state(step_dir)
        except FileNotFoundError:      # a Hugging Face folder or a grown model: no batch to carry
            return
        if "growth" not in state:      # a grown model (lmforge grow) or a run that never grew its batch
            return
        c = self.cfg
        train = (state.get("config") or {}).get("train") or {}
        mult = int((state.get("growth") or {}).get("mult", 1))
        accum = int(train.get("grad_accum", c.grad_accum))
        cap = int((train.get("batch_growth") or {}).get("max_grad_accum", 64))
        src_tokens = (min(accum * mult, max(cap, accum)) * int(train.get("micro_batch_size", c.micro_batch_size))
                      * int(train.get("seq_len", c.seq_len)))
        mine = c.grad_accum * c.micro_batch_size * c.seq_len
        self.state = {"mult": max(1, round(src_tokens / mine)), "best": None, "since_best": 0,
                      "carried_from": str(step_dir)}

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


class Tracking(Callback):
    """Every logged record also to TensorBoard and/or W&B (lmforge.train.trackers)."""

    def __init__(self, names: list[str]):
        self.names = names

    def on_log(self, trainer, record: dict) -> None:
        tracking.log_record(self, self.names, trainer.out_dir, trainer.run_config, record)


class InputAccount(Callback):
    """The stage's one-line account of its input records (read / kept / rejected), put in the
    summary at the end (the CLI prints it last)."""

    def __init__(self, line: str | None):
        self.line = line

    def on_train_end(self, trainer, summary: dict) -> None:
        if self.line:
            summary["account"] = self.line
