"""Direct Preference Optimization (Rafailov et al. 2023; Index-1.9B, StableLM 2 / Zephyr).

Per pair, with log-probabilities summed over the reply tokens (and its <|im_end|>):
    r_c = beta * (log pi(chosen) - log ref(chosen))       "reward" of the chosen reply
    r_r = beta * (log pi(rejected) - log ref(rejected))
    loss = -log sigmoid(r_c - r_r)   [+ sft_coef * mean NLL per token of the chosen reply]
The optional SFT term (RPO-style) answers a common complaint: DPO can lower the chosen
reply's likelihood while widening the margin; the term keeps it up.

The reference is the initial policy: either a frozen copy (eval mode, no grad) run beside
the policy, or log-probs precomputed once before training (then passed in the batch as
`ref_logps` [B, 2], and no second model sits in memory during training).

A micro-batch of B pairs is [2B, T]: rows 0..B-1 chosen, B..2B-1 rejected, right-padded
(causal attention: padding never influences the real tokens). Metrics per pair (averaged
by the loop over the step): rewards of chosen and rejected, margin, preference accuracy.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.align.preference_data import Pair
from lmforge.device import autocast as autocast_context
from lmforge.train.objectives.base import Objective


def sequence_logps(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over the non-ignored positions of each row, float32, [N], through the
    model's one loss path (its chunked fused head + cross-entropy, one loss per token)."""
    token_loss, _ = model(input_ids, labels=labels, reduction="none")
    return -token_loss.sum(-1)


def pairs_digest(pairs: list[Pair], settings: list | None = None) -> str:
    """16 hex digits identifying the pairs' tokens and masks (and `settings`, JSON-encoded)."""
    h = hashlib.sha256()
    for p in pairs:
        for a in (p.chosen, p.chosen_mask, p.rejected, p.rejected_mask):
            h.update(a.tobytes())
    if settings is not None:
        h.update(json.dumps(settings).encode())
    return h.hexdigest()[:16]


def dpo_terms(pi: torch.Tensor, ref: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """pi, ref: [B, 2] log-probs (chosen, rejected) -> per-pair loss, rewards, margin, accuracy."""
    rewards = beta * (pi - ref.to(pi.dtype))
    margin = rewards[:, 0] - rewards[:, 1]
    return {"loss": -F.logsigmoid(margin), "chosen": rewards[:, 0], "rejected": rewards[:, 1],
            "margin": margin, "accuracy": (margin > 0).float()}


def pad_rows(seqs: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    T = max(len(ids) for ids, _ in seqs)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    labels = np.full((len(seqs), T), -100, dtype=np.int64)
    for i, (s, m) in enumerate(seqs):
        ids[i, :len(s)] = s
        labels[i, :len(s) - 1] = np.where(m[1:], s[1:], -100)
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}


def pair_batch(pairs: list[Pair], idxs: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    seqs = [(pairs[i].chosen, pairs[i].chosen_mask) for i in idxs] + \
           [(pairs[i].rejected, pairs[i].rejected_mask) for i in idxs]
    batch = pad_rows(seqs, pad_id)
    batch["pair_index"] = torch.tensor(idxs, dtype=torch.int64)
    return batch


@torch.no_grad()
def pair_logps(model, pairs: list[Pair], idxs: list[int], pad_id: int, device="cpu",
               autocast: torch.dtype | None = None) -> torch.Tensor:
    """[len(idxs), 2] log-probs (chosen, rejected) of one batch, run as a training micro-batch."""
    b = pair_batch(pairs, idxs, pad_id)
    with autocast_context(device, autocast):   # the training loop's precision path
        lp = sequence_logps(model, b["input_ids"].to(device), b["labels"].to(device))
    return lp.view(2, -1).t()


@torch.no_grad()
def reference_logps(model, pairs: list[Pair], pad_id: int, batch_size: int = 8, device="cpu",
                    progress: bool = False, autocast: torch.dtype | None = None) -> np.ndarray:
    """[n_pairs, 2] float64 log-probs of chosen and rejected under `model` (precomputed reference).

    `autocast` must be the dtype the training loop autocasts the policy to (bf16 on CUDA by
    default): precomputed in fp32 while the policy runs in bf16, the DPO margin would not
    start at zero, and the first steps would push on rounding error, not on preference.
    """
    from tqdm import tqdm

    model.eval()
    out = np.zeros((len(pairs), 2), dtype=np.float64)
    for start in tqdm(range(0, len(pairs), batch_size), desc="reference log-probs", disable=not progress):
        idxs = list(range(start, min(start + batch_size, len(pairs))))
        out[idxs] = pair_logps(model, pairs, idxs, pad_id, device, autocast).double().cpu().numpy()
    return out


def step0_check(model, objective: "DPOObjective", device="cpu", autocast: torch.dtype | None = None) -> dict:
    """The DPO margin of the first training micro-batch before any update, where the policy
    still is the reference: it must be ~0. Run with the training precision path."""
    idxs = objective.order[:objective.mbs]
    pi = pair_logps(model, objective.pairs, idxs, objective.pad_id, device, autocast).double().cpu()
    ref = torch.from_numpy(objective.ref_logps[idxs]) if objective.ref_logps is not None else pi
    margin = objective.beta * ((pi[:, 0] - ref[:, 0]) - (pi[:, 1] - ref[:, 1]))
    return {"pairs": len(idxs), "precision": str(autocast).replace("torch.", "") if autocast else "fp32",
            "max_abs_logp_diff": float((pi - ref).abs().max()), "max_abs_margin": float(margin.abs().max())}


class DPOObjective(Objective):
    name = "dpo"

    def __init__(self, pairs: list[Pair], micro_batch_size: int, epochs: int, seed: int, pad_id: int,
                 beta: float = 1.0, sft_coef: float = 0.0, reference: torch.nn.Module | None = None,
                 ref_logps: np.ndarray | None = None, val_pairs: list[Pair] | None = None,
                 val_ref_logps: np.ndarray | None = None, eval_batches: int = 4):
        if (reference is None) == (ref_logps is None):
            raise ValueError("give exactly one of reference (a frozen model) or ref_logps (precomputed)")
        self.pairs, self.mbs, self.pad_id, self.beta, self.sft_coef = pairs, micro_batch_size, pad_id, beta, sft_coef
        self.reference, self.ref_logps = reference, ref_logps
        self.val_pairs, self.val_ref_logps, self.eval_batches = val_pairs or [], val_ref_logps, eval_batches
        if reference is not None:
            reference.eval().requires_grad_(False)
        self.order = np.concatenate([np.random.default_rng([seed, e]).permutation(len(pairs))
                                     for e in range(epochs)]).tolist()
        self.cursor = 0

    def n_micro_batches(self) -> int:
        return -(-len(self.order) // self.mbs)

    def next_batch(self):
        if self.cursor >= len(self.order):
            return None
        idxs = self.order[self.cursor:self.cursor + self.mbs]
        self.cursor += len(idxs)
        return self._batch(self.pairs, idxs, self.ref_logps)

    def _batch(self, pairs, idxs, ref_logps):
        b = pair_batch(pairs, idxs, self.pad_id)
        if ref_logps is not None:
            b["ref_logps"] = torch.from_numpy(ref_logps[idxs])
        return b

    def weight(self, batch) -> float:
        return float(batch["pair_index"].numel())

    def _ref(self, batch) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"]
        self.reference.to(batch["input_ids"].device)
        with torch.no_grad():
            lp = sequence_logps(self.reference, batch["input_ids"], batch["labels"])
        return lp.view(2, -1).t()

    def loss(self, model, batch):
        labels = batch["labels"]
        lp = sequence_logps(model, batch["input_ids"], labels)
        B = lp.shape[0] // 2
        pi = lp.view(2, B).t()                                      # [B, (chosen, rejected)]
        t = dpo_terms(pi, self._ref(batch), self.beta)
        loss = t["loss"].sum()
        metrics = {f"{k}_sum": v.detach().sum() for k, v in
                   (("dpo_loss", t["loss"]), ("reward_chosen", t["chosen"]), ("reward_rejected", t["rejected"]),
                    ("margin", t["margin"]), ("accuracy", t["accuracy"]), ("logp_chosen", pi[:, 0]))}
        if self.sft_coef > 0:
            n_tok = (labels[:B] != -100).sum(-1).clamp(min=1)
            sft = (-pi[:, 0] / n_tok).sum()
            metrics["sft_loss_sum"] = sft.detach()
            loss = loss + self.sft_coef * sft
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        device = next(model.parameters()).device
        sums, n = {}, 0
        for start in range(0, min(len(self.val_pairs), self.eval_batches * self.mbs), self.mbs):
            idxs = list(range(start, min(start + self.mbs, len(self.val_pairs))))
            b = {k: v.to(device) for k, v in self._batch(self.val_pairs, idxs, self.val_ref_logps).items()}
            _, m = self.loss(model, b)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += len(idxs)
        return {f"val/{k[:-4]}": v / n for k, v in sums.items()}

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.cursor = int(state["cursor"])

    def fingerprint(self) -> str:
        return pairs_digest(self.pairs, [self.order, self.mbs, self.beta, self.sft_coef])
