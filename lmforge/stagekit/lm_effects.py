"""Before/after measurements of the language-modelling stages (pretrain, grow, continued
pretraining of a grown model), on held-out text: each a lmforge.eval.effect dict.

The items are held-out windows: every consecutive `seq_len`-token window of the token data's
val documents (a document's last, shorter window too when it has >= MIN_TOKENS tokens), at
most MAX_WINDOWS spread evenly over them, as the longctx stage's effect takes them. Windows,
not documents: the tiny recipe's val split holds 20 short poems and dialogs but only 2-3 long
code and prose documents, so one window per document would leave those domains out. Windows
of one document are not independent, so the paired standard error is somewhat optimistic
where a document gives many. An item's score is its mean loss per token (every token but the
window's first). The before of each stage is its input:

- pretrain from scratch: the unigram model of the training split (token frequencies, add-1/2
  smoothing; lmforge.report.baselines). A freshly initialised model is the uniform ln V, which
  any training beats; the unigram is the first thing a model must beat to have learned context;
- pretrain from a checkpoint: that checkpoint;
- grow: the pre-growth model against the grown model before any training (depth up-scaling
  should keep the function: "within noise" or a small loss is its success);
- pretraining a grown model ("loss recovery"): the pre-growth model against the grown model
  after its continued pretraining (headline), and the grown model right after growth against
  it after training (`more`: what the continued pretraining did).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge import checkpoint as ckpt
from lmforge.eval.effect import mean_target_nll, paired_effect
from lmforge.model.load import load_checkpoint, resolve_checkpoint

MAX_WINDOWS = 128  # held-out windows (the tiny recipe has ~300): 64 left the grown stage's noise at 2x its effect
MIN_TOKENS = 16   # a shorter window says little about context


def heldout_windows(data: str | Path, seq_len: int, max_windows: int = MAX_WINDOWS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, target mask) items: the consecutive seq_len-token windows of the val documents
    (of >= MIN_TOKENS tokens), at most max_windows spread evenly; [] without a val split."""
    from lmforge.shards import TokenDataset

    try:
        val = TokenDataset(data, "val")
    except (FileNotFoundError, ValueError):
        return []
    spans = [(i, a) for i in range(val.n_docs) for a in range(0, val.doc_len(i), seq_len)
             if min(seq_len, val.doc_len(i) - a) >= MIN_TOKENS]
    if len(spans) > max_windows:
        spans = [spans[k] for k in np.linspace(0, len(spans) - 1, max_windows).round().astype(int)]
    items = []
    for i, a in spans:
        ids = np.asarray(val.doc(i)[a:a + seq_len], dtype=np.int64)
        items.append((ids, np.arange(len(ids)) > 0))
    return items


def unigram_nll(data: str | Path, items) -> np.ndarray:
    """Mean loss per target token of each item under the training split's unigram model."""
    from lmforge.report.baselines import unigram_logprobs
    from lmforge.shards import TokenDataset

    logp = unigram_logprobs(TokenDataset(data, "train"))
    return np.asarray([-float(logp[ids[1:][mask[1:]]].mean()) for ids, mask in items])


METRIC = "held-out loss per val window (nats/token)"


def grow_source(step_dir: Path) -> Path | None:
    """The pre-growth checkpoint of a `lmforge grow` output's step folder, else None."""
    try:
        state = ckpt.load_trainer_state(step_dir)
    except Exception:   # a HF folder or no trainer.json: not a grow output
        return None
    src = state.get("source") if state.get("objective_name") == "grow" else None
    return Path(src) if src and Path(src).exists() else None


def grow_effect(source: Path, grown, data: str | Path, seq_len: int) -> dict | None:
    """For the grow stage: the pre-growth model against the grown (untrained) model."""
    items = heldout_windows(data, seq_len)
    if len(items) < 2:
        return None
    device = next(grown.parameters()).device
    before, _ = load_checkpoint(source, device)
    return paired_effect(METRIC, mean_target_nll(before, items), mean_target_nll(grown, items), False,
                         baseline="the model before growth (depth up-scaling should keep its loss)")


def pretrain_effect(cfg, trainer) -> dict | None:
    """For the pretrain stage (trainer_body's effect hook): the stage's input against its output,
    on held-out windows of cfg.data at the training length (see the module docstring)."""
    model = trainer.model
    items = heldout_windows(cfg.data, cfg.train.seq_len)
    if len(items) < 2:
        return None
    after = mean_target_nll(model, items)
    device = next(model.parameters()).device
    if not cfg.init.from_checkpoint:
        return paired_effect(f"{METRIC}; before: the unigram model", unigram_nll(cfg.data, items), after, False,
                             baseline="unigram model of the training split (token frequencies)")
    start_dir = resolve_checkpoint(cfg.init.from_checkpoint)
    start, _ = load_checkpoint(start_dir, device)
    from_start = mean_target_nll(start, items)
    pre = grow_source(start_dir)
    if pre is None:
        return paired_effect(METRIC, from_start, after, False, baseline=f"the input checkpoint {start_dir}")
    before, _ = load_checkpoint(pre, device)
    return paired_effect(f"loss recovery after growth: {METRIC}", mean_target_nll(before, items), after, False,
                         baseline="the model before growth",
                         more=[paired_effect(f"continued pretraining: grown model right after growth -> "
                                             f"trained ({METRIC})", from_start, after, False)])
