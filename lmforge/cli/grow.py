"""`lmforge grow`: depth up-scaling subcommand."""
from __future__ import annotations

from lmforge import config
from lmforge.cli.common import add_stage_args, run_stage


def _grow(args) -> int:
    from lmforge.stages.grow import GrowConfig, run
    return run_stage("grow", config.load(GrowConfig, args.config, args.overrides), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("grow", help="depth up-scaling: measure layer similarity, duplicate a block of layers")
    add_stage_args(p, "init.from_checkpoint=runs/pretrain", "grow")
    p.set_defaults(func=_grow)
