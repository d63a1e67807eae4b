"""Next-token prediction on packed token shards (pretraining, continued pretraining)."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.shards import TokenDataset, tokenizer_path
from lmforge.train.loader import PackedLoader, domain_loaders, train_loader
from lmforge.train.mixture import MixtureSampler, StageConfig, shares
from lmforge.train.objectives.base import Objective
from lmforge.train.schedules import ScheduleConfig, stage_at


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, z_loss: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Sum over target tokens of cross-entropy (+ z_loss * log(Z)^2, PaLM), in float32.

    Padded vocabulary columns arrive as -inf from the model, so they carry no probability.
    Labels of -100 are ignored.
    """
    logits = logits.float().flatten(0, -2)
    labels = labels.flatten()
    mask = labels != -100
    ce = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    metrics = {"ce_sum": ce.detach()}
    if z_loss > 0:
        log_z = torch.logsumexp(logits[mask], dim=-1)
        zl = z_loss * (log_z ** 2).sum()
        metrics["z_loss_sum"] = zl.detach()
        ce = ce + zl
    return ce, metrics


class LMObjective(Objective):
    name = "lm"

    def __init__(self, data_path: str, seq_len: int, micro_batch_size: int, seed: int,
                 z_loss: float = 0.0, eval_batches: int = 4, stages: list[StageConfig] | None = None,
                 doc_subset=None, packing: bool = True, seq_warmup=None):
        """doc_subset: train only on these global document indices (e.g. long documents for
        long-context training); not combinable with stages. packing=False: one document per
        row, padded (validation stays packed, so losses compare across the ablation).
        seq_warmup: a lmforge.train.seqlen.SeqWarmupConfig (row length growing by step)."""
        self.train_set = TokenDataset(data_path, "train")
        if self.train_set.n_docs == 0:
            raise ValueError(f"{data_path}: the train split has no documents")
        self.val_set = TokenDataset(data_path, "val")
        self.seq_len, self.mbs, self.z_loss, self.eval_batches = seq_len, micro_batch_size, z_loss, eval_batches
        self.seed, self.stages = seed, list(stages or [])
        self.packing = packing
        self.seq_warmup = seq_warmup if seq_warmup is not None and seq_warmup.enabled else None
        self.doc_subset = None if doc_subset is None else np.asarray(doc_subset, dtype=np.int64)
        if self.doc_subset is not None and (self.stages or len(self.doc_subset) == 0):
            raise ValueError("doc_subset: must be non-empty and cannot be combined with stages")
        if self.stages:  # domain mixture, possibly changing by stage
            self.sampler = MixtureSampler(self.train_set, seed)
            self.loader = PackedLoader(self.train_set, seq_len, micro_batch_size, self.sampler, packing)
            self._stage_schedule = ScheduleConfig(kind="multistage", stages=[
                ScheduleConfig(kind="constant", steps=s.steps) for s in self.stages])
        else:  # plain shuffled passes over all documents
            self.loader = train_loader(self.train_set, seq_len, micro_batch_size, seed, self.doc_subset, packing)
        self.stage = 0
        self.stage_tokens = [[0] * len(self.train_set.domain_names) for _ in self.stages or [None]]

    def on_step(self, step: int) -> None:
        """Called by the loop before each step: set the row length (context-length warmup) and
        the mixture for this step's stage. Both are functions of the step alone (exact resume)."""
        if self.seq_warmup is not None:
            self.loader.seq_len = self.seq_warmup.length_at(step, self.seq_len)
            self.loader.batch_size = self.seq_warmup.rows_at(step, self.seq_len, self.mbs)
        if not self.stages:
            return
        self.stage, local = stage_at(self._stage_schedule, step)
        st = self.stages[self.stage]
        self.sampler.set_shares(shares(st.mixture, self.sampler.counts, local / max(st.steps - 1, 1)))

    def next_batch(self):
        before = self.loader.tokens_by_domain.copy()
        batch = self.loader.next_batch()
        row = self.stage_tokens[self.stage]
        for d, n in enumerate(self.loader.tokens_by_domain - before):
            row[d] += int(n)
        return batch

    def weight(self, batch) -> float:
        return float((batch["labels"] != -100).sum())

    def loss(self, model, batch):
        # fused chunked head + CE: never the whole batch's float32 logits at once
        return model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"],
                     labels=batch["labels"], z_loss=self.z_loss)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Mean loss per token on each domain's validation documents (Skywork monitors these)."""
        device = next(model.parameters()).device
        out = {}
        for domain, loader in domain_loaders(self.val_set, self.seq_len, self.mbs).items():
            total, n = 0.0, 0.0
            for _ in range(self.eval_batches):
                batch = loader.next_batch()
                if batch is None:
                    break
                batch = {k: v.to(device) for k, v in batch.items()}
                loss_sum, _ = model(batch["input_ids"], position_ids=batch["position_ids"],
                                    doc_ids=batch["doc_ids"], labels=batch["labels"])
                total, n = total + float(loss_sum), n + self.weight(batch)
            if n > 0:
                out[f"val/{domain}"] = total / n
        if out:
            out["val/mean"] = sum(out.values()) / len(out)
            out["val/ppl"] = math.exp(min(out["val/mean"], 50.0))
        for domain, bpt in self._bytes_per_token().items():   # comparable across tokenizers
            if f"val/{domain}" in out:
                out[f"val_bpb/{domain}"] = out[f"val/{domain}"] / bpt / math.log(2)
        return out

    def _bytes_per_token(self) -> dict[str, float]:
        """UTF-8 bytes per token of each domain's validation text, once per run (needs the
        tokenizer recorded in the shards' meta.json; none, no bits-per-byte)."""
        if not hasattr(self, "_bpt"):
            self._bpt = {}
            tok = tokenizer_path(self.val_set.meta, self.val_set.folder)
            if tok is not None:
                try:
                    from lmforge.tokenizer.bytes import bytes_per_token
                    from lmforge.tokenizer.train import load_tokenizer
                    self._bpt = bytes_per_token(self.val_set, load_tokenizer(tok), max_docs_per_domain=64)
                except (OSError, ValueError, RuntimeError):   # tokenizer moved or unreadable
                    self._bpt = {}
        return self._bpt

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict(), "stage_tokens": self.stage_tokens}

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state["loader"])
        self.stage_tokens = state["stage_tokens"]

    def realised_mixture(self) -> list[dict]:
        """Tokens per domain actually trained on, by stage (logged and checked by tests)."""
        names = [s.name or f"stage{i}" for i, s in enumerate(self.stages)] or ["all"]
        out = []
        for name, row in zip(names, self.stage_tokens):
            total = sum(row) or 1
            out.append({"stage": name, "tokens": dict(zip(self.train_set.domain_names, row)),
                        "share": {d: n / total for d, n in zip(self.train_set.domain_names, row)}})
        return out

    def fingerprint(self) -> str:
        parts = [self.train_set.fingerprint(), self.seq_len, self.mbs, self.seed,
                 [repr(s.mixture) for s in self.stages]]
        if self.doc_subset is not None:   # only when set, so earlier runs' fingerprints are unchanged
            parts.append(hashlib.sha256(self.doc_subset.tobytes()).hexdigest())
        if not self.packing:
            parts.append("no-packing")
        if self.seq_warmup is not None:
            w = self.seq_warmup
            parts.append(["seq_warmup", w.start, w.steps, w.multiple])
        key = json.dumps(parts)
        return hashlib.sha256(key.encode()).hexdigest()[:16]
