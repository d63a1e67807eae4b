"""`lmforge grow`: depth up-scaling subcommand."""
from __future__ import annotations

import json

from lmforge import config
from lmforge.train.cli import add_config_args


def _grow(args) -> int:
    from lmforge.grow import GrowConfig, run
    cfg = config.load(GrowConfig, args.config, args.overrides)
    summary = run(cfg, progress=not args.quiet)
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to grow again)")
    print(json.dumps(summary, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("grow", help="depth up-scaling: measure layer similarity, duplicate a block of layers")
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_grow)
