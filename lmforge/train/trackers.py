"""Experiment trackers: every metrics.jsonl record also goes to TensorBoard and/or Weights & Biases.

`train.trackers: [tensorboard, wandb]` in any training stage (pretrain, grow's continued
training, longctx, sft, dpo, selfknow). The names are metrics.jsonl's own keys (`loss`, `lr`,
`grad_norm`, `val/prose`, `val/mean`, ...), the step is the record's `step`; every number in a
record is logged (true/false as 1/0), strings are not.

- tensorboard (`pip install 'lmforge[tb]'`): event files in OUT_DIR/tensorboard/, written by
  torch.utils.tensorboard. `tensorboard --logdir runs/tiny` shows each stage of a recipe as one
  run. A resumed stage opens a new event file whose first event purges every step from the
  first one it logs on (TensorBoard's purge_step): what an interrupted attempt logged past its
  last checkpoint is dropped, and the redone steps appear once.
- wandb (`pip install 'lmforge[wandb]'`): offline by default (no account, no network; the
  WANDB_MODE environment variable overrides), under OUT_DIR/wandb/, run id kept in
  OUT_DIR/wandb/run_id so a resumed stage continues the same run (`resume: allow`);
  `wandb sync OUT_DIR/wandb/offline-run-*` uploads it. W&B keeps one value per step: steps an
  interrupted attempt already logged keep their first values when the run is synced.

Each record is flushed as it is logged (a killed run loses nothing it logged), and the trackers
of a stage are closed when the next stage opens its own or the process exits.
"""
from __future__ import annotations

import atexit
import importlib.util
import math
import os
import secrets
from pathlib import Path
from typing import Literal

from lmforge.config import ConfigError

TrackerName = Literal["tensorboard", "wandb"]
PACKAGES = {"tensorboard": ("tensorboard", "lmforge[tb]"), "wandb": ("wandb", "lmforge[wandb]")}
_OPEN: list["Trackers"] = []


def check_available(names: list[str], key: str = "trackers") -> None:
    """A one-line ConfigError, before training starts, for a tracker whose package is missing."""
    for name in names:
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key}: {name} needs the {module} package: pip install '{extra}'")


def numbers(record: dict) -> dict[str, float]:
    """The loggable values of a metrics record: numbers (bools as 0/1), without `step`."""
    out = {}
    for k, v in record.items():
        if k == "step":
            continue
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


class TensorBoard:
    def __init__(self, out_dir: Path, first_step: int):
        from torch.utils.tensorboard import SummaryWriter
        log_dir = out_dir / "tensorboard"
        resumed = log_dir.is_dir() and any(log_dir.glob("events.out.tfevents.*"))
        # purge_step: readers drop what earlier files logged at steps >= first_step
        self.writer = SummaryWriter(str(log_dir), purge_step=first_step if resumed else None, flush_secs=30)

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, out_dir: Path, run_config: dict):
        import wandb
        folder = out_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        if run_id is None:
            run_id = secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
        if wandb.run is not None:          # one run per process: the previous stage's ends here
            wandb.run.finish()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lmforge"), dir=str(out_dir),
                              id=run_id, resume="allow", name=out_dir.name, group=out_dir.parent.name or None,
                              config=run_config, mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({k: (v if math.isfinite(v) else float("nan")) for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers of one training stage; `log(record)` mirrors one metrics.jsonl record."""

    def __init__(self, names: list[str], out_dir: str | Path, run_config: dict | None, first_step: int):
        close_all()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.sinks = []
        for name in dict.fromkeys(names):
            self.sinks.append(TensorBoard(out_dir, first_step) if name == "tensorboard"
                              else WandB(out_dir, run_config or {}))
        _OPEN.append(self)

    def log(self, record: dict) -> None:
        values = numbers(record)
        if values:
            for sink in self.sinks:
                sink.log(int(record["step"]), values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
        if self in _OPEN:
            _OPEN.remove(self)


def close_all() -> None:
    for t in list(_OPEN):
        t.close()


atexit.register(close_all)


def log_record(owner, names: list[str], out_dir: str | Path, run_config: dict | None, record: dict) -> None:
    """Mirror `record` to `names`' trackers, opened on the owner's first record (whose step, the
    first one this attempt logs, is where a resumed TensorBoard log is purged from)."""
    if not names:
        return
    trackers = getattr(owner, "_trackers", None)
    if trackers is None or not trackers.sinks:
        trackers = owner._trackers = Trackers(names, out_dir, run_config, int(record.get("step", 0)))
    trackers.log(record)
