"""Which quantity a logged metric is, so each plot axis holds one kind only.

A run's metrics.jsonl files mix quantities of different units and scales: LM loss in nats
per token (~2-10), perplexities (~10-1000), the DPO loss (a per-pair logistic loss, ln 2 at
the start), DPO reward margins (beta x log-ratio, any sign), preference accuracy (0-1),
C-RLFT's class-weighted loss. Putting them on one axis flattens the curves that matter, so
every series is assigned an axis by its kind (`metric_kind`) and a plot never mixes kinds.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    ylabel: str
    log: bool = False


KINDS = {k.name: k for k in (
    Kind("lm_loss", "Language-model loss", "nats / token"),
    Kind("perplexity", "Perplexity", "perplexity (exp of nats/token)", log=True),
    Kind("bpb", "Bits per byte", "bits / UTF-8 byte"),
    Kind("pref_loss", "DPO loss", "preference loss (nats / pair)"),
    Kind("reward", "DPO rewards", "beta x log(pi / pi_ref) (nats)"),
    Kind("pref_accuracy", "DPO preference accuracy", "share of pairs chosen > rejected"),
    Kind("weighted_loss", "C-RLFT class-weighted loss", "weighted nats / token"),
    Kind("kl", "KL to the reference", "nats / token"),
    Kind("logp", "Log-probability of the chosen reply", "nats / reply"),
    Kind("lr", "Learning rate", "learning rate", log=False),
    Kind("grad_norm", "Gradient norm (before clipping)", "L2 norm", log=True),
    Kind("tokens_per_s", "Throughput", "tokens / s"),
)}

_BY_NAME = {
    "loss": "lm_loss", "ce": "lm_loss", "sft_loss": "lm_loss", "mean": "lm_loss",
    "dpo_loss": "pref_loss",
    "margin": "reward", "reward_margin": "reward", "reward_chosen": "reward", "reward_rejected": "reward",
    "accuracy": "pref_accuracy", "reward_accuracy": "pref_accuracy",
    "weighted_ce": "weighted_loss", "kl": "kl", "logp_chosen": "logp",
    "lr": "lr", "grad_norm": "grad_norm", "tokens_per_s": "tokens_per_s",
}
# keys logged as parts of a step's sum, not a quantity of their own (sft_ce_sum / sft_targets_sum)
_PARTS = {"sft_ce", "pt_ce", "sft_targets", "pt_targets", "tokens", "tokens_seen", "step", "skipped",
          "grad_accum", "head_grad_share"}


def objective(declared: str, keys) -> str:
    """What a training stage optimises: "dpo", "selfknow" (C-RLFT) or "lm": as its stage
    descriptor declares it (recipe.json's `objective`), else from the metric names it logs (a
    stage folder reported without a recipe)."""
    keys = set(keys)
    if declared == "dpo" or "dpo_loss_sum" in keys:
        return "dpo"
    if declared == "selfknow" or "weighted_ce_sum" in keys:
        return "selfknow"
    return "lm"


def metric_kind(key: str, objective_: str = "lm") -> str | None:
    """The kind (a KINDS name) of metric `key` logged by a stage with that objective; None for
    bookkeeping fields; "other:<key>" for a name it does not know (its own axis, never shared).

    `loss` is the objective's own loss: the LM loss, the DPO loss or C-RLFT's weighted loss.
    `val/<domain>` is a held-out LM loss; anything ending in `ppl` is a perplexity."""
    if key.startswith("val_bpb/"):
        return "bpb"
    base = key[4:] if key.startswith("val/") else key
    if base.endswith("_sum"):
        base = base[:-4]
    if base in _PARTS:
        return None
    if base == "ppl" or base.endswith("_ppl") or base.endswith("/ppl"):
        return "perplexity"
    if base == "loss":
        return {"dpo": "pref_loss", "selfknow": "weighted_loss"}.get(objective_, "lm_loss")
    if base in _BY_NAME:
        return _BY_NAME[base]
    if key.startswith("val/") and "/" not in base and objective_ == "lm":
        return "lm_loss"                # val/<domain>: held-out loss per domain
    return f"other:{key}"


def kind_info(kind: str) -> Kind:
    if kind in KINDS:
        return KINDS[kind]
    key = kind.split(":", 1)[-1]
    return Kind(kind, key, key)


def lm_loss_key(objective_: str) -> str:
    """The metric holding a training stage's plain LM loss (nats/token) per step, if any:
    C-RLFT logs its unweighted cross-entropy as ce_sum; DPO has none."""
    return {"dpo": "", "selfknow": "ce_sum"}.get(objective_, "loss")
