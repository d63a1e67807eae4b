"""Cached top-k teacher logits (`lmforge distill-cache` writes them, `distill.teacher_cache` reads them).

A cache folder, for the train split of one token folder:

    settings.json         what the cache depends on (teacher, data fingerprint, k, window, temperature,
                          dtype, vocab); a rerun with other settings is refused, not mixed in
    NAME.topk_ids         [n_tokens, k] token ids (uint16 for vocabularies <= 65536, else uint32)
    NAME.topk_logp        [n_tokens, k] the teacher's log-probabilities at the cache's temperature,
                          log softmax(z / T), of those ids, largest first (float16 or float32)
    NAME.json             written last for each shard: that shard is finished (resume skips it)
    meta.json             written last of all: the cache is complete

Row g of a shard is the teacher's distribution of the token after the shard's token g, so a
training batch looks its rows up by each token's global index (lmforge.train.loader, `sources`).

Disk per token: k x (id bytes + log-prob bytes); k = 32, a vocabulary <= 65536 and float16:
32 x (2 + 2) = 128 bytes (the token itself takes 2), i.e. 128 GB per billion tokens.

Context: the teacher reads each document in consecutive windows of `window` tokens, positions
from 0 in each (pieces of short documents packed into one row, attention kept within each, as
the loader does). A student row that starts a window at the same place (no packing, row length
= window) sees exactly the teacher's context; with packing, a student row can start mid-window
and the cached distribution then saw other (more) context than the student: the price of
computing the teacher once instead of on every batch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.io.fetch import local_copies
from lmforge.io.fs import upath, url_errors
from lmforge.shards import Shard, TokenDataset, token_dtype

FORMAT = "lmforge-teacher-topk-v1"


def bytes_per_token(k: int, vocab_size: int, dtype: str) -> int:
    return k * (token_dtype(vocab_size).itemsize + np.dtype(dtype).itemsize)


def shard_paths(folder: Path, name: str) -> tuple[Path, Path, Path]:
    return folder / f"{name}.topk_ids", folder / f"{name}.topk_logp", folder / f"{name}.json"


def windows(shard: Shard, window: int) -> list[tuple[int, int]]:
    """(start, length) in the shard of each document piece: every document cut every `window` tokens."""
    out = []
    for d in range(shard.n_docs):
        a, b = int(shard.starts[d]), int(shard.starts[d + 1])
        out += [(o, min(window, b - o)) for o in range(a, b, window)]
    return out


def pack_rows(pieces: list[tuple[int, int]], window: int) -> list[list[tuple[int, int]]]:
    """Consecutive pieces greedily into rows of at most `window` tokens (a piece is never split)."""
    rows, row, used = [], [], 0
    for p in pieces:
        if used + p[1] > window:
            rows.append(row)
            row, used = [], 0
        row.append(p)
        used += p[1]
    return rows + ([row] if row else [])


@torch.no_grad()
def teacher_topk(teacher: torch.nn.Module, shard: Shard, window: int, k: int, temperature: float,
                 vocab_size: int, rows_per_batch: int, device: torch.device, dtype: str,
                 progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The top-k ids and log-probabilities of the teacher's next-token distribution at every token
    of `shard` (arrays [n_tokens, k]); deterministic for a given teacher, device and shard."""
    n = int(shard.starts[-1])
    ids = np.zeros((n, k), dtype=token_dtype(vocab_size))
    logp = np.zeros((n, k), dtype=np.dtype(dtype))
    rows = pack_rows(windows(shard, window), window)
    for i in range(0, len(rows), rows_per_batch):
        batch = rows[i:i + rows_per_batch]
        T = max(sum(L for _, L in r) for r in batch)
        toks = np.zeros((len(batch), T), dtype=np.int64)
        pos = np.zeros((len(batch), T), dtype=np.int64)
        seg = np.full((len(batch), T), -1, dtype=np.int64)
        where = np.full((len(batch), T), -1, dtype=np.int64)      # the token's index in the shard
        for b, row in enumerate(batch):
            at = 0
            for j, (start, L) in enumerate(row):
                toks[b, at:at + L] = shard.tokens[start:start + L]
                pos[b, at:at + L] = np.arange(L)
                seg[b, at:at + L] = j
                where[b, at:at + L] = np.arange(start, start + L)
                at += L
        logits = teacher(torch.from_numpy(toks).to(device), position_ids=torch.from_numpy(pos).to(device),
                         doc_ids=torch.from_numpy(seg).to(device))
        keep = torch.from_numpy(where >= 0).to(device)
        lp = F.log_softmax(logits[keep][:, :vocab_size].float() / temperature, dim=-1)
        top = lp.topk(k, dim=-1)                                   # sorted, largest first
        at = where[where >= 0]
        ids[at] = top.indices.cpu().numpy().astype(ids.dtype)
        logp[at] = top.values.cpu().numpy().astype(logp.dtype)
        if progress is not None:
            progress(int(at.size))
    return ids, logp


class TeacherCache:
    """Read side: the top-k rows of any global token indices of the train split."""

    def __init__(self, folder: str | Path, progress: bool = True):
        """folder: local, or a URL (s3://...: the files are fetched into a local cache first,
        lmforge.io.fetch, and mapped from there)."""
        self.folder = upath(folder)
        meta_path = self.folder / "meta.json"
        try:
            with url_errors(self.folder):
                self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.folder}: not a finished teacher cache (no meta.json; run "
                                    f"`lmforge distill-cache` to write one, or rerun it to finish it)") from None
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: unknown format {self.meta.get('format')!r}, expected {FORMAT}")
        self.k, self.vocab_size = int(self.meta["k"]), int(self.meta["vocab_size"])
        self.temperature = float(self.meta["temperature"])
        id_dtype, lp_dtype = token_dtype(self.vocab_size), np.dtype(self.meta["dtype"])
        self.ids, self.logp, bases = [], [], [0]
        names = [s["name"] + ext for s in self.meta["shards"] for ext in (".topk_ids", ".topk_logp")]
        files = local_copies(self.folder, names, listed_in=str(meta_path), progress=progress, owner=self)
        for s in self.meta["shards"]:
            n = int(s["n_tokens"])
            ids_path, logp_path = files[s["name"] + ".topk_ids"], files[s["name"] + ".topk_logp"]
            self.ids.append(np.memmap(ids_path, dtype=id_dtype, mode="r", shape=(n, self.k)))
            self.logp.append(np.memmap(logp_path, dtype=lp_dtype, mode="r", shape=(n, self.k)))
            bases.append(bases[-1] + n)
        self.bases = np.asarray(bases, dtype=np.int64)

    def check_matches(self, data: TokenDataset) -> str | None:
        """Why this cache does not belong to `data`'s train split, or None."""
        have = [(s["name"], int(s["n_tokens"])) for s in self.meta["shards"]]
        want = [(s.name, int(s.starts[-1])) for s in data.shards]
        if have != want or self.meta.get("data_fingerprint") != data.fingerprint():
            return (f"written for other token shards ({self.meta.get('data')}: {len(have)} shards) than "
                    f"{data.folder} ({len(want)} train shards)")
        return None

    def lookup(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids int64 [N, k], log-probs float32 [N, k]) of global token indices `index` [N]."""
        index = np.asarray(index, dtype=np.int64)
        shard = np.searchsorted(self.bases, index, side="right") - 1
        ids = np.empty((len(index), self.k), dtype=np.int64)
        logp = np.empty((len(index), self.k), dtype=np.float32)
        for s in np.unique(shard):
            m = shard == s
            local = index[m] - self.bases[s]
            ids[m] = self.ids[s][local]
            logp[m] = self.logp[s][local]
        return torch.from_numpy(ids), torch.from_numpy(logp)
