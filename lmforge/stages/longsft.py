"""The `longsft` stage: long-context instruction data for Index-1.9B-32K's long SFT.

    kind: longsft
    config: {inputs: ["${data}/final"], general: ["${corpus}/sft.jsonl"], tokenizer: "${tokenizer}",
             long_count: 30000, general_count: 50000, length_range: [16384, 32000]}

Writes out_dir/long.jsonl (retrieval conversations over real documents, lmforge.align.long_sft),
out_dir/general.jsonl (general instructions drawn from `general`: Index mixed ~30K long with
~50K general ones), stats.json, rejects.jsonl (the bad lines of `inputs` and `general`, each with
its file and line; the stage ends with their account) and DONE.json. An `sft` stage then trains
on both files.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lmforge.align.long_sft import TASKS, Doc, iter_long_conversations, length_stats, long_pool
from lmforge.config import ConfigError, check
from lmforge.io.atomic import atomic_open, write_json, write_jsonl
from lmforge.io.account import Account, DataError, first_rejects
from lmforge.io.documents import ErrorSink
from lmforge.io.readers import iter_documents
from lmforge.stagekit.runner import reject_sink
from lmforge.stagekit.stage import DONE, Stage


@dataclass
class LongSFTConfig:
    inputs: list[str] = field(default_factory=list)     # document files or folders (the context text)
    general: list[str] = field(default_factory=list)    # general conversation jsonl files
    tokenizer: str = ""                                 # tokenizer folder (measures lengths)
    out_dir: str = "runs/longsft"
    long_count: int = 30000                             # Index-1.9B-32K: ~30K long instructions
    general_count: int = 50000                          # ... and ~50K general ones
    length_range: list[int] = field(default_factory=lambda: [16384, 32000])   # context tokens
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    max_docs: int = 200000                              # documents read for the pool
    seed: int = 0

    def __post_init__(self):
        check(bool(self.inputs), "inputs", "give document files or folders for the long contexts")
        check(bool(self.tokenizer), "tokenizer", "set the tokenizer folder (lengths are measured in its tokens)")
        check(self.long_count >= 1 and self.general_count >= 0, "long_count", "must be >= 1 (general_count >= 0)")
        check(len(self.length_range) == 2 and 0 < self.length_range[0] <= self.length_range[1], "length_range",
              f"expected [min, max] tokens, got {self.length_range}")
        for t in self.tasks:
            check(t in TASKS, "tasks", f"unknown task {t!r} (known: {', '.join(TASKS)})")


def _pool(cfg: LongSFTConfig, errors: ErrorSink) -> list[Doc]:
    docs = []
    for d in iter_documents(cfg.inputs, errors):
        meta = d.get("meta") or {}
        docs.append(Doc(str(meta.get("title") or meta.get("path") or d["id"]), d["text"]))
        if len(docs) >= cfg.max_docs:
            break
    return docs


def _general(cfg: LongSFTConfig, errors: ErrorSink) -> tuple[list[dict], int]:
    """(up to general_count conversations drawn, how many were usable)."""
    from lmforge.align.sft_data import iter_jsonl
    rows, stats = [], Counter()
    for p, n, rec in iter_jsonl(cfg.general, errors, stats):
        if isinstance(rec.get("messages"), list):
            rows.append(rec)
        else:   # kept aside, not dropped without a word
            errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False, default=str)[:2000],
                       detail="no `messages` list")
    rng = random.Random(cfg.seed)
    rng.shuffle(rows)
    return rows[: cfg.general_count], len(rows)


def _write_counted(path: Path, convs, count_tokens, count: int, progress: bool) -> list[int]:
    """Write the conversations as they are made (through a temporary name, with a progress bar:
    30K contexts of 16-32K tokens are gigabytes and minutes) and count each context's tokens.
    Returns the counts."""
    lengths: list[int] = []
    with atomic_open(path) as f, tqdm(total=count, desc="longsft", unit="conv", disable=not progress) as bar:
        for c in convs:
            lengths.append(count_tokens(c["messages"][0]["content"]))
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
            bar.update()
    return lengths


def body(cfg: LongSFTConfig, progress: bool = True) -> dict:
    from lmforge.tokenizer.train import load_tokenizer
    out = Path(cfg.out_dir)
    try:
        tok = load_tokenizer(cfg.tokenizer)
    except (OSError, ValueError) as e:
        raise ConfigError(f"tokenizer: {e}") from None
    cache: dict[int, int] = {}

    def n_tokens(text: str) -> int:
        key = hash(text)
        if key not in cache:
            cache[key] = len(tok.encode(text, add_special_tokens=False).ids)
        return cache[key]

    errors = reject_sink(out)   # bad lines of inputs and general: rejects.jsonl (they were only logged)
    try:
        pool = _pool(cfg, errors)
    except FileNotFoundError as e:
        raise ConfigError(f"inputs: {e}") from None
    account = Account.from_stats("longsft", {"kept": len(pool), **errors.counts}, errors.path, unit="documents")
    account.read = len(pool) + errors.total
    try:
        account.require_kept(first_rejects(errors.records), what=", ".join(map(str, cfg.inputs)))   # exit 5
    except DataError:
        errors.close()   # the rejects in place for the user to read
        raise
    try:
        pool = long_pool(pool)
    except ValueError as e:
        raise ConfigError(f"inputs: {e}") from None
    stats: dict = {}
    convs = iter_long_conversations(pool, cfg.long_count, tuple(cfg.length_range), n_tokens, cfg.seed,
                                    tuple(cfg.tasks), stats)
    lengths = _write_counted(out / "long.jsonl", convs, lambda t: len(tok.encode(t, add_special_tokens=False).ids),
                             cfg.long_count, progress)
    stats.update(length_stats(lengths))
    before = Counter(errors.counts)
    general, usable = _general(cfg, errors) if cfg.general and cfg.general_count else ([], 0)
    errors.close()
    general_rejects = {k: v - before.get(k, 0) for k, v in errors.counts.items() if v - before.get(k, 0)}
    lines = [account.line()]
    if cfg.general and cfg.general_count:
        lines.append(Account("longsft general", usable + sum(general_rejects.values()), usable,
                             general_rejects, errors.path).line())
    write_jsonl(out / "general.jsonl", general)
    stats = {**stats, "general": len(general), "general_asked": cfg.general_count}
    write_json(out / "stats.json", stats)
    if progress:
        print(f"longsft: {len(lengths)} long conversations ({stats['min_tokens']}-{stats['max_tokens']} tokens), "
              f"{len(general)} general")
    return ({"long": len(lengths), "general": len(general), "files": [str(out / "long.jsonl"),
                                                                                     str(out / "general.jsonl")],
                            "mean_tokens": round(stats["mean_tokens"], 1), "account": "\n".join(lines)})


STAGE = Stage(kind="longsft", config=LongSFTConfig, body=body,
              help="long-context SFT data: conversations built from long documents, plus general ones",
              example="long_count=200", outputs=("long.jsonl", "general.jsonl", DONE))
run = STAGE.run
