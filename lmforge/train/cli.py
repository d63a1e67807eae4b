"""Subcommands of the training stages."""
from __future__ import annotations

import json
import sys

from lmforge import config


def add_config_args(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config file (optional: all keys can come from --set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=200 (repeatable)")


def add_stage_args(p) -> None:
    """The arguments every stage subcommand takes: config, --set, --quiet."""
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_stage(name: str, cfg, run, quiet: bool) -> int:
    """Run a stage's `run(cfg)`, print its summary (or that it was already done); a diverged
    training run is exit code 3."""
    from lmforge.train.trainer import TrainingDiverged

    try:
        summary = run(cfg, progress=not quiet)
    except TrainingDiverged as e:
        print(f"lmforge {name}: {e}", file=sys.stderr)
        return 3
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to run it again)")
    print(json.dumps(summary, indent=1))
    return 0


def _pretrain(args) -> int:
    from lmforge.train.pretrain import PretrainConfig, run
    return run_stage("pretrain", config.load(PretrainConfig, args.config, args.overrides), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train a model on token shards (resumes automatically)")
    add_stage_args(p)
    p.set_defaults(func=_pretrain)
