"""`lmforge report RUN_DIR [--out DIR]`."""
from __future__ import annotations

from lmforge import config
from lmforge.cli.common import add_help_config


def _report(args) -> int:
    from lmforge.stages.report import ReportConfig, run
    cfg = config.load(ReportConfig, None, [f"run_dir={args.run_dir}", *([f"out={args.out}"] if args.out else []),
                                           *args.overrides])
    run(cfg, progress=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="write report.html / report.md with plots of a run folder")
    p.add_argument("run_dir", help="a recipe run folder (with recipe.json) or one stage's folder")
    p.add_argument("--out", help="output folder (default RUN_DIR/report)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (--help-config lists them; repeatable)")
    add_help_config(p, "report")
    p.set_defaults(func=_report)
