"""`lmforge distill-cache`: run a teacher once over the student's token shards and keep its top-k
next-token log-probabilities, for `distill.teacher_cache` in a pretrain config.

    lmforge distill-cache --teacher runs/big/pretrain --data runs/tiny/tokens \
        --out runs/tiny/teacher-topk --set k=32 --set window=512

The format, the context each token's distribution was computed with, and the disk it takes
(k x (id bytes + log-prob bytes) per token: 128 bytes at k = 32, float16, vocabulary <= 65536)
are in lmforge.train.teacher_cache. The train split only (validation is the plain LM loss).
Resumable per shard: each shard's two arrays are written under temporary names and renamed,
then its NAME.json; a rerun skips the shards that have one and recomputes the rest (the teacher
is deterministic on one device, so the files are the same). meta.json, then DONE.json, last.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lmforge.config import ConfigError, check, to_dict
from lmforge.io.atomic import atomic_path, read_json, write_json
from lmforge.io.fs import upath
from lmforge.stagekit.stage import Arg, Stage
from lmforge.stagekit.tokendata import open_tokens


@dataclass
class DistillCacheConfig:
    teacher: str = ""              # checkpoint (step folder, run folder) or Hugging Face folder
    data: str = ""                 # the student's token folder (`lmforge tokenizer encode`); its train split
    out_dir: str = "runs/distill-cache"
    k: int = 32                    # token ids kept per position (the rest is one outcome in the loss)
    window: int = 0                # teacher context: documents cut every `window` tokens; 0 = the teacher's max_seq_len
    temperature: float = 1.0       # the log-probs are of softmax(logits / T); training must use the same T
    dtype: str = "float16"         # log-prob storage: float16 (2 bytes) or float32 (4: exact to the live loss)
    rows_per_batch: int = 8        # teacher rows (of `window` tokens) per forward pass
    device: str = "auto"

    def __post_init__(self):
        check(bool(self.teacher), "teacher", "set the teacher checkpoint or Hugging Face folder")
        check(bool(self.data), "data", "set the student's token folder")
        check(self.k >= 1, "k", "must be >= 1")
        check(self.window >= 0, "window", "must be >= 0 (0: the teacher's max_seq_len)")
        check(self.temperature > 0, "temperature", "must be > 0")
        check(self.dtype in ("float16", "float32"), "dtype", "float16 | float32")
        check(self.rows_per_batch >= 1, "rows_per_batch", "must be >= 1")


def _settings(cfg: DistillCacheConfig, teacher_path: Path, data, vocab: int, window: int) -> dict:
    """What the cached values depend on (not out_dir, device or batch rows)."""
    return {"teacher": str(teacher_path.resolve()), "data": str(upath(cfg.data).resolve()),
            "data_fingerprint": data.fingerprint(), "k": cfg.k, "window": window,
            "temperature": cfg.temperature, "dtype": cfg.dtype, "vocab_size": vocab}


def _open(cfg: DistillCacheConfig):
    """(teacher source, train split, window); every mismatch a one-line ConfigError."""
    from lmforge.model.load import open_source, tokenizer_dir_of
    from lmforge.shards import tokenizer_path
    from lmforge.stagekit.teacher import check_same_tokenizer
    try:
        src = open_source(cfg.teacher)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"teacher: {e}") from None
    data = open_tokens(cfg.data, "train")
    vocab = src.model_cfg.vocab_size
    if data.vocab_size != vocab:
        raise ConfigError(f"teacher: {src.path} has {vocab} token ids, the data {cfg.data} {data.vocab_size}; "
                          f"the cache needs the student's tokenizer")
    check_same_tokenizer(tokenizer_dir_of(src.path), tokenizer_path(data.meta, data.folder), cfg.teacher)
    check(cfg.k <= vocab, "k", f"{cfg.k} exceeds the vocabulary ({vocab})")
    window = cfg.window or src.model_cfg.max_seq_len
    check(window <= src.model_cfg.max_seq_len, "window",
          f"{window} exceeds the teacher's max_seq_len {src.model_cfg.max_seq_len}")
    return src, data, window


def body(cfg: DistillCacheConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from lmforge.device import resolve_device
    from lmforge.train.teacher_cache import FORMAT, bytes_per_token, shard_paths, teacher_topk
    src, data, window = _open(cfg)
    vocab = src.model_cfg.vocab_size
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg, src.path, data, vocab, window)
    have = out / "settings.json"
    if have.is_file() and read_json(have) != settings:
        old = read_json(have)
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
        raise ConfigError(f"out_dir: {out} holds a cache with other settings ({diff}); use another out_dir "
                          f"or delete it")
    write_json(have, settings)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    device = resolve_device(cfg.device)
    teacher = None
    total = int(data.shard_base[-1])
    bar = tqdm(total=total, unit="tok", desc="teacher top-k", disable=not progress, file=sys.stderr)
    entries, computed = [], 0
    for shard in data.shards:
        ids_path, logp_path, done_path = shard_paths(out, shard.name)
        n = int(shard.starts[-1])
        entry = {"name": shard.name, "n_tokens": n}
        if done_path.is_file() and read_json(done_path) == {**entry, "settings": key}:
            bar.update(n)
        else:
            teacher = teacher or src.build(device)
            ids, logp = teacher_topk(teacher, shard, window, cfg.k, cfg.temperature, vocab, cfg.rows_per_batch,
                                     device, cfg.dtype, progress=bar.update)
            for path, arr in ((ids_path, ids), (logp_path, logp)):
                with atomic_path(path) as tmp:
                    arr.tofile(tmp)
            write_json(done_path, {**entry, "settings": key})
            computed += 1
        entries.append(entry)
    bar.close()
    per_token = bytes_per_token(cfg.k, vocab, cfg.dtype)
    write_json(out / "meta.json", {"format": FORMAT, **settings, "settings": key, "bytes_per_token": per_token,
                                   "shards": entries})
    return {"shards": len(entries), "shards_computed": computed, "tokens": total, "k": cfg.k, "window": window,
            "bytes_per_token": per_token, "bytes": per_token * total, "config": to_dict(cfg)}


def show(cfg: DistillCacheConfig, summary: dict) -> None:
    print(f"{summary['tokens']} tokens in {summary['shards']} shards ({summary.get('shards_computed', 0)} computed "
          f"now), top {summary['k']}, {summary['bytes_per_token']} bytes per token: "
          f"{summary['bytes'] / 1e6:.1f} MB in {cfg.out_dir}")


STAGE = Stage(kind="distillcache", config=DistillCacheConfig, body=body, command="distill-cache",
              help="run a teacher over the student's token shards and cache its top-k log-probs "
                   "(for distill.teacher_cache)",
              example="k=32",
              args=(Arg("--teacher", "teacher", "teacher checkpoint, run folder or Hugging Face folder"),
                    Arg("--data", "data", "the student's token folder (its train split is cached)"),
                    Arg("--out", "out_dir", "output folder")),
              inputs=("teacher", "data"), outputs=("meta.json", "settings.json", "DONE.json"), show=show)
run = STAGE.run
