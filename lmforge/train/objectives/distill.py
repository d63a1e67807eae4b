"""Logit distillation from a teacher, wrapped around any token objective (pretraining, SFT).

The student's loss on each target token is (1 - weight) * cross-entropy on the data's label
plus weight * T^2 * D(teacher_T || student_T), where p_T = softmax(logits / T) and D is the
forward KL (Hinton et al. 2015; the T^2 keeps the gradient scale independent of T), the reverse
KL, or the Jensen-Shannon divergence (Gemma 2 and MiniLLM use forward and reverse
respectively; JS sits between). The teacher runs live, in eval mode and without gradients, on the
very batch the student sees, so masks, positions and padding are the same; only target positions
(label != -100) count, the same tokens the cross-entropy counts.

From a cache (`teacher_cache`, written by `lmforge distill-cache`, lmforge.train.teacher_cache)
the teacher is its top-k ids and log-probabilities per token, and everything outside the top k
is one more outcome, "the rest": teacher mass 1 - sum(top-k), student mass the student's
probability outside those ids. So both sides stay distributions (forward, reverse and JS all
defined and >= 0); the term is the divergence of the two distributions coarsened to
{top-k ids, rest}, a lower bound of the full one (data processing) equal to it when k = vocab;
and the student still pays for mass it puts outside the teacher's top k. (Renormalising the
top k on both sides would let a student put most of its mass elsewhere for free; renormalising
the teacher alone overstates its confidence.) The cache is written at one temperature, and
the rest's mass at another cannot be recovered from k values, so another temperature is refused.

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
from lmforge.train.objectives.base import Objective
from lmforge.train.objectives.lm import token_loss_sum

KINDS = ("forward", "reverse", "js")


@dataclass
class DistillConfig:
    teacher: str = ""               # checkpoint (step folder, run folder) or Hugging Face folder; same tokenizer as the student
    teacher_cache: str = ""         # or: a folder (or URL) of cached top-k teacher logits (`lmforge distill-cache`), pretraining only
    weight: float = 0.5             # share of the distillation term; 1 - weight stays on the data's cross-entropy
    temperature: float = 1.0        # softens both distributions; the term is scaled by T^2
    kind: str = "forward"           # forward: KL(teacher || student); reverse: KL(student || teacher); js: Jensen-Shannon
    chunk_tokens: int = 4096        # target tokens per chunk of the divergence (bounds the [tokens, vocab] float32 buffers)

    def __post_init__(self):
        check(bool(self.teacher) != bool(self.teacher_cache), "teacher",
              "set either the teacher (checkpoint or Hugging Face folder) or teacher_cache (a `lmforge "
              "distill-cache` folder), not both")
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


def _divergence_logp(s: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
    """Sum of D over rows of normalised log-probabilities [N, K]; an outcome of probability 0
    adds 0 (p log p -> 0), also at -inf."""
    def kl(a, b):       # sum exp(a) (a - b)
        pa = a.exp()
        return torch.where(pa > 0, pa * (a - b), torch.zeros((), device=a.device)).sum()
    if kind == "forward":
        return kl(t, s)
    if kind == "reverse":
        return kl(s, t)
    m = torch.logaddexp(s, t) - torch.log(torch.tensor(2.0, device=s.device))
    return 0.5 * (kl(t, m) + kl(s, m))


def topk_divergence_sum(student: torch.Tensor, ids: torch.Tensor, t_logp: torch.Tensor, kind: str,
                        temperature: float) -> torch.Tensor:
    """Sum over rows of D(teacher || student) with the teacher as its top-k log-probabilities
    (at `temperature`) of `ids` [N, k] and the rest of the vocabulary as one outcome (module doc);
    student: [N, V] logits. Equals divergence_sum on the full logits when k = V."""
    s_all = F.log_softmax(student.float() / temperature, dim=-1)
    s, t = s_all.gather(1, ids), t_logp.float()
    if ids.shape[1] < s_all.shape[1]:
        s_rest = torch.logsumexp(s_all.scatter(1, ids, float("-inf")), dim=-1, keepdim=True)
        t_rest = torch.log1p(-t.exp().sum(-1, keepdim=True).clamp(max=1.0 - 1e-6))   # >= 1e-6: rounding of stored values
        s, t = torch.cat([s, s_rest], -1), torch.cat([t, t_rest], -1)
    return _divergence_logp(s, t, kind) * temperature ** 2


class DistillObjective(Objective):
    """`inner` with the teacher's divergence mixed into its loss. The batch's model inputs are
    input_ids, position_ids and doc_ids (what LM and SFT batches carry)."""

    def __init__(self, inner, teacher: torch.nn.Module, cfg: DistillConfig, vocab_size: int):
        self.inner, self.teacher, self.cfg, self.vocab = inner, teacher.eval(), cfg, vocab_size
        self.name = f"{inner.name}+distill"
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __getattr__(self, attr):        # train_set, loader...: the inner objective's
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def on_step(self, step: int) -> None:
        self.inner.on_step(step)

    def realised_mixture(self):
        return self.inner.realised_mixture()

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
        parts = [self.inner.fingerprint(), c.teacher, c.weight, c.temperature, c.kind]
        if c.teacher_cache:             # only then, so live-teacher runs keep their fingerprints
            parts += [c.teacher_cache, self.cache.meta.get("settings")]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class CachedDistillObjective(DistillObjective):
    """`inner` (an LM objective on token shards) with the divergence to cached top-k teacher
    log-probabilities (lmforge.train.teacher_cache) looked up by each target token's index."""

    def __init__(self, inner, cache, cfg: DistillConfig, vocab_size: int):
        self.inner, self.cache, self.cfg, self.vocab = inner, cache, cfg, vocab_size
        self.name = f"{inner.name}+distill"
        inner.loader.sources = True           # batches carry token_index

    def loss(self, model, batch):
        logits = model(batch["input_ids"], **self._inputs(batch))
        ce, metrics = token_loss_sum(logits, batch["labels"])
        sel = batch["labels"] != -100
        ids, logp = self.cache.lookup(batch["token_index"][sel].cpu().numpy())
        ids, logp = ids.to(logits.device), logp.to(logits.device)
        s, step = logits[sel][:, :self.vocab], self.cfg.chunk_tokens
        kd = sum((topk_divergence_sum(s[i:i + step], ids[i:i + step], logp[i:i + step], self.cfg.kind,
                                      self.cfg.temperature)
                  for i in range(0, s.shape[0], step)), torch.zeros((), device=logits.device))
        w = self.cfg.weight
        metrics["distill_sum"] = kd.detach()
        return (1 - w) * ce + w * kd, metrics
