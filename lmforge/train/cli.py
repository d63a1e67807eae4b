"""Subcommands of the training stages."""
from __future__ import annotations

import json
import sys

from lmforge import config


def add_config_args(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config file (optional: all keys can come from --set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=200 (repeatable)")


def _pretrain(args) -> int:
    from lmforge.train.pretrain import PretrainConfig, run
    from lmforge.train.trainer import TrainingDiverged
    cfg = config.load(PretrainConfig, args.config, args.overrides)
    try:
        summary = run(cfg, progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"lmforge pretrain: {e}", file=sys.stderr)
        return 3
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to train again)")
    print(json.dumps(summary, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train a model on token shards (resumes automatically)")
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_pretrain)
