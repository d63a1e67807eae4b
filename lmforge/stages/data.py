"""The `data` stage: the data pipeline (lmforge.data.pipeline) as a recipe stage, with a stable
out/final/ folder of the final shards for the next stages."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from lmforge.data.config import DataConfig
from lmforge.io.atomic import replace_dir
from lmforge.io.fs import FsPath, copy, rmtree, upath
from lmforge.stagekit.data_effects import planted_effect
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.stage import DONE, Arg, Stage

__all__ = ["DataConfig", "STAGE", "run"]


def _link_final(out: Path, shards: list[str]) -> Path:
    """out/final/ = the pipeline's final shards (hard links, else copies): a stable input
    folder for the next stages, whatever the last step's folder is called."""
    if isinstance(out, FsPath):
        return _copy_final(out, shards)
    final = out / "final"
    tmp = out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, p in enumerate(shards):
        dst = tmp / f"{i:05d}-{Path(p).name}"
        try:
            os.link(p, dst)
        except OSError:
            shutil.copy2(p, dst)
    return replace_dir(tmp, final)


def _copy_final(out: FsPath, shards: list[str]) -> FsPath:
    """out/final/ on an object store: server-side copies (no links, and no folder rename: the
    folder is rewritten in place; DONE.json, written after it, says it is complete)."""
    final = out / "final"
    rmtree(final)
    for i, p in enumerate(shards):
        src = upath(p)
        copy(src, final / f"{i:05d}-{src.name}")
    return final


def body(cfg: DataConfig, progress: bool = True) -> dict:
    """The data pipeline; its steps skip themselves by fingerprint, so this always runs it
    (a changed config redoes the changed steps) and then refreshes out/final/ (the contract
    reports it skipped when nothing changed)."""
    from lmforge.data.pipeline import run_pipeline
    if not progress:
        cfg = dataclasses.replace(cfg, progress=False)   # --quiet: no bars (not part of any fingerprint)
    out = upath(cfg.output)
    log = print if progress else (lambda *a, **k: None)
    summary = run_pipeline(cfg, out, log=log)
    last = summary["steps"][-1]
    result = {"docs": last["kept"]["docs"], "bytes": last["kept"]["bytes"],
              "final": str(_link_final(out, summary["final"])), "shards": len(summary["final"]),
              "steps": {s["step"]: s["kept"]["docs"] for s in summary["steps"]}, "account": summary["account"]}
    effect = planted_effect(out, summary)   # recall / precision against the corpus's planted documents
    if effect:
        result["effect"] = effect
    return result


def recipe_check(checker, st, cfg: DataConfig) -> Facts:
    """Its domains are its inputs' (cleaning only removes documents)."""
    inputs = [str(x) for x in (cfg.input if isinstance(cfg.input, list) else [cfg.input])]
    return Facts(domains={"": checker.domains_of(inputs)}, counts_from=inputs)


STAGE = Stage(kind="data", config=DataConfig, body=body, out_key="output", always="steps",
              help="clean, filter and deduplicate raw documents", example="minhash.threshold=0.7",
              args=(Arg("--out", "output", "output folder (same as --set output=...)"),),
              outputs=("final", "summary.json", DONE), check=recipe_check)
run = STAGE.run
