"""The `encode` stage (`lmforge tokenizer encode`, recipe kind `encode`): documents -> token
shards (lmforge.tokenizer.encode), on worker processes here (`executor: local`) or as one
Ray task per input file (`executor: ray`, the data pipeline's Ray executor); both write the
same bytes. This file only picks the executor: the tokenizer layer may not import data/."""
from __future__ import annotations

import os
from types import SimpleNamespace

from lmforge.tokenizer.encode import EncodeConfig, run_encode

__all__ = ["EncodeConfig", "run_encode_stage"]


def run_encode_stage(cfg: EncodeConfig, progress: bool = True) -> dict:
    if cfg.executor == "local":
        return run_encode(cfg, progress)
    from lmforge.data.executors import make_executor

    executor = make_executor(SimpleNamespace(executor="ray", ray_address=cfg.ray_address,
                                             workers=cfg.workers or os.cpu_count() or 1,
                                             progress=progress))
    try:
        return run_encode(cfg, progress, executor=executor)
    finally:
        executor.close()
