"""Logit distillation from a teacher, wrapped around any token objective (pretraining, SFT).

The student's loss on each target token is (1 - weight) * cross-entropy on the data's label
plus weight * T^2 * D(teacher_T || student_T), where p_T = softmax(logits / T) and D is the
forward KL (Hinton et al. 2015; the T^2 keeps the gradient scale independent of T), the reverse
KL, or the Jensen-Shannon divergence (Gemma 2 and MiniLLM use forward and reverse
respectively; JS sits between). The teacher runs live, in eval mode and without gradients, on the
very batch the student sees, so masks, positions and padding are the same; only target positions
(label != -100) count, the same tokens the cross-entropy counts.

The inner objective keeps everything else (data, order, resume state, evaluation: validation is
the plain LM loss, comparable with a run trained without a teacher); the fingerprint adds the
teacher's path and settings, so a resume with another teacher is refused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.config import check
from lmforge.train.objectives.lm import token_loss_sum

KINDS = ("forward", "reverse", "js")


@dataclass
class DistillConfig:
    teacher: str = ""               # checkpoint (step folder, run folder) or Hugging Face folder; same tokenizer as the student
    weight: float = 0.5             # share of the distillation term; 1 - weight stays on the data's cross-entropy
    temperature: float = 1.0        # softens both distributions; the term is scaled by T^2
    kind: str = "forward"           # forward: KL(teacher || student); reverse: KL(student || teacher); js: Jensen-Shannon
    chunk_tokens: int = 4096        # target tokens per chunk of the divergence (bounds the [tokens, vocab] float32 buffers)

    def __post_init__(self):
        check(bool(self.teacher), "teacher", "set the teacher checkpoint or Hugging Face folder")
        check(0 <= self.weight <= 1, "weight", "must be in [0, 1]")
        check(self.temperature > 0, "temperature", "must be > 0")
        check(self.kind in KINDS, "kind", " | ".join(KINDS))
        check(self.chunk_tokens > 0, "chunk_tokens", "must be > 0")


def divergence_sum(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """Sum over rows of D(teacher || student) (or its reverse / JS) on [N, V] logits, in float32."""
    s = F.log_softmax(student.float() / temperature, dim=-1)
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    if kind == "forward":
        d = F.kl_div(s, t, log_target=True, reduction="sum")            # sum p_t (log p_t - log p_s)
    elif kind == "reverse":
        d = F.kl_div(t, s, log_target=True, reduction="sum")
    else:
        m = torch.logaddexp(s, t) - torch.log(torch.tensor(2.0, device=s.device))
        d = 0.5 * (F.kl_div(m, t, log_target=True, reduction="sum") + F.kl_div(m, s, log_target=True, reduction="sum"))
    return d * temperature ** 2


class DistillObjective:
    """`inner` with the teacher's divergence mixed into its loss. The batch's model inputs are
    input_ids, position_ids and doc_ids (what LM and SFT batches carry)."""

    def __init__(self, inner, teacher: torch.nn.Module, cfg: DistillConfig, vocab_size: int):
        self.inner, self.teacher, self.cfg, self.vocab = inner, teacher.eval(), cfg, vocab_size
        self.name = f"{inner.name}+distill"
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __getattr__(self, attr):        # on_step, realised_mixture, train_set...: the inner objective's
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def next_batch(self):
        return self.inner.next_batch()

    def weight(self, batch) -> float:
        return self.inner.weight(batch)

    def _inputs(self, batch) -> dict:
        return {k: batch[k] for k in ("position_ids", "doc_ids") if k in batch}

    def loss(self, model, batch):
        logits = model(batch["input_ids"], **self._inputs(batch))
        ce, metrics = token_loss_sum(logits, batch["labels"])
        with torch.no_grad():
            t_logits = self.teacher(batch["input_ids"], **self._inputs(batch))
        sel = batch["labels"] != -100
        s, t = logits[sel][:, :self.vocab], t_logits[sel][:, :self.vocab]   # padded columns are -inf in both
        kd = sum((divergence_sum(s[i:i + self.cfg.chunk_tokens], t[i:i + self.cfg.chunk_tokens],
                                 self.cfg.kind, self.cfg.temperature)
                  for i in range(0, s.shape[0], self.cfg.chunk_tokens)), torch.zeros((), device=logits.device))
        w = self.cfg.weight
        metrics["distill_sum"] = kd.detach()
        return (1 - w) * ce + w * kd, metrics

    def evaluate(self, model) -> dict[str, float]:
        return self.inner.evaluate(model)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def fingerprint(self) -> str:
        c = self.cfg
        key = json.dumps([self.inner.fingerprint(), c.teacher, c.weight, c.temperature, c.kind])
        return hashlib.sha256(key.encode()).hexdigest()[:16]
