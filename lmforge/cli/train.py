"""`lmforge pretrain`."""
from __future__ import annotations

from lmforge import config
from lmforge.cli.common import add_stage_args, run_stage


def _pretrain(args) -> int:
    from lmforge.stages.pretrain import PretrainConfig, run
    return run_stage("pretrain", config.load(PretrainConfig, args.config, args.overrides), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train a model on token shards (resumes automatically)")
    add_stage_args(p, "train.steps=200", "pretrain")
    p.set_defaults(func=_pretrain)
