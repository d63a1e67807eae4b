"""What a stage will produce, as `lmforge run --check` tracks it before any work (lmforge.recipe.check).

Each stage's descriptor has a `check` hook, `check(checker, st, cfg) -> Facts`: it checks the
stage's config against the facts of the stages it reads (`checker.model_of(path)`,
`checker.domains_of(paths)`, `checker.facts_of(path)`; problems reported with
`checker.problem(st, key, message)`) and returns what this stage will hold. A stage without
a hook holds the model of whatever checkpoint it names (`source_model`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Facts:
    model: Any = None                 # the ModelConfig its checkpoint will hold
    vocab: int | None = None          # a tokenizer's vocabulary size (the configured bound)
    domains: dict[str, set[str] | None] = field(default_factory=dict)   # subfolder ("" = whole) -> domains
    counts_from: list[str] | None = None   # unfinished: documents per domain are at most those of these inputs


def source_model(checker, st, cfg) -> Facts:
    """The default rule: the stage holds the model of the checkpoint it starts from or reads."""
    init = getattr(cfg, "init", None)
    path = getattr(init, "from_checkpoint", None) or getattr(cfg, "checkpoint", None)
    return Facts(model=checker.model_of(path) if isinstance(path, str) else None)


def conversations(checker, st, cfg) -> Facts:
    """SFT, DPO, C-RLFT: the training length fits the source model; the model is the source's."""
    source = checker.model_of(cfg.init.from_checkpoint)
    if source is not None:
        checker.check_len(st, "train.seq_len", cfg.train.seq_len, source)
    return Facts(model=source)
