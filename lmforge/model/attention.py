"""Causal attention with optional per-document masking, on two backends.

Packing puts several documents in one row; `doc_ids[b, t]` says which. With doc_ids a
token attends only to earlier tokens of its own document (block-diagonal causal mask),
so a packed document sees exactly what it would see alone (Index-1.9B "reset attention
mask"). The mask is built once per forward (`build_mask`) and shared by every layer.

Backends:
  sdpa  F.scaled_dot_product_attention: is_causal without doc_ids, else a boolean
        [B, 1, T, T] mask. Works everywhere, including backward on CPU.
  flex  torch.nn.attention.flex_attention (compiled) with a BlockMask from a document
        mask_mod: skips fully masked blocks. CUDA only: torch 2.13 has no CPU backward.
  auto  flex on CUDA, sdpa elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

# Compiled lazily on first call (plain functions, so an outer torch.compile inlines them).
# Uncompiled flex_attention is a slow reference path; compiled create_block_mask never
# materialises the dense [B, T, T] mask.
_compiled_flex = torch.compile(flex_attention, dynamic=False)
_compiled_create_block_mask = torch.compile(create_block_mask)


def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position ids restarting at 0 where the document id changes along each row.

    doc_ids [B, T] holds contiguous runs (the packing layout); returns int64 [B, T].
    """
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    run_start = torch.where(is_start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - run_start


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    if backend == "flex" and device.type != "cuda":
        raise ValueError("attn_backend: flex needs CUDA (torch 2.13 has no FlexAttention backward on CPU); "
                         "use sdpa or auto")
    return backend


@dataclass
class AttnMask:
    """What every layer needs to mask attention in one forward pass."""
    backend: str                       # "sdpa" or "flex"
    dense: torch.Tensor | None = None  # sdpa: bool [B, 1, T, T], True = may attend; None = plain causal
    block: object | None = None        # flex: BlockMask


def doc_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, T, T]: (doc_i == doc_j) & (j <= i)."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


def _flex_block_mask(doc_ids: torch.Tensor | None, B: int, T: int, device: torch.device):
    if doc_ids is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx
        return _compiled_create_block_mask(mask_mod, None, None, T, T, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (kv_idx <= q_idx)
    return _compiled_create_block_mask(mask_mod, B, None, T, T, device=device)


def build_mask(backend: str, doc_ids: torch.Tensor | None, B: int, T: int, device: torch.device) -> AttnMask:
    backend = resolve_backend(backend, device)
    if backend == "flex":
        return AttnMask("flex", block=_flex_block_mask(doc_ids, B, T, device))
    return AttnMask("sdpa", dense=None if doc_ids is None else doc_causal_mask(doc_ids))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, Hkv, T, D] -> [B, H, T, D]. Hkv < H is grouped-query attention."""
    gqa = k.shape[1] != q.shape[1]
    if mask.backend == "flex":
        return _compiled_flex(q, k, v, block_mask=mask.block, enable_gqa=gqa)
    if mask.dense is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa)
