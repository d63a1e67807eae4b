"""Token shards: the on-disk format between the tokenizer and the trainer.

A token dataset is a folder:

    meta.json                 {"format": "lmforge-tokens-v1", "dtype": "uint16"|"uint32",
                               "vocab_size": int, "eos_id": int|null, "domains": [str, ...],
                               "shards": [{"name": str, "split": "train"|"val", "n_tokens": int,
                                           "n_docs": int}, ...]}
    NAME.tokens               flat token ids, dtype as above
    NAME.docs                 int64, n_docs + 1 document start offsets (last = n_tokens)
    NAME.domains              uint16, one domain index (into meta["domains"]) per document

All three arrays are raw little-endian binaries readable with `numpy.memmap`, so a
reader maps terabytes without loading them. `meta.json` is written last: a folder
without it is incomplete. The writers also write to a URL (lmforge.io.fs: s3://...; temporary
keys moved into place). The reader maps local files: a URL folder's meta.json is read from the
store each time, and the shards of the split read are fetched once into a local cache keyed by
URL and by each object's size, ETag and time (lmforge.io.fetch), then mapped from there.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.io.account import DataError
from lmforge.io.atomic import atomic_path, temp_sibling, write_json
from lmforge.io.fetch import local_copies
from lmforge.io.fs import FsPath, is_url, open_file, replace, upath, url_errors

FORMAT = "lmforge-tokens-v1"
SHARD_FILES = (".tokens", ".docs", ".domains")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class ShardWriter:
    """Appends documents to one shard; `close()` returns its meta entry."""

    def __init__(self, folder: str | Path, name: str, vocab_size: int, split: str = "train"):
        self.folder, self.name, self.split = upath(folder), name, split
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self._path = self.folder / f"{name}.tokens"
        self._tmp = temp_sibling(self._path)   # renamed into place by close(): no half shard
        self._tokens = open_file(self._tmp, "wb")
        self._starts = [0]
        self._domains: list[int] = []

    def add(self, tokens, domain: int = 0) -> None:
        arr = np.asarray(tokens, dtype=self.dtype)
        if arr.size == 0:
            return
        self._tokens.write(arr.tobytes())
        self._starts.append(self._starts[-1] + arr.size)
        self._domains.append(domain)

    def close(self) -> dict:
        self._tokens.flush()
        if not isinstance(self._tmp, FsPath):   # a store's key appears whole on close
            os.fsync(self._tokens.fileno())
        self._tokens.close()
        for suffix, arr in ((".docs", np.asarray(self._starts, dtype=np.int64)),
                            (".domains", np.asarray(self._domains, dtype=np.uint16))):
            with atomic_path(self.folder / f"{self.name}{suffix}") as tmp:
                arr.tofile(tmp)
        replace(self._tmp, self._path)
        return {"name": self.name, "split": self.split, "n_tokens": int(self._starts[-1]),
                "n_docs": len(self._domains)}


def write_meta(folder: str | Path, shards: list[dict], vocab_size: int, domains: list[str],
               eos_id: int | None = None, extra: dict | None = None) -> None:
    """Write meta.json last (atomically): it marks the dataset complete."""
    folder = upath(folder)
    meta = {"format": FORMAT, "dtype": token_dtype(vocab_size).name, "vocab_size": vocab_size,
            "eos_id": eos_id, "domains": list(domains), "shards": shards, **(extra or {})}
    write_json(folder / "meta.json", meta)


def tokenizer_path(meta: dict, folder: str | Path) -> Path | None:
    """The tokenizer recorded in a token folder's meta.json, found from any working directory:
    the absolute path recorded, else the path relative to the token folder (both moved
    together), else a relative path as recorded by older versions (relative to the directory
    encode ran in). None when none is recorded or none exists."""
    recorded = meta.get("tokenizer")
    if not recorded:
        return None
    candidates = [Path(recorded)]
    if meta.get("tokenizer_relative") and not is_url(folder):
        candidates.insert(0 if not Path(recorded).is_absolute() else 1, Path(folder) / meta["tokenizer_relative"])
    for p in candidates:
        if p.exists():
            return p
    return None


def write_dataset(folder: str | Path, docs: list, vocab_size: int, domains: list[str] | None = None,
                  eos_id: int | None = None, split: str = "train", name: str | None = None) -> None:
    """Small helper (tests, examples): docs is a list of token lists or (tokens, domain) pairs."""
    folder = Path(folder)
    w = ShardWriter(folder, name or f"{split}-00000", vocab_size, split)
    for d in docs:
        toks, dom = d if isinstance(d, tuple) else (d, 0)
        w.add(toks, dom)
    entry = w.close()
    existing = []
    if (folder / "meta.json").exists():
        existing = [s for s in json.loads((folder / "meta.json").read_text())["shards"]
                    if s["name"] != entry["name"]]
    write_meta(folder, existing + [entry], vocab_size, domains or ["default"], eos_id)


@dataclass
class Shard:
    name: str
    split: str
    tokens: np.ndarray   # memmap
    starts: np.ndarray   # int64, n_docs + 1
    domains: np.ndarray  # uint16, n_docs

    @property
    def n_docs(self) -> int:
        return len(self.domains)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.starts[i]:self.starts[i + 1]]


class DamagedTokens(DataError, ValueError):
    """A token folder that is there but damaged (meta.json cut or missing keys, a cut shard, a shard
    index that disagrees with meta.json): bad data (the CLI's exit 5), and still a ValueError for the
    callers that skip a folder they cannot read (the report, the recipe check)."""


def _meta_dict(meta_path, text: str) -> dict:
    """meta.json's object; a damaged one (cut short, not an object, keys missing) is a ValueError
    naming it, not a bare "Expecting ',' delimiter" or KeyError."""
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise DamagedTokens(f"{meta_path}: not readable JSON ({e})") from None
    missing = [k for k in ("dtype", "domains", "shards", "vocab_size") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DamagedTokens(f"{meta_path}: damaged (no {', '.join(missing)})")
    return meta


def _read_meta(meta_path) -> dict:
    """meta.json of a token folder; on a store, read at once (a missing bucket or key is "not a
    token dataset", missing credentials or access denied one line naming the URL)."""
    try:
        if isinstance(meta_path, FsPath):
            with url_errors(meta_path):
                return _meta_dict(meta_path, meta_path.read_text())
        if meta_path.is_file():
            return _meta_dict(meta_path, meta_path.read_text())
    except FileNotFoundError:
        pass
    raise FileNotFoundError(f"{meta_path.parent}: not a token dataset (no meta.json; "
                            f"run `lmforge tokenizer encode` to make one)")


class TokenDataset:
    """Read side of a token folder: shards of one split, memory-mapped."""

    def __init__(self, folder: str | Path, split: str = "train", progress: bool = True):
        """folder: a local folder or a URL (s3://...: its split's shards are fetched into a local
        cache first, a progress bar on stderr for large fetches unless `progress` is False)."""
        self.folder = upath(folder)
        meta_path = self.folder / "meta.json"
        self.meta = _read_meta(meta_path)
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: unknown format {self.meta.get('format')!r}, expected {FORMAT}")
        self.split = split
        self.dtype = np.dtype(self.meta["dtype"])
        self.domain_names: list[str] = list(self.meta["domains"])
        self.shards: list[Shard] = []
        listed = [s for s in self.meta["shards"] if s["split"] == split and s["n_docs"] > 0]
        files = local_copies(self.folder, [s["name"] + ext for s in listed for ext in SHARD_FILES],
                             listed_in=str(meta_path), progress=progress, owner=self)
        for s in listed:
            base = self.folder / s["name"]
            have, need = Path(files[s["name"] + ".tokens"]).stat().st_size, s["n_tokens"] * self.dtype.itemsize
            if have < need:   # np.memmap would say only "mmap length is greater than file size"
                raise DamagedTokens(f"{base}.tokens: {have} bytes, meta.json records {need} (truncated shard?)")
            tokens = np.memmap(files[s["name"] + ".tokens"], dtype=self.dtype, mode="r", shape=(s["n_tokens"],))
            starts = np.fromfile(files[s["name"] + ".docs"], dtype=np.int64)
            domains = np.fromfile(files[s["name"] + ".domains"], dtype=np.uint16)
            if len(starts) != s["n_docs"] + 1 or len(domains) != s["n_docs"] or starts[-1] != s["n_tokens"]:
                raise DamagedTokens(f"{base}: shard index does not match meta.json (truncated shard?)")
            self.shards.append(Shard(s["name"], split, tokens, starts, domains))
        # Global document table: (shard index, doc index) for every document, and its domain.
        self.doc_shard = np.concatenate([np.full(s.n_docs, i, dtype=np.int32) for i, s in enumerate(self.shards)]
                                        or [np.zeros(0, np.int32)])
        self.doc_local = np.concatenate([np.arange(s.n_docs, dtype=np.int64) for s in self.shards]
                                        or [np.zeros(0, np.int64)])
        self.doc_domain = np.concatenate([s.domains.astype(np.int64) for s in self.shards]
                                         or [np.zeros(0, np.int64)])
        # Global token index of each shard's first token (the split's shards end to end, in
        # meta.json order): how cached teacher logits (lmforge.train.teacher_cache) are addressed.
        self.shard_base = np.concatenate([[0], np.cumsum([int(s.starts[-1]) for s in self.shards])]).astype(np.int64)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def n_docs(self) -> int:
        return len(self.doc_shard)

    @property
    def n_tokens(self) -> int:
        return int(sum(s.starts[-1] for s in self.shards))

    def doc(self, i: int) -> np.ndarray:
        return self.shards[self.doc_shard[i]].doc(int(self.doc_local[i]))

    def doc_start(self, i: int) -> int:
        """Global token index (over the split's shards end to end) of document i's first token."""
        s = int(self.doc_shard[i])
        return int(self.shard_base[s] + self.shards[s].starts[int(self.doc_local[i])])

    def doc_len(self, i: int) -> int:
        s = self.shards[self.doc_shard[i]]
        j = int(self.doc_local[i])
        return int(s.starts[j + 1] - s.starts[j])

    def fingerprint(self) -> str:
        """Identifies the data: shard names, splits and sizes (not a full content hash)."""
        key = json.dumps([(s["name"], s["split"], s["n_tokens"], s["n_docs"]) for s in self.meta["shards"]]
                         + [self.meta["domains"], self.meta["vocab_size"]])
        return hashlib.sha256(key.encode()).hexdigest()[:16]
