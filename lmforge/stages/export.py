"""The `export` stage: a checkpoint -> a Hugging Face folder (see lmforge.export.hf for the
folder's contents and which transformers architecture each model becomes).

    lmforge export runs/tiny/sft runs/tiny/export [--dtype bfloat16]

Writes out_dir/DONE.json last; a rerun skips; an interrupted export is redone whole.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lmforge.config import check
from lmforge.export.hf import DONE, DTYPES, export_info
from lmforge.io.atomic import read_json, write_json


@dataclass
class ExportConfig:
    """A checkpoint (step-N folder, or a run folder: its latest) -> HF folder."""
    checkpoint: str = ""
    out_dir: str = ""
    dtype: str | None = None         # float32 / bfloat16 / float16; None = the checkpoint's
    tokenizer: str | None = None     # tokenizer folder; None = RUN_DIR/tokenizer beside the checkpoint

    def __post_init__(self):
        check(bool(self.checkpoint), "checkpoint", "required (a step-N folder or a run folder)")
        check(bool(self.out_dir), "out_dir", "required (the folder to write)")
        check(self.dtype is None or self.dtype in DTYPES, "dtype",
              f"{self.dtype!r} is not one of {', '.join(DTYPES)}")


def run(cfg: ExportConfig, progress: bool = True) -> dict:
    """The export stage (lmforge.stages contract): writes out_dir/DONE.json; a rerun skips."""
    out = Path(cfg.out_dir)
    if (out / DONE).is_file():
        return {**read_json(out / DONE), "skipped": True}
    t0 = time.perf_counter()
    info = export_info(cfg.checkpoint, out, cfg.dtype, cfg.tokenizer)   # an interrupted export is redone
    summary = {**info, "out_dir": str(out), "seconds": round(time.perf_counter() - t0, 2),
               "files": sorted(p.name for p in out.iterdir() if p.is_file())}
    if progress:
        print(f"exported {info['arch']} ({info['n_params']:,} parameters) to {out}")
    write_json(out / DONE, summary)
    return summary
