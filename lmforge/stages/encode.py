"""The `encode` stage, `lmforge tokenizer encode`: documents -> token shards with a train/val split per
domain (lmforge.tokenizer.encode), on worker processes here (`executor: local`) or as one Ray task per
input file (`executor: ray`, the data pipeline's Ray executor); both write the same bytes. This file
picks the executor: the tokenizer layer may not import data/. A finished folder (meta.json) skips
unless `overwrite`; one encoded from other inputs is refused."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from lmforge.stagekit.facts import Facts
from lmforge.stagekit.stage import DONE, Stage
from lmforge.tokenizer.encode import EncodeConfig, encode_folder, finished_encoding


def encode(cfg: EncodeConfig, progress: bool = True) -> dict:
    if cfg.executor == "local":
        return encode_folder(cfg, progress)
    from lmforge.data.executors import make_executor

    executor = make_executor(SimpleNamespace(executor="ray", ray_address=cfg.ray_address,
                                             workers=cfg.workers or os.cpu_count() or 1,
                                             progress=progress))
    try:
        return encode_folder(cfg, progress, executor=executor)
    finally:
        executor.close()


def _show(cfg: EncodeConfig, summary: dict) -> None:
    if summary.get("empty_docs") and not summary.get("skipped"):
        print(f"note: {summary['empty_docs']} empty documents not written (ids in stats.json)", file=sys.stderr)


def recipe_check(checker, st, cfg: EncodeConfig) -> Facts:
    """Its vocabulary and domains (a finished encoding's from its meta.json), and a validation
    split the documents can fill (known once the data has been counted)."""
    counts = checker.domain_counts(list(cfg.inputs))
    for d, n in sorted((counts or {}).items()):
        if cfg.val_docs_per_domain and n <= cfg.val_docs_per_domain and cfg.val_fraction == 0:
            checker.problem(st, "val_docs_per_domain", f"{cfg.val_docs_per_domain} validation documents asked "
                                                       f"for domain {d!r}, which has only {n}: none would be "
                                                       "left to train on")
    meta = Path(st.out_dir) / "meta.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return Facts(vocab=m.get("vocab_size"), domains={"": set(m.get("domains", []))})
    return Facts(vocab=checker.facts_of(cfg.tokenizer).vocab, domains={"": checker.domains_of(list(cfg.inputs))})


STAGE = Stage(kind="encode", config=EncodeConfig, body=encode, finished=finished_encoding,
              command="tokenizer encode", help="documents -> token shards (train/val split per domain)",
              example="val_fraction=0.01", outputs=("meta.json", "stats.json", DONE), show=_show,
              check=recipe_check)
run = STAGE.run
