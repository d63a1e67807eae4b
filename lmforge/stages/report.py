"""The `report` stage, `lmforge report RUN_DIR`: one HTML page (and Markdown twin) that explains a run.

Reads RUN_DIR/recipe.json when present (else RUN_DIR as one stage folder, else its
subfolders) and draws, for whatever exists: headlines (each number beside its baseline),
losses with one axis per quantity kind (LM loss, perplexity, DPO loss / rewards / accuracy),
LR / grad-norm / throughput, per-domain validation loss against unigram and untrained
baselines, the data funnel (stats.json of each data step, keep rates by domain), target vs
realised mixture with its sampling spread (config.json + mixture.json), the SFT data funnel
(sftdata.json) and task-mix grid (grid.json), eval tables (eval.json) with baselines, the
needle heatmap (needle.json) and the grow layer similarity. Missing stages are listed and
skipped, so a partial run still gets a report (docs/eval.md, "Report").

Output (default RUN_DIR/report/): report.html (one file: plots and the CJK font inside it),
report.md (linking the *.png beside it), *.png. A report whose inputs are unchanged since it
was written (lmforge.report.inputs: recipe.json and the stage folders' files by size and
modification time, and the report code) is skipped; delete its DONE.json to draw it anyway.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.config import check
from lmforge.stagekit.stage import Arg, Stage, done_summary


@dataclass
class ReportConfig:
    run_dir: str = ""
    out: str | None = None            # default: RUN_DIR/report

    def __post_init__(self):
        check(bool(self.run_dir), "run_dir", "set the run folder to report on")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run_dir) / "report"


def up_to_date(cfg: ReportConfig) -> dict | None:
    """The report in out_dir when it was drawn from the same inputs (a rerun of a finished recipe
    does not redraw it), else None."""
    from lmforge.report.inputs import fingerprint

    done = done_summary(cfg.out_dir)
    if done and done.get("inputs") == fingerprint(cfg.run_dir, cfg.out_dir) and (cfg.out_dir / "report.html").is_file():
        return done
    return None


def body(cfg: ReportConfig, progress: bool = True) -> dict:
    """Write the report, with the fingerprint of the inputs it was drawn from."""
    from lmforge.report.build import build_report
    from lmforge.report.inputs import fingerprint

    inputs = fingerprint(cfg.run_dir, cfg.out_dir)
    summary = {**build_report(cfg.run_dir, cfg.out_dir), "inputs": inputs}
    if progress:
        print(f"report: {summary['html']} ({len(summary['images'])} plots; sections {', '.join(summary['sections'])})")
    return summary


STAGE = Stage(kind="report", config=ReportConfig, body=body, out_key="out", finished=up_to_date, inputs=("run_dir",),
              help="write report.html / report.md with plots of a run folder", example="out=runs/tiny/report",
              args=(Arg("run_dir", "run_dir", "a recipe run folder (with recipe.json) or one stage's folder"),
                    Arg("--out", "out", "output folder (default RUN_DIR/report)")),
              outputs=("report.html", "report.md", "DONE.json"))
run = STAGE.run
