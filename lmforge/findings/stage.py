"""`lmforge findings NAME`: one finding of the reports, rerun as a controlled comparison.

    lmforge findings normhead --set data=runs/findings/tokens
    lmforge run recipes/findings.yaml            # the whole suite, its data and a report

Writes into out_dir (default runs/findings/NAME): plan.json (the claim, arms, seeds and the
expected direction, written before the first arm runs), arms/<arm>/seed<k>.json (each arm's
numbers, as they finish: an interrupted finding resumes at the next arm), work/ (the arms'
stage folders; checkpoints dropped once recorded unless keep_checkpoints), result.json (per-arm
mean and standard deviation, the paired comparison and verdict per variant), finding.png, DONE.json.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from lmforge.config import check
from lmforge.findings.context import SCALES
from lmforge.findings.run import run_finding
from lmforge.stagekit.stage import DONE, Arg, Stage


@dataclass
class FindingsConfig:
    name: str = ""                # which finding (see `lmforge findings --help`)
    data: str = ""                # token dataset (lmforge encode output) the pretraining arms train on
    corpus: str = ""              # corpus folder (findings that read documents, SFT or DPO files)
    tokenizer: str = ""           # tokenizer folder (findings that re-encode documents)
    out_dir: str = ""             # default runs/findings/<name>
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])   # every arm runs each seed (>= 3 for a verdict worth reading)
    scale: Literal["toy", "small-125m"] = "toy"   # toy: 1.6M parameters on CPU; small-125m: the same comparison on a GPU
    workers: int = 2              # seeds run in parallel processes of one thread each (1: in this process)
    steps: int = 0                # a pretraining arm's steps; 0: the scale's budget
    amend: str = ""               # why a finding's plan changed after arms were recorded
    keep_checkpoints: bool = False   # keep each arm's weights after its numbers are recorded

    def __post_init__(self):
        from lmforge.findings.catalog import NAMES
        check(self.name in NAMES, "name", f"unknown finding {self.name!r} (known: {', '.join(NAMES)})")
        check(len(set(self.seeds)) == len(self.seeds) and len(self.seeds) >= 1, "seeds", "distinct seeds, at least one")
        check(self.steps >= 0, "steps", "must be >= 0")
        check(self.workers >= 1, "workers", "must be >= 1")
        check(self.scale in SCALES, "scale", f"one of {', '.join(SCALES)}")
        if not self.out_dir:
            self.out_dir = f"runs/findings/{self.name}"


SMOKE_STEPS = 12


def smoke_settings(cfg: FindingsConfig, sizes: dict) -> FindingsConfig:
    """The smoke run checks the machinery, not the claim: 2 seeds (the fewest with a noise
    estimate), a few steps per arm."""
    return dataclasses.replace(cfg, seeds=cfg.seeds[:2], steps=SMOKE_STEPS)


STAGE = Stage(kind="findings", config=FindingsConfig, body=run_finding, inputs=("data", "corpus", "tokenizer"),
              help="rerun one of the reports' findings: baseline vs variants over seeds, with a verdict",
              example="seeds=[0,1,2]", args=(Arg("name", "name", "the finding to run: normhead, schedules, depthwidth, decaydata, ropebase, longfails, growth, stemramp, zloss, dedup, alignment (docs/findings.md)"),),
              outputs=("plan.json", "result.json", "finding.png", DONE), smoke=smoke_settings)
run = STAGE.run
