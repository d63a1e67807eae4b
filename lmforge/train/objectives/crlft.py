"""C-RLFT (OpenChat, Wang et al. 2023), as StableLM 2 uses it for self-knowledge.

Conditioned-RL fine-tuning is SFT where
- every conversation carries its source class as a condition the model sees. StableLM 2
  marks only the negatives: a positive is in plain SFT format, a negative opens with a
  system message holding a special negative token (lmforge.align.self_knowledge), so at
  inference the plain chat format asks for the good class;
- the loss of each target token is weighted by its class's weight (the coarse reward:
  e.g. good 1.0, bad 0.1);
- a KL term to a frozen reference model keeps the policy close (StableLM 2: a model trained
  on the class-conditioned data D_c, pi_c in OpenChat's terms; `lmforge selfknow` trains it):
      loss = sum_t w_class(t) * CE_t + kl_coef * sum_t KL(pi(.|x<t) || ref(.|x<t))
  over the target tokens t, normalised by the step's target count like all objectives.
  The KL is the exact one over the vocabulary (zero when policy == reference).
The cross-entropy goes through the model's one loss path (its chunked fused head, a loss
per token) when kl_coef is 0; with a KL term the step needs the policy's whole distribution
anyway, so both terms are computed from full logits then.
The weighted loss per target token depends on the step's class mix (a step with more
negatives, weight 0.1, reads lower), so it is no learning curve: it rose 2.28 -> 2.62 in a
tiny run whose plain cross-entropy fell. Each class's own cross-entropy is logged as
`<class>_ce_sum` / `<class>_targets_sum` (their ratio: nats per target token of that class,
comparable across steps; the split of SFT's `sft_ce_sum` / `sft_targets_sum`).
Packing, pretraining mix and NEFTune work as for SFT (this is an SFTObjective).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.train.objectives.sft import SFTObjective


def token_kl_sum(logits: torch.Tensor, ref_logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """sum over rows of KL(softmax(logits) || softmax(ref_logits)), float32, real vocab only
    (padded columns are -inf in both: 0 * (-inf - -inf) would be NaN)."""
    logp = F.log_softmax(logits[..., :vocab_size].float(), dim=-1)
    ref_logp = F.log_softmax(ref_logits[..., :vocab_size].float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum()


class CRLFTObjective(SFTObjective):
    name = "crlft"

    def __init__(self, *args, reference: torch.nn.Module | None = None, kl_coef: float = 0.0,
                 vocab_size: int = 0, class_names: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        self.reference, self.kl_coef, self.vocab_size = reference, kl_coef, vocab_size
        n = len(self.class_weights or [])
        self.class_names = list(class_names) if class_names else [f"class{k}" for k in range(n)]
        if reference is not None:
            reference.eval().requires_grad_(False)

    def token_losses(self, model, batch) -> tuple[torch.Tensor, dict]:
        """Each token's CE [B, T] (0 where labels are -100) through the model's one loss path:
        the class weights scale each token's gradient, known only here, so the per-token
        reduction (backward recomputes each chunk's logits)."""
        return model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"],
                     labels=batch["labels"], reduction="none")

    def loss(self, model, batch):
        sel = batch["labels"] != -100
        if self.kl_coef > 0:   # the KL needs the whole distribution: full logits, CE from them too
            logits = self.logits(model, batch)[sel]
            ce = F.cross_entropy(logits.float(), batch["labels"][sel], reduction="none")
        else:                  # CE only: the model's one loss path, no logits
            logits, ce = None, self.token_losses(model, batch)[0][sel]
        loss, metrics = self._weighted_ce(ce, batch, sel)
        if logits is not None:
            self.reference.to(logits.device)
            with torch.no_grad():
                ref_logits = self.logits(self.reference, batch)[sel]
            kl = token_kl_sum(logits, ref_logits, self.vocab_size)
            metrics["kl_sum"] = kl.detach()
            loss = loss + self.kl_coef * kl
        return loss, metrics

    def _weighted_ce(self, ce: torch.Tensor, batch, sel: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """sum_t w_class(t) * CE_t over the target tokens (`ce` [n_targets]), with the plain CE
        sum and each class's own CE sum and target count as metrics."""
        weighted = (batch["token_weight"][sel] * ce).sum()
        metrics = {"ce_sum": ce.sum().detach(), "weighted_ce_sum": weighted.detach()}
        if "token_class" in batch:
            cls = batch["token_class"][sel]
            for k, name in enumerate(self.class_names):
                mine = cls == k
                metrics[f"{name}_ce_sum"] = ce[mine].sum().detach()
                metrics[f"{name}_targets_sum"] = mine.sum()
        return weighted, metrics
