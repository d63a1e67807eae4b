"""Packed, stateful batches from token shards.

Documents are concatenated to fill rows of `seq_len` tokens; a long document is split
across rows. Each row carries per-token document ids, so attention never crosses a
document boundary, and position ids that restart at 0 for every document (or document
piece) in the row (Index-1.9B / Index-32K "reset attention mask and position ids").
A label is masked (-100) where the next token belongs to another document: the model is
never asked to guess the first token of an unrelated document.

Which document comes next is decided by a sampler (a shuffled pass over the documents
here; domain mixtures plug in the same way). The loader's whole position is a small
JSON-able dict (`state_dict()`), saved in every checkpoint and restored exactly.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from lmforge.shards import TokenDataset


class DocSampler(Protocol):
    def next_doc(self) -> int | None: ...          # global document index, None when exhausted
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class ShuffledDocs:
    """Endless epochs over documents, each epoch a fresh permutation from (seed, epoch)."""

    def __init__(self, doc_ids: np.ndarray, seed: int):
        if len(doc_ids) == 0:
            raise ValueError("no documents to sample from")
        self.doc_ids, self.seed = np.asarray(doc_ids), seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.doc_ids)

    def next_doc(self) -> int:
        if self.pos >= len(self._perm):
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        doc = int(self._perm[self.pos])
        self.pos += 1
        return doc

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)


class SequentialDocs:
    """One pass over the given documents in order (validation)."""

    def __init__(self, doc_ids: np.ndarray):
        self.doc_ids, self.pos = np.asarray(doc_ids), 0

    def next_doc(self) -> int | None:
        if self.pos >= len(self.doc_ids):
            return None
        self.pos += 1
        return int(self.doc_ids[self.pos - 1])

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


class PackedLoader:
    """Yields micro-batches {input_ids, labels, position_ids, doc_ids} of shape [B, T] (int64).

    pack=False (Index-32K's "no packing" ablation): one document per row, the rest of the
    row padded; a document longer than the row continues in the next row, alone again.
    sources=True adds `token_index`: each token's global index in the split (TokenDataset.doc_start),
    -1 on padding; cached teacher logits are looked up by it. Off by default: no batch changes.
    """

    def __init__(self, dataset: TokenDataset, seq_len: int, batch_size: int, sampler: DocSampler,
                 pack: bool = True):
        self.ds, self.seq_len, self.batch_size, self.sampler = dataset, seq_len, batch_size, sampler
        self.pack = pack
        self.doc: int | None = None   # current document (global index) and how far into it we are
        self.offset = 0
        self.tokens_by_domain = np.zeros(len(dataset.domain_names), dtype=np.int64)
        self.exhausted = False
        self.sources = False

    # -- position -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "doc": self.doc, "offset": self.offset,
                "tokens_by_domain": self.tokens_by_domain.tolist(), "exhausted": self.exhausted}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.doc, self.offset = state["doc"], int(state["offset"])
        self.tokens_by_domain = np.asarray(state["tokens_by_domain"], dtype=np.int64)
        self.exhausted = bool(state.get("exhausted", False))

    # -- packing --------------------------------------------------------------------
    def _current(self) -> np.ndarray | None:
        """The unread rest of the current document, fetching the next one when needed."""
        while self.doc is None or self.offset >= self.ds.doc_len(self.doc):
            nxt = self.sampler.next_doc()
            if nxt is None:
                self.exhausted = True
                return None
            self.doc, self.offset = nxt, 0
        return self.ds.doc(self.doc)[self.offset:]

    def _row(self) -> dict[str, np.ndarray] | None:
        T = self.seq_len
        tokens = np.zeros(T, dtype=np.int64)
        doc_ids = np.full(T, -1, dtype=np.int64)  # -1 marks padding (only in a final partial row)
        positions = np.zeros(T, dtype=np.int64)
        source = np.full(T, -1, dtype=np.int64) if self.sources else None
        filled, seg = 0, 0
        while filled < T:
            rest = self._current()
            if rest is None:
                break
            n = min(T - filled, len(rest))
            tokens[filled:filled + n] = rest[:n]
            doc_ids[filled:filled + n] = seg
            positions[filled:filled + n] = np.arange(n)
            if source is not None:
                source[filled:filled + n] = self.ds.doc_start(self.doc) + self.offset + np.arange(n)
            self.tokens_by_domain[self.ds.doc_domain[self.doc]] += n
            self.offset += n
            filled, seg = filled + n, seg + 1
            if not self.pack:
                break
        if filled == 0:
            return None
        labels = np.full(T, -100, dtype=np.int64)
        same = doc_ids[1:] == doc_ids[:-1]
        labels[:-1][same] = tokens[1:][same]
        labels[doc_ids < 0] = -100
        # The last position's target is the next unread token, if it is in the same document.
        if filled == T and self.doc is not None and self.offset < self.ds.doc_len(self.doc):
            labels[-1] = int(self.ds.doc(self.doc)[self.offset])
        row = {"input_ids": tokens, "labels": labels, "position_ids": positions, "doc_ids": doc_ids}
        if source is not None:
            row["token_index"] = source
        return row

    def next_batch(self) -> dict[str, torch.Tensor] | None:
        """A [batch_size, seq_len] batch; None once a finite sampler is exhausted."""
        rows = []
        for _ in range(self.batch_size):
            row = self._row()
            if row is None:
                break
            rows.append(row)
        if not rows:
            return None
        return {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}


def train_loader(dataset: TokenDataset, seq_len: int, batch_size: int, seed: int,
                 doc_ids: np.ndarray | None = None, pack: bool = True) -> PackedLoader:
    """Shuffled passes over all documents, or over `doc_ids` only (e.g. the long-document subset)."""
    ids = np.arange(dataset.n_docs) if doc_ids is None else np.asarray(doc_ids, dtype=np.int64)
    return PackedLoader(dataset, seq_len, batch_size, ShuffledDocs(ids, seed), pack)


def domain_loaders(dataset: TokenDataset, seq_len: int, batch_size: int) -> dict[str, PackedLoader]:
    """One finite, ordered loader per domain present in `dataset` (validation)."""
    out = {}
    for d, name in enumerate(dataset.domain_names):
        ids = np.flatnonzero(dataset.doc_domain == d)
        if len(ids):
            out[name] = PackedLoader(dataset, seq_len, batch_size, SequentialDocs(ids))
    return out
