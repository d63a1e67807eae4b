"""A stage is one declared object: `STAGE = Stage(...)` in its module under lmforge.stages.

The descriptor says everything the rest of lmforge needs to know about a stage kind, so the
recipe registry, the command line, the recipe checks, the smoke run and the docs read it
instead of switching on stage names:

    kind, config     the recipe `kind` and its typed config class
    body             the work: body(cfg, progress) -> summary dict
    help, example    the CLI's one-line help and a `--set` example valid for the config
    command          the CLI words ("tokenizer train"); `lmforge COMMAND` runs `Stage.run`
    args             extra command-line options, each a config key (--data FILE -> data += [FILE])
    inputs           config keys naming input files, checked before any work (a missing file is
                     one line, before model loading and progress bars)
    outputs          what the next stages read from out_dir (docs, checks)
    distributed      under torchrun every rank runs it (training), else rank 0 only
    finished         the finished output's summary, or None (default: out_dir/DONE.json; the
                     report: DONE.json only while its inputs' fingerprint is unchanged)
    always           run even when finished: "redo" (always redraw) or
                     "steps" (the data pipeline: its steps skip themselves by fingerprint, and a
                     rerun that changed nothing is reported skipped)
    check, smoke     hooks of `lmforge run --check` and `--smoke` (see lmforge.recipe)
    show             what the command prints after its one-line summary

`Stage.run` is the one stage contract: take out_dir's lock, skip a finished output, else run
the body (an interrupted stage resumes from what it left) and write DONE.json last.

No torch here: `lmforge data` and the tokenizer commands import this module.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmforge.config import ConfigError
from lmforge.io.atomic import read_json, sweep_temps, write_json
from lmforge.io.fs import FsPath, is_url, scratch_dir, upath
from lmforge.stagekit.lock import RunLock

DONE = "DONE.json"


@dataclass(frozen=True)
class Arg:
    """A command-line option (or positional, `name` without dashes) that sets config `key`:
    appended to a list key when `append`, else the key's value (given --set still wins)."""
    name: str
    key: str
    help: str
    append: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute: the positional's name, else the option's (--build-pairs: build_pairs)."""
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Stage:
    kind: str
    config: type
    body: Callable[[Any, bool], dict]
    help: str
    example: str
    command: str = ""                       # "" = the kind itself
    args: tuple[Arg, ...] = ()
    inputs: tuple[str, ...] = ()            # dotted config keys naming input files or folders
    outputs: tuple[str, ...] = (DONE,)
    out_key: str = "out_dir"
    distributed: bool = False
    finished: Callable[[Any], dict | None] | None = None
    always: str = ""                        # "", "redo" or "steps" (above)
    check: Callable[[Any, Any, Any], Any] | None = None   # (checker, recipe stage, cfg) -> stagekit.facts.Facts
    smoke: Callable[[Any, dict], Any] | None = None   # (cfg, smoke sizes) -> cfg: settings beyond the scale
    show: Callable[[Any, dict], None] | None = None   # (cfg, summary): the command's extra output
    extra: dict = field(default_factory=dict)         # free-form facts for the report (e.g. objective)

    @property
    def words(self) -> list[str]:
        return (self.command or self.kind).split()

    def out_dir(self, cfg) -> Path:
        return upath(getattr(cfg, self.out_key) or cfg.out_dir)   # a URL: lmforge.io.fs.FsPath   # the report's `out` defaults to RUN/report

    def done(self, cfg) -> dict | None:
        """The finished output's summary (marked skipped), or None when it has not finished."""
        found = self.finished(cfg) if self.finished is not None else done_summary(self.out_dir(cfg))
        return None if found is None else {**found, "skipped": True}

    def run(self, cfg, progress: bool = True) -> dict:
        """The stage contract: lock out_dir, skip when finished, else run and write DONE.json last."""
        out = self.out_dir(cfg)
        if not isinstance(out, FsPath) and not out.exists():
            check_inputs(cfg, self.inputs)    # nothing to skip yet: refused before out_dir (or its parent) is made
        with _stage_lock(out):
            before = self.done(cfg)
            if before is not None and not self.always:
                return before
            check_inputs(cfg, self.inputs)
            if is_main_rank() and not isinstance(out, FsPath):
                sweep_temps(out)              # temp files of a killed attempt (io.atomic)
            summary = dict(self.body(cfg, progress) or {})
            if summary.pop("skipped", False):     # the body found its own finished output
                return {**summary, "skipped": True}
            if is_main_rank():
                write_done(out, summary)
            if self.always == "steps" and before is not None and {k: before.get(k) for k in summary} == summary:
                return {**summary, "skipped": True}
            return summary


def check_inputs(cfg, keys: tuple[str, ...]) -> None:
    """A ConfigError (CLI: one line, exit 2) naming the key and file of the first missing input."""
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            path = getattr(item, "path", item)     # a file with read options (align.formats.DataFile)
            if isinstance(path, str) and path and not is_url(path) and not Path(path).exists():
                raise ConfigError(f"{key}: {path}: no such file or folder")


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def is_main_rank() -> bool:
    """Rank 0 under torchrun (every rank runs a training stage; rank 0 alone writes its files)."""
    return int(os.environ.get("RANK", "0")) == 0


def _stage_lock(out: Path):
    """out_dir's lock, taken by rank 0 only (the other ranks of a distributed stage share it)."""
    if not is_main_rank():
        return _NoLock()
    if isinstance(out, FsPath):   # no O_EXCL on an object store: a lock of this machine only
        return RunLock(scratch_dir(out), log=lambda m: print(m, file=sys.stderr))
    return RunLock(out, log=lambda m: print(m, file=sys.stderr))


def done_summary(out_dir: str | Path) -> dict | None:
    """The finished stage's summary, or None when it has not finished.

    DONE.json is written atomically now, but one cut short by a kill in an older version
    (or by a full disk) must not fail every rerun: the stage then runs again and, being
    resumable, rewrites it."""
    done = upath(out_dir) / DONE
    if not done.is_file():
        return None
    try:
        summary = read_json(done)
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        print(f"warning: {done} is unreadable ({e}); running the stage again to finish it", file=sys.stderr)
        return None
    return {**summary, "skipped": True}


def write_done(out_dir: str | Path, summary: dict) -> dict:
    write_json(upath(out_dir) / DONE, summary)
    return summary
