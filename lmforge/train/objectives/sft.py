"""Supervised fine-tuning: loss on assistant tokens of packed ChatML conversations.

- Rows come from `lmforge.align.sft_data` (whole conversations packed per row, attention
  and positions reset per conversation). The whole run's rows (all epochs) are planned up
  front, so the number of steps is known before training starts and `next_batch()`
  returns None after the last epoch.
- Pretraining text mixed in (Index-1.9B: 4 pretraining : 6 response tokens): whole rows
  from a token dataset are interleaved with SFT rows. Before each row the objective
  compares the target tokens trained so far and takes a pretraining row whenever the
  pretraining share is below `mix_share` (0.4 for 4:6), so the realised ratio tracks the
  target to within one row at every point of the run (reported in mixture.json).
- NEFTune (Jain et al. 2023; Yi): uniform noise U(-1, 1) * alpha / sqrt(L * d) added to the
  input embeddings in training mode only. L = the length of the SAMPLE the token belongs to
  (the paper adds the noise to each unpacked sample, L its non-pad tokens): in a packed row,
  the tokens of its conversation (same doc id), not the row's length, which would shrink the
  noise by sqrt(conversations per row). Without doc ids (a plain batch), the row's non-pad
  tokens. d = d_model. Evaluation (model.eval()) and generation see clean embeddings.
- The loss goes through the model's one loss path (its chunked fused head + cross-entropy,
  a loss per token): the batch's float32 logits never exist at once. The per-token losses
  give the loss (their sum) and the per-segment sums (response rows, pretraining rows); the
  NEFTune hook runs inside that same forward, so the loss sees the noised embeddings.
"""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from lmforge.align.sft_data import Conversation, build_row, n_targets
from lmforge.train.loader import PackedLoader
from lmforge.train.objectives.base import Objective


class NEFTune:
    """Forward hook on `model.embed_tokens`: noise on the embeddings while training."""

    def __init__(self, alpha: float, pad_id: int):
        self.alpha, self.pad_id = float(alpha), pad_id

    def attach(self, model: torch.nn.Module):
        self.doc_ids = None
        model.register_forward_pre_hook(self._remember_docs, with_kwargs=True)
        return model.embed_tokens.register_forward_hook(self)

    def _remember_docs(self, module, args, kwargs):
        """The model's doc_ids (packed rows), for the embedding hook that runs inside its forward."""
        self.doc_ids = kwargs.get("doc_ids")

    def scale(self, input_ids: torch.Tensor, d_model: int, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """alpha / sqrt(L * d) per token, shape [B, T, 1]: L = its sample's length (see module doc)."""
        if doc_ids is None or doc_ids.shape != input_ids.shape:
            L = (input_ids != self.pad_id).sum(-1, keepdim=True).expand_as(input_ids)
        else:
            rows = torch.arange(doc_ids.shape[0], device=doc_ids.device)[:, None]
            key = rows * (int(doc_ids.max()) + 2) + doc_ids.clamp(min=-1) + 1      # (row, sample) as one id
            _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
            L = torch.where(doc_ids >= 0, counts[inverse], (input_ids != self.pad_id).sum(-1, keepdim=True))
        L = L.clamp(min=1).to(torch.float32)
        return (self.alpha / torch.sqrt(L * d_model))[..., None]

    def __call__(self, module, inputs, output):
        if not module.training or self.alpha <= 0:
            return output
        doc_ids = getattr(self, "doc_ids", None)
        scale = self.scale(inputs[0], output.shape[-1], doc_ids.to(inputs[0].device) if doc_ids is not None
                           else None).to(output.device)
        noise = torch.empty_like(output).uniform_(-1.0, 1.0)  # global RNG: saved in checkpoints
        return output + (noise * scale).to(output.dtype)


def stack_rows(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}


class SFTObjective(Objective):
    name = "sft"

    def __init__(self, convs: list[Conversation], rows: list[list[int]], seq_len: int, micro_batch_size: int,
                 pad_id: int, val_convs: list[Conversation] | None = None, val_rows: list[list[int]] | None = None,
                 eval_batches: int = 4, mix_loader: PackedLoader | None = None, mix_share: float = 0.0,
                 mix_fingerprint: str = "", class_weights: list[float] | None = None):
        self.convs, self.rows, self.seq_len, self.mbs, self.pad_id = convs, rows, seq_len, micro_batch_size, pad_id
        self.val_convs, self.val_rows = val_convs or [], val_rows or []
        self.eval_batches = eval_batches
        self.mix_loader, self.mix_share, self.mix_fingerprint = mix_loader, mix_share, mix_fingerprint
        self.class_weights = class_weights
        self.cursor = 0                              # next SFT row
        self.sft_targets, self.pt_targets = 0, 0     # target tokens trained so far, by kind

    # -- data ---------------------------------------------------------------------------
    def _want_pretraining(self) -> bool:
        if self.mix_loader is None or self.mix_share <= 0:
            return False
        total = self.sft_targets + self.pt_targets
        return total > 0 and self.pt_targets < self.mix_share * total

    def _pt_row(self) -> dict[str, np.ndarray]:
        b = self.mix_loader.next_batch()  # endless (shuffled epochs): never None
        row = {k: v[0].numpy() for k, v in b.items()}
        if self.class_weights is not None:
            row["token_weight"] = (row["labels"] != -100).astype(np.float32)
            row["token_class"] = np.full(row["labels"].shape, -1, dtype=np.int64)   # pretraining text: no class
        return row

    def next_batch(self) -> dict[str, torch.Tensor] | None:
        rows, is_pt = [], []
        while len(rows) < self.mbs and self.cursor < len(self.rows):
            if self._want_pretraining():
                row = self._pt_row()
                self.pt_targets += int((row["labels"] != -100).sum())
                is_pt.append(True)
            else:
                idxs = self.rows[self.cursor]
                self.cursor += 1
                row = build_row(self.convs, idxs, self.seq_len, self.pad_id, self.class_weights)
                self.sft_targets += n_targets(self.convs, idxs)
                is_pt.append(False)
            rows.append(row)
        if not rows:
            return None
        batch = stack_rows(rows)
        batch["is_pt"] = torch.tensor(is_pt)
        return batch

    def weight(self, batch) -> float:
        return float((batch["labels"] != -100).sum())

    # -- loss ---------------------------------------------------------------------------
    def logits(self, model, batch) -> torch.Tensor:
        """Full logits [B, T, V]: only for what needs the whole distribution (C-RLFT's KL)."""
        return model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"])

    def summed_loss(self, model, batch) -> tuple[torch.Tensor, dict]:
        """The summed cross-entropy of the targets through the model's one loss path (chunked
        fused head + cross-entropy: never the batch's float32 logits; gradients computed in
        forward), with each token's CE, detached, in metrics["token_ce"] [B, T] for the
        per-segment sums. NEFTune's hook noises the embeddings inside this same forward."""
        return model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"],
                     labels=batch["labels"], token_ce=True)

    def loss(self, model, batch):
        loss, metrics = self.summed_loss(model, batch)
        metrics.update(self._split_metrics(metrics.pop("token_ce"), batch))
        return loss, metrics

    @torch.no_grad()
    def _split_metrics(self, token_loss: torch.Tensor, batch) -> dict:
        """Response loss and pretraining loss separately, summed from the per-token losses of
        each segment's rows (logged as share of the step's targets: response loss per token =
        sft_ce_sum / sft_targets_sum)."""
        token_loss, labels = token_loss.detach(), batch["labels"]
        if not bool(batch["is_pt"].any()):
            return {"sft_ce_sum": token_loss.sum(), "sft_targets_sum": (labels != -100).sum()}
        out = {}
        for name, sel in (("sft", ~batch["is_pt"]), ("pt", batch["is_pt"])):
            out[f"{name}_ce_sum"] = token_loss[sel].sum()
            out[f"{name}_targets_sum"] = (labels[sel] != -100).sum()
        return out

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Mean response loss per target token on the held-out conversations."""
        if not self.val_rows:
            return {}
        device = next(model.parameters()).device
        total, n = 0.0, 0.0
        for start in range(0, min(len(self.val_rows), self.eval_batches * self.mbs), self.mbs):
            rows = [build_row(self.val_convs, r, self.seq_len, self.pad_id)
                    for r in self.val_rows[start:start + self.mbs]]
            batch = {k: v.to(device) for k, v in stack_rows(rows).items()}
            loss_sum, _ = model(batch["input_ids"], position_ids=batch["position_ids"],
                                doc_ids=batch["doc_ids"], labels=batch["labels"])
            total, n = total + float(loss_sum), n + self.weight(batch)
        return {"val/sft_loss": total / max(n, 1.0), "val/sft_ppl": math.exp(min(total / max(n, 1.0), 50.0))}

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"cursor": self.cursor, "sft_targets": self.sft_targets, "pt_targets": self.pt_targets,
                "mix_loader": self.mix_loader.state_dict() if self.mix_loader else None}

    def load_state_dict(self, state: dict) -> None:
        self.cursor, self.sft_targets, self.pt_targets = state["cursor"], state["sft_targets"], state["pt_targets"]
        if self.mix_loader is not None:
            self.mix_loader.load_state_dict(state["mix_loader"])

    def realised_mixture(self) -> dict:
        total = self.sft_targets + self.pt_targets
        return {"sft_target_tokens": self.sft_targets, "pretraining_target_tokens": self.pt_targets,
                "pretraining_share": self.pt_targets / total if total else 0.0,
                "target_pretraining_share": self.mix_share if self.mix_loader is not None else 0.0}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in self.convs:
            h.update(c.ids.tobytes())
            h.update(c.mask.tobytes())
            h.update(bytes([c.cls % 256]))
        h.update(json.dumps([self.rows, self.seq_len, self.mbs, self.mix_share, self.mix_fingerprint,
                             self.class_weights]).encode())
        return h.hexdigest()[:16]
