"""Clean documents -> token shards (lmforge/shards.py format), in parallel.

The main process reads documents in input order and sends batches of texts to worker
processes (`encode_batch`); results come back in submission order, with a bounded
number of batches in flight, so the output is byte-identical for any number of workers
and memory stays flat on any corpus size.

Per document: its tokens plus eos, its domain (`meta["domain"]`, else `default_domain`;
domain ids in order of first appearance), and its split. The validation split is
chosen per domain by hashing the document id (blake2b with a salt), never by position
or randomness, so a document stays in the same split across runs, reorderings and
re-encodings with another tokenizer:
- `val_fraction`: a document is in val when its hash falls in the lowest fraction;
- `val_docs_per_domain`: the N documents with the lowest hashes of each domain, kept
  in a bounded heap while streaming, capped at a tenth of the domain (at least one
  document when it has two or more), so a small domain is not emptied into val.
Documents with no tokens (empty text) are not written; they are counted, with their
ids, in `stats.json`. Shards are closed at `shard_tokens` (a document is never split, so
a single longer document makes a shard of its own). `stats.json`, then `meta.json` are
written last; a folder with `meta.json` is finished and is skipped on a rerun.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from lmforge.config import ConfigError, check, to_dict
from lmforge.io.account import Account, first_rejects
from lmforge.io.atomic import write_json
from lmforge.io.fs import FsPath, check_output, is_url, scratch_dir, upath, url_errors
from lmforge.shards import ShardWriter, write_meta

from .encoding import _doc_batches, _load, encode_texts  # noqa: F401  (encode_texts: public here too)

MAX_EMPTY_IDS = 100


@dataclass
class EncodeConfig:
    """`lmforge tokenizer encode`: documents -> token shards."""
    inputs: list[str] = field(default_factory=list)
    tokenizer: str = ""             # tokenizer folder (or tokenizer.json)
    out_dir: str = ""
    workers: int = 0                # encoding processes; 0 = one per CPU core
    batch_docs: int = 256           # a task sent to a worker holds at most this many documents
    batch_bytes: int = 1_000_000    # ... and about this much text (load balance with big documents)
    shard_tokens: int = 100_000_000  # a shard is closed before it would exceed this
    val_fraction: float = 0.0       # either a fraction of each domain's documents ...
    val_docs_per_domain: int = 50   # ... or a fixed number per domain (0 and 0.0 = no val)
    split_salt: str = "lmforge-val"
    default_domain: str = "default"
    append_eos: bool = True
    specials_in_text: bool = False  # False: "<|im_end|>" inside a document stays plain text
    max_docs: int = 0               # 0 = all
    overwrite: bool = False
    # ray: one task per input file on a Ray cluster, then the shards written in input order
    # (the same bytes as local; resumable per input file); local: worker processes here
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: a private local Ray; "auto": join `ray start`'s cluster

    def __post_init__(self):
        check(len(self.inputs) > 0, "inputs", "give at least one document file or folder")
        check(bool(self.tokenizer), "tokenizer", "required (a tokenizer folder)")
        check(bool(self.out_dir), "out_dir", "required (the token folder to write)")
        check(self.workers >= 0, "workers", "must be >= 0 (0 = one per core)")
        check(self.batch_docs >= 1, "batch_docs", "must be >= 1")
        check(self.batch_bytes >= 1, "batch_bytes", "must be >= 1")
        check(self.shard_tokens >= 1, "shard_tokens", "must be >= 1")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check(self.val_docs_per_domain >= 0, "val_docs_per_domain", "must be >= 0")
        check(not (self.val_fraction > 0 and self.val_docs_per_domain > 0), "val_fraction",
              "set either val_fraction or val_docs_per_domain, not both")
        check(bool(self.default_domain), "default_domain", "must not be empty")
        check(self.max_docs >= 0, "max_docs", "must be >= 0 (0 = all)")
        check(self.executor == "ray" or self.ray_address is None, "ray_address",
              "only used with executor: ray")
        check(self.executor == "local" or self.max_docs == 0, "max_docs",
              "needs executor: local (the Ray tasks encode whole input files)")


# ---------------------------------------------------------------- workers

_TOK = None


def _init_worker(path: str, specials_in_text: bool) -> None:
    from lmforge.workers import quiet_worker
    quiet_worker()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    global _TOK
    _TOK = _load(path, specials_in_text)


def _work(texts: list[str]):
    return encode_texts(_TOK, texts)


class _Encoder:
    """Ordered, bounded parallel map of `encode_texts` over batches (in-process for 1 worker).

    ProcessPoolExecutor rather than multiprocessing.Pool: a worker that dies (out of
    memory, failed start) raises BrokenProcessPool here instead of being respawned
    forever while the stage waits.
    """

    def __init__(self, tok_path: str, workers: int, specials_in_text: bool):
        self.workers = workers
        self.pool = None
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            # spawn: the caller may hold threads (torch, tokenizers' rayon) that fork would copy
            self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                            initializer=_init_worker, initargs=(tok_path, specials_in_text))
        else:
            self.tok = _load(tok_path, specials_in_text)

    def map(self, batches) -> Iterator[tuple]:
        """batches: iterable of (payload, texts) -> yields (payload, (flat, lens)) in order."""
        from concurrent.futures.process import BrokenProcessPool
        try:
            yield from self._map(batches)
        except BrokenProcessPool as e:
            raise RuntimeError(
                f"encode worker processes died ({e}); out of memory, or a script without an "
                f"`if __name__ == '__main__':` guard (workers are spawned); workers=1 runs in-process"
            ) from None

    def _map(self, batches) -> Iterator[tuple]:
        if self.pool is None:
            for payload, texts in batches:
                yield payload, encode_texts(self.tok, texts)
            return
        pending: deque = deque()
        for payload, texts in batches:
            pending.append((payload, self.pool.submit(_work, texts)))
            if len(pending) >= 2 * self.workers + 1:  # bounded: input is read only this far ahead
                p, fut = pending.popleft()
                yield p, fut.result()
        while pending:
            p, fut = pending.popleft()
            yield p, fut.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


# ---------------------------------------------------------------- split and output


def split_hash(doc_id: str, salt: str) -> int:
    """A stable 64-bit hash of a document id (same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(f"{salt}\0{doc_id}".encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big")


class ValSplit:
    """Routes each document to train or val (see module doc); `finish()` flushes the heaps."""

    def __init__(self, fraction: float, per_domain: int, salt: str):
        self.threshold = int(fraction * 2 ** 64)
        self.per_domain, self.salt = per_domain, salt
        self.heaps: dict[int, list] = {}
        self.seen: dict[int, int] = {}

    def route(self, seq: int, doc_id: str, dom: int, toks) -> list[tuple[str, int, object]]:
        if self.threshold:
            return [("val" if split_hash(doc_id, self.salt) < self.threshold else "train", dom, toks)]
        if not self.per_domain:
            return [("train", dom, toks)]
        self.seen[dom] = self.seen.get(dom, 0) + 1
        heap = self.heaps.setdefault(dom, [])
        item = (-split_hash(doc_id, self.salt), -seq, toks)  # max-heap on (hash, seq)
        if len(heap) < self.per_domain:
            heapq.heappush(heap, item)
            return []
        if item[:2] > heap[0][:2]:  # lower (hash, seq) than the current worst candidate
            item = heapq.heapreplace(heap, item)
        return [("train", dom, item[2])]

    def finish(self) -> list[tuple[str, int, object]]:
        out = []
        for dom in sorted(self.heaps):
            items = sorted(self.heaps[dom], key=lambda it: (-it[0], -it[1]))
            n = self.seen[dom]
            k = min(self.per_domain, max(1, n // 10) if n >= 2 else 0)
            train = sorted(items[k:], key=lambda it: -it[1])
            val = sorted(items[:k], key=lambda it: -it[1])
            out += [("train", dom, it[2]) for it in train] + [("val", dom, it[2]) for it in val]
        self.heaps.clear()
        return out


class SplitWriters:
    """One open ShardWriter per split, rotated at `shard_tokens`."""

    def __init__(self, folder: Path, vocab_size: int, shard_tokens: int):
        self.folder, self.vocab_size, self.shard_tokens = folder, vocab_size, shard_tokens
        self.open: dict[str, list] = {}   # split -> [writer, n_tokens]
        self.count: dict[str, int] = {}
        self.entries: list[dict] = []

    def add(self, split: str, toks, dom: int) -> None:
        cur = self.open.get(split)
        if cur is not None and cur[1] > 0 and cur[1] + len(toks) > self.shard_tokens:
            self.entries.append(cur[0].close())
            cur = None
        if cur is None:
            k = self.count.get(split, 0)
            self.count[split] = k + 1
            cur = self.open[split] = [ShardWriter(self.folder, f"{split}-{k:05d}", self.vocab_size, split), 0]
        cur[0].add(toks, dom)
        cur[1] += len(toks)

    def close(self) -> list[dict]:
        for split in sorted(self.open):
            self.entries.append(self.open[split][0].close())
        self.open.clear()
        return sorted(self.entries, key=lambda e: e["name"])


def _resolved(p: str) -> str:
    """An input as recorded in meta.json: an absolute path, or the URL as given."""
    return p if is_url(p) else str(Path(p).resolve())


def parts_dir(out) -> Path:
    """Where the executor's per-file parts go (memory-mapped, so local): OUT/parts, or for an
    output URL a local scratch folder keyed by the URL."""
    return scratch_dir(out) / "parts" if isinstance(out, FsPath) else out / "parts"


def _clear_partial(out: Path) -> None:
    """Remove what an interrupted run left (our own file kinds only, and temp files)."""
    for f in out.iterdir():
        if f.suffix in (".tokens", ".docs", ".domains") or f.name in (
                "meta.json.tmp", "stats.json", "rejects.jsonl") or (f.name.startswith(".") and ".tmp-" in f.name):
            f.unlink()


# ---------------------------------------------------------------- the stage


def finished_encoding(cfg: EncodeConfig) -> dict | None:
    """The stats of a finished encoding in out_dir (meta.json is written last), None when there is
    none or `overwrite`; a ConfigError when it was encoded from other inputs."""
    out = upath(cfg.out_dir)
    with url_errors(out):
        if not (out / "meta.json").is_file() or cfg.overwrite:
            return None
    inputs = [_resolved(p) for p in cfg.inputs]
    before = json.loads((out / "meta.json").read_text()).get("inputs_resolved")
    if before is not None and before != inputs:
        raise ConfigError(f"inputs: {out} already holds tokens encoded from {before}; set overwrite=true "
                          f"to encode {inputs} into it, or choose another out_dir")
    return json.loads((out / "stats.json").read_text()) if (out / "stats.json").is_file() else {}


def encode_folder(cfg: EncodeConfig, progress: bool = True, executor=None) -> dict:
    """Encode `cfg.inputs` into token shards under `cfg.out_dir`; returns the stats (the `encode`
    stage, lmforge.stages.encode). With an executor (lmforge.data's local or Ray executor, picked
    by stages/encode.py), one task per input file encodes it (encode_parts.py): the same bytes."""
    from tqdm import tqdm

    from lmforge.io.documents import ErrorSink
    from lmforge.io.readers import iter_documents, list_files

    from .encode_parts import encode_parts, remove_parts
    from .train import load_tokenizer, tokenizer_file, tokenizer_info, vocab_len

    out = upath(cfg.out_dir)
    inputs = [_resolved(p) for p in cfg.inputs]
    list_files(cfg.inputs, ErrorSink())   # a missing or unsupported input: an error before any writing
    check_output(out)                     # an output URL's bucket and credentials, likewise
    tok_path = tokenizer_file(cfg.tokenizer).resolve()
    tok = load_tokenizer(tok_path)
    info = tokenizer_info(tok_path, tok)
    eos_id = info.get("eos_id")
    if cfg.append_eos and eos_id is None:
        raise ConfigError(f"append_eos: {tok_path} has no known eos token (no lmforge_tokenizer.json, "
                          f"no eos_token in tokenizer_config.json); set append_eos=false")
    vocab = vocab_len(tok)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    _clear_partial(out)

    errors = ErrorSink(out / "rejects.jsonl")
    workers = cfg.workers or os.cpu_count() or 1
    domains: dict[str, int] = {}
    per_dom: dict[str, dict] = {}
    empty_ids: list[str] = []
    n_docs = n_bytes = 0
    eos = np.asarray([eos_id] if cfg.append_eos else [], dtype=np.uint32)
    splitter = ValSplit(cfg.val_fraction, cfg.val_docs_per_domain, cfg.split_salt)
    writers = SplitWriters(out, vocab, cfg.shard_tokens)
    dom_names: list[str] = []

    def write(routed):
        for split, dom, toks in routed:
            writers.add(split, toks, dom)
            d = per_dom[dom_names[dom]]
            d[f"{split}_docs"] += 1
            d[f"{split}_tokens"] += len(toks)

    t0 = time.perf_counter()
    batches = _doc_batches(iter_documents(cfg.inputs, errors), cfg.batch_docs, cfg.batch_bytes,
                           cfg.default_domain, cfg.max_docs)
    with _Encoder(str(tok_path), 1 if executor else workers, cfg.specials_in_text) as enc, \
            tqdm(unit="doc", desc="encode", disable=not progress, smoothing=0.1) as bar:
        encoded = (encode_parts(executor, cfg, tok_path, parts_dir(out), errors) if executor is not None
                   else enc.map(batches))
        for payload, (flat, lens) in encoded:
            ends = np.cumsum(lens)
            for (doc_id, dom_name, nb), end, n in zip(payload, ends, lens):
                if dom_name not in domains:
                    if len(domains) >= 65536:
                        raise ValueError(f"more than 65536 domains (at {dom_name!r}): domain ids are uint16")
                    domains[dom_name] = len(domains)
                    dom_names.append(dom_name)
                    per_dom[dom_name] = {"docs": 0, "bytes": 0, "empty_docs": 0, "train_docs": 0,
                                         "val_docs": 0, "train_tokens": 0, "val_tokens": 0}
                d = per_dom[dom_name]
                d["docs"] += 1
                d["bytes"] += nb
                if n == 0:  # nothing to learn from: counted and listed, not written
                    d["empty_docs"] += 1
                    if len(empty_ids) < MAX_EMPTY_IDS:
                        empty_ids.append(doc_id)
                    continue
                toks = np.concatenate([flat[end - n:end], eos])
                write(splitter.route(n_docs, doc_id, domains[dom_name], toks))
                n_docs += 1
            n_bytes += sum(p[2] for p in payload)
            bar.update(len(payload))
            bar.set_postfix_str(f"{n_bytes / 1e6 / max(time.perf_counter() - t0, 1e-9):.2f} MB/s")
        write(splitter.finish())
    entries = writers.close()
    errors.close()
    seconds = time.perf_counter() - t0
    stats = _stats(per_dom, empty_ids, errors, workers, seconds, entries)
    account = Account("tokenizer encode", stats["docs"] + errors.total, stats["train_docs"] + stats["val_docs"],
                      {**errors.counts, "empty": stats["empty_docs"]}, errors.path, unit="documents")
    stats["account"] = account.line()
    write_json(out / "stats.json", stats)
    account.require_kept(first_rejects(errors.records), what=", ".join(cfg.inputs))   # no meta.json: not done
    write_meta(out, entries, vocab, dom_names, eos_id if cfg.append_eos else None, extra={
        # absolute, and relative to this folder: found from any working directory, also when moved
        "tokenizer": str(tok_path),
        "tokenizer_relative": None if isinstance(out, FsPath) else os.path.relpath(tok_path, out.resolve()),
        "inputs_resolved": inputs,
        "tokenizer_sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest(),
        "padded_vocab_size": info.get("padded_vocab_size"), "pad_id": info.get("pad_id"),
        "bos_id": info.get("bos_id"),
        "split": {"val_fraction": cfg.val_fraction, "val_docs_per_domain": cfg.val_docs_per_domain,
                  "salt": cfg.split_salt},
        "config": {k: v for k, v in to_dict(cfg).items()
                   if k not in ("workers", "overwrite", "out_dir", "executor", "ray_address")}})
    remove_parts(parts_dir(out))  # meta.json is written: the per-file parts are no longer needed
    return stats


def _stats(per_dom, empty_ids, errors, workers, seconds, entries) -> dict:
    tot = {k: sum(d[k] for d in per_dom.values()) for k in
           ("docs", "bytes", "empty_docs", "train_docs", "val_docs", "train_tokens", "val_tokens")}
    # docs read = written to train + written to val + empty (they add up)
    assert tot["docs"] == tot["train_docs"] + tot["val_docs"] + tot["empty_docs"], tot
    return {**tot, "empty_doc_ids": empty_ids, "reader_errors": dict(errors.counts),
            "domains": per_dom, "shards": len(entries), "workers": workers,
            "seconds": round(seconds, 3), "mb_per_s": round(tot["bytes"] / 1e6 / max(seconds, 1e-9), 3)}
