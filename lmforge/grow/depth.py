"""Depth up-scaling (Yi-9B from Yi-6B, after SOLAR): measure, choose, duplicate.

Yi measured the cosine similarity between each layer's input and output hidden states on
calibration text; layers whose output is nearly their input (similarity close to 1) change
the representation least, so repeating them disturbs the model least. Yi-9B repeats the
16 middle layers 12..27 of Yi-6B (32 -> 48 layers) and continues training.

Here a block is a half-open range [start, end) of layer indices. The grown stack is
    layers[:end] + layers[start:end] + layers[end:]
i.e. the copy follows the original block, so the new layer j is a copy of old layer
`mapping[j]`. The block chosen automatically is the contiguous run of the requested size
whose per-layer similarities have the highest mean (closest to 1).
"""
from __future__ import annotations

import dataclasses
import re

import torch
import torch.nn.functional as F

from lmforge.model.config import ModelConfig

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")


@torch.no_grad()
def similarity_sums(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(per-layer sum over real tokens of cos(input, output) [n_layers] float64, token count).

    Packed rows are run with their doc_ids (attention within documents, positions reset);
    padding tokens (doc_ids < 0) are left out of the average.
    """
    doc_ids = batch.get("doc_ids")
    _, hidden = model(batch["input_ids"], position_ids=batch.get("position_ids"), doc_ids=doc_ids,
                      return_hidden=True)
    valid = torch.ones_like(batch["input_ids"], dtype=torch.bool) if doc_ids is None else doc_ids >= 0
    sums = []
    for h_in, h_out in zip(hidden[:-1], hidden[1:]):
        cos = F.cosine_similarity(h_in.float(), h_out.float(), dim=-1)          # [B, T]
        sums.append(cos[valid].double().sum())
    return torch.stack(sums).cpu(), int(valid.sum())


def layer_similarity(model, batches) -> tuple[list[float], int]:
    """(mean over the tokens of all `batches` of cos(layer input, layer output) per layer, tokens)."""
    total, count = None, 0
    device = next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        s, n = similarity_sums(model, batch)
        total, count = (s if total is None else total + s), count + n
    if not count:
        raise ValueError("no calibration tokens")
    return (total / count).tolist(), count


def block_scores(sims: list[float], size: int) -> list[float]:
    """Mean similarity of every contiguous block of `size` layers, indexed by its start."""
    return [sum(sims[i:i + size]) / size for i in range(len(sims) - size + 1)]


def choose_block(sims: list[float], size: int) -> tuple[int, int]:
    """[start, end) of the `size`-layer block closest to 1 on average (the earliest on ties)."""
    if not 1 <= size <= len(sims):
        raise ValueError(f"block size {size} not in [1, {len(sims)}]")
    scores = block_scores(sims, size)
    start = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return start, start + size


def layer_mapping(n_layers: int, start: int, end: int) -> list[int]:
    """Old layer index of each new layer: the block [start, end) appears twice in a row."""
    if not 0 <= start < end <= n_layers:
        raise ValueError(f"block [{start}, {end}) is outside the {n_layers} layers")
    old = list(range(n_layers))
    return old[:end] + old[start:end] + old[end:]


def grown_config(cfg: ModelConfig, start: int, end: int) -> ModelConfig:
    return dataclasses.replace(cfg, n_layers=cfg.n_layers + (end - start))


def grow_state_dict(state: dict[str, torch.Tensor], mapping: list[int]) -> dict[str, torch.Tensor]:
    """State dict of the deeper model: layer j's tensors are clones of layer mapping[j]'s."""
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    out = {}
    for key, value in state.items():
        m = _LAYER_KEY.match(key)
        if m:
            by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            out[key] = value
    for new, old in enumerate(mapping):
        for name, value in by_layer[old].items():
            out[f"layers.{new}.{name}"] = value.clone()   # copies train apart: no sharing
    return out


def grow_model(model, start: int, end: int):
    """A new Transformer with the block [start, end) duplicated (weights copied)."""
    from lmforge.model.transformer import Transformer

    cfg = grown_config(model.cfg, start, end)
    new = Transformer(cfg)
    state = grow_state_dict(model.state_dict(), layer_mapping(model.cfg.n_layers, start, end))
    new.load_state_dict(state, strict=True)
    return new
