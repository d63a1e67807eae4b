"""The `export` stage: a checkpoint -> a Hugging Face folder (see lmforge.export.hf for the
folder's contents and which transformers architecture each model becomes).

    lmforge export runs/tiny/sft runs/tiny/export [--dtype bfloat16]
    lmforge export runs/tiny/sft-lora runs/tiny/base --adapter runs/tiny/adapter

With `adapter` (a LoRA checkpoint only) out_dir holds the base model, adapters off, and
`adapter` the adapters in PEFT's format (lmforge.export.adapter); without it a LoRA
checkpoint is exported merged. Writes out_dir/DONE.json last; a rerun of the same kind of
export skips; an interrupted export, or one of the other kind, is redone whole.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lmforge.config import check
from lmforge.export.adapter import FILES as ADAPTER_FILES
from lmforge.export.adapter import export_with_adapter
from lmforge.export.hf import DONE, DTYPES, export_info
from lmforge.io.atomic import read_json
from lmforge.stagekit.stage import Stage


@dataclass
class ExportConfig:
    """A checkpoint (step-N folder, or a run folder: its latest) -> HF folder."""
    checkpoint: str = ""
    out_dir: str = ""
    dtype: str | None = None         # float32 / bfloat16 / float16; None = the checkpoint's
    tokenizer: str | None = None     # tokenizer folder; None = RUN_DIR/tokenizer beside the checkpoint
    adapter: str | None = None       # write a LoRA checkpoint's adapters to this folder in PEFT's format

    def __post_init__(self):
        check(bool(self.checkpoint), "checkpoint", "required (a step-N folder or a run folder)")
        check(bool(self.out_dir), "out_dir", "required (the folder to write)")
        check(self.dtype is None or self.dtype in DTYPES, "dtype",
              f"{self.dtype!r} is not one of {', '.join(DTYPES)}")
        # transformers loads a folder holding adapter_config.json as base + adapter: keep them apart
        check(not self.adapter or Path(self.adapter).resolve() != Path(self.out_dir).resolve(), "adapter",
              "must be another folder than out_dir (the base model goes to out_dir)")


def _finished(cfg: ExportConfig) -> dict | None:
    """The DONE summary of an export of the same kind (merged, or base + this adapter folder)."""
    out = Path(cfg.out_dir)
    if not (out / DONE).is_file():
        return None
    summary = read_json(out / DONE)
    adapter = str(Path(cfg.adapter).resolve()) if cfg.adapter else None
    if summary.get("adapter") != adapter:
        return None
    if adapter and not all((Path(adapter) / f).is_file() for f in ADAPTER_FILES):
        return None
    return summary


def body(cfg: ExportConfig, progress: bool = True) -> dict:
    """The export (the contract writes out_dir/DONE.json; a rerun of the same kind skips)."""
    out = Path(cfg.out_dir)
    t0 = time.perf_counter()
    if cfg.adapter:   # an interrupted export is redone
        info = export_with_adapter(cfg.checkpoint, out, cfg.adapter, cfg.dtype, cfg.tokenizer)
    else:
        info = export_info(cfg.checkpoint, out, cfg.dtype, cfg.tokenizer)
    summary = {**info, "out_dir": str(out), "seconds": round(time.perf_counter() - t0, 2),
               "files": sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))}
    if progress:
        what = " base (adapters off) + PEFT adapter" if cfg.adapter else ""
        print(f"exported {info['arch']}{what} ({info['n_params']:,} parameters) to {out}")
    return summary


STAGE = Stage(kind="export", config=ExportConfig, body=body, finished=_finished,
              help="checkpoint -> Hugging Face folder (config.json, model.safetensors, tokenizer files)",
              example="dtype=bfloat16", outputs=("config.json", "model.safetensors", "tokenizer.json", DONE))
run = STAGE.run
