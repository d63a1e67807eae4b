"""What the one training loop asks of an objective (pretraining, SFT, DPO, C-RLFT, distillation).

The loop owns the model, optimizer, schedule, precision, checkpoints and logging. An
objective owns its data and its loss. Every objective subclasses `Objective`, which declares
every method the loop calls (the loop never probes an objective with getattr / hasattr):

- `next_batch()` -> a micro-batch dict of CPU tensors, or None when a finite objective
  (e.g. SFT epochs) has no more data;
- `weight(batch)` -> how many targets the micro-batch holds (tokens, pairs...). The loop
  sums weights over the micro-batches of a step and divides every `loss_sum` by that
  total, so gradient accumulation gives exactly the full-batch mean;
- `loss(model, batch)` -> (sum of the loss over the batch's targets, metrics dict). Target
  tokens are scored through the model's one loss path: `model(ids, labels=...)` (the fused
  head + cross-entropy; `reduction="none"` for a loss per token, as DPO uses);
- `evaluate(model)` -> validation metrics (e.g. per-domain loss), called under no_grad;
- `state_dict()` / `load_state_dict()` -> the data position, saved in checkpoints;
- `fingerprint()` -> identifies the data, so a resume onto other data is refused;
- `on_step(step)` -> called before each step fetches its batches (default: nothing; a
  curriculum moves its mixture here);
- `realised_mixture()` -> what the run's data mix came to, written to mixture.json at the
  end (default None: no mixture.json).
"""
from __future__ import annotations

import torch


class Objective:
    name: str

    def next_batch(self) -> dict[str, torch.Tensor] | None:
        raise NotImplementedError

    def weight(self, batch: dict[str, torch.Tensor]) -> float:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def on_step(self, step: int) -> None:
        """Before step `step` fetches its micro-batches."""

    def realised_mixture(self) -> dict | list | None:
        """The data mix the run realised (mixture.json), or None when there is none to report."""
        return None
