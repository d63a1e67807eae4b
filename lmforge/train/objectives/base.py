"""What the one training loop asks of an objective (pretraining, SFT, DPO, C-RLFT).

The loop owns the model, optimizer, schedule, precision, checkpoints and logging. An
objective owns its data and its loss:

- `next_batch()` -> a micro-batch dict of CPU tensors, or None when a finite objective
  (e.g. SFT epochs) has no more data;
- `weight(batch)` -> how many targets the micro-batch holds (tokens, pairs...). The loop
  sums weights over the micro-batches of a step and divides every `loss_sum` by that
  total, so gradient accumulation gives exactly the full-batch mean;
- `loss(model, batch)` -> (sum of the loss over the batch's targets, metrics dict);
- `evaluate(model)` -> validation metrics (e.g. per-domain loss), called under no_grad;
- `state_dict()` / `load_state_dict()` -> the data position, saved in checkpoints;
- `fingerprint()` -> identifies the data, so a resume onto other data is refused.
"""
from __future__ import annotations

from typing import Protocol

import torch


class Objective(Protocol):
    name: str

    def next_batch(self) -> dict[str, torch.Tensor] | None: ...
    def weight(self, batch: dict[str, torch.Tensor]) -> float: ...
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]: ...
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def fingerprint(self) -> str: ...
