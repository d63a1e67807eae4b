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

Sliding window (Mistral, `sliding_window` W): query i also needs i - j < W, i.e. it sees
itself and the W - 1 tokens before it (transformers' `kv_idx > q_idx - sliding_window`).
Within W tokens that is the plain causal mask, so a short forward keeps the fast path.
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


def causal_window(T: int, window: int | None, device) -> torch.Tensor:
    """Bool [T, T]: j <= i, and i - j < window when a window is given."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    allowed = j <= i
    return allowed if window is None else allowed & (i - j < window)


def doc_causal_mask(doc_ids: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Bool [B, 1, T, T]: (doc_i == doc_j) & (j <= i) [& (i - j < window)]."""
    T = doc_ids.shape[1]
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal_window(T, window, doc_ids.device))[:, None]


def _flex_block_mask(doc_ids: torch.Tensor | None, B: int, T: int, device: torch.device, window: int | None):
    w = T if window is None else window   # i - j < T always holds: no window

    if doc_ids is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (q_idx - kv_idx < w)
        return _compiled_create_block_mask(mask_mod, None, None, T, T, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (kv_idx <= q_idx) & (q_idx - kv_idx < w)
    return _compiled_create_block_mask(mask_mod, B, None, T, T, device=device)


def build_mask(backend: str, doc_ids: torch.Tensor | None, B: int, T: int, device: torch.device,
               window: int | None = None) -> AttnMask:
    """The mask of one forward pass; `window` is the sliding window (None: attend to all earlier tokens)."""
    backend = resolve_backend(backend, device)
    if window is not None and window >= T:
        window = None   # no query is more than T - 1 tokens past a key: the window changes nothing
    if backend == "flex":
        return AttnMask("flex", block=_flex_block_mask(doc_ids, B, T, device, window))
    if doc_ids is None:
        return AttnMask("sdpa", dense=None if window is None else causal_window(T, window, device)[None, None])
    return AttnMask("sdpa", dense=doc_causal_mask(doc_ids, window))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, Hkv, T, D] -> [B, H, T, D]. Hkv < H is grouped-query attention."""
    gqa = k.shape[1] != q.shape[1]
    if mask.backend == "flex":
        return _compiled_flex(q, k, v, block_mask=mask.block, enable_gqa=gqa)
    if mask.dense is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa)


# ------------------------------------------------------------------ KV cache (generation)


class KVCache:
    """Keys/values of every layer for incremental decoding, preallocated to `capacity` slots.

    Slot j of row b holds the token fed j-th to that row (prompt, then generated tokens).
    `key_valid[b, j]` is False for left-padding slots, so a batch of prompts of different
    lengths shares one slot counter while each row attends only to its own tokens.
    Keys are stored after RoPE, at the position ids the caller passed (per-sequence
    positions make a left-padded row compute what it would compute alone).
    """

    def __init__(self, n_layers: int, batch: int, capacity: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (n_layers, batch, n_kv_heads, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.key_valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.length = 0          # slots filled (same for every row)
        self.capacity = capacity

    @classmethod
    def for_model(cls, model, batch: int, capacity: int) -> "KVCache":
        p = next(model.parameters())
        cfg = model.cfg
        return cls(cfg.n_layers, batch, capacity, cfg.kv_heads, cfg.head_dim, p.dtype, p.device)

    def step_mask(self, new_valid: torch.Tensor, window: int | None = None) -> AttnMask:
        """Record validity of the next T slots and return the mask of their queries.

        Query slot s = length + i may see key slot j <= s that is valid (and s - j < window
        with a sliding window: a row's real tokens fill consecutive slots, left padding
        first, so slot distance is position distance); a padding query also sees itself,
        so no row is all-masked (SDPA would return NaN there).
        """
        B, T = new_valid.shape
        start, end = self.length, self.length + T
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} slots needed, capacity {self.capacity}")
        self.key_valid[:, start:end] = new_valid
        q_slot = torch.arange(start, end, device=new_valid.device)[:, None]       # [T, 1]
        k_slot = torch.arange(end, device=new_valid.device)[None, :]              # [1, S]
        causal = k_slot <= q_slot                                                 # [T, S]
        if window is not None:
            causal = causal & (q_slot - k_slot < window)
        allowed = causal[None] & self.key_valid[:, None, :end]                    # [B, T, S]
        allowed = allowed | (k_slot == q_slot)[None]
        return AttnMask("sdpa", dense=allowed[:, None])

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new k/v [B, Hkv, T, D] at slots length..length+T; return all filled slots."""
        start, end = self.length, self.length + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        self.length += T

    def truncate(self, n: int) -> None:
        """Forget every slot from n on (a chat turn whose prompt diverges from what was cached);
        those slots are rewritten, validity included, before any query reads them."""
        if not 0 <= n <= self.length:
            raise ValueError(f"KV cache: cannot truncate to {n} slots, {self.length} filled")
        self.length = n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (e.g. drop finished sequences from the batch)."""
        self.k, self.v = self.k[:, index], self.v[:, index]
        self.key_valid = self.key_valid[index]
