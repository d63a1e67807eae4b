"""Measurements several findings share, read from a pretraining run's metrics.jsonl."""
from __future__ import annotations

import numpy as np
import torch

from lmforge.findings.context import metrics_of
from lmforge.model.load import load_checkpoint
from lmforge.shards import TokenDataset
from lmforge.train.loader import domain_loaders


def spikes(losses: list[float], window: int = 20, ratio: float = 1.2, skip: int = 0) -> int:
    """Steps whose loss exceeds `ratio` x the median of the `window` steps before it (after
    `skip` steps of warmup): a loss spike, counted once per excursion."""
    count, inside = 0, False
    for t in range(max(window, skip), len(losses)):
        high = losses[t] > ratio * float(np.median(losses[t - window:t]))
        count += high and not inside
        inside = high
    return count


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in metrics_of(run_dir) if "loss" in r]


def final_train_loss(run_dir, last: int = 10) -> float:
    ls = train_losses(run_dir)
    return float(np.mean(ls[-last:]))


def grad_norms(run_dir) -> list[float]:
    return [r["grad_norm"] for r in metrics_of(run_dir) if "grad_norm" in r]


def domain_batches(data: str, split: str, seq_len: int, batches: int, batch_size: int = 8):
    """(domain, batch) over up to `batches` packed batches of each domain of a token set's `split`,
    in order: the same tokens for every arm that is scored on them."""
    for domain, loader in domain_loaders(TokenDataset(data, split), seq_len, batch_size).items():
        for _ in range(batches):
            batch = loader.next_batch()
            if batch is None:
                break
            yield domain, batch


@torch.no_grad()
def mean_abs_log_z(run_dir, data: str, seq_len: int, batches: int = 4, batch_size: int = 8) -> float:
    """Mean |log Z| (the softmax normaliser of the logits) over validation tokens of the run's
    final checkpoint: what z-loss pushes towards 0."""
    model, _ = load_checkpoint(run_dir)
    total, n = 0.0, 0
    for _, batch in domain_batches(data, "val", seq_len, batches, batch_size):
        logits = model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"])
        lse = torch.logsumexp(logits[..., :model.cfg.vocab_size].float(), dim=-1)
        total, n = total + float(lse.abs().sum()), n + lse.numel()
    return total / max(n, 1)
