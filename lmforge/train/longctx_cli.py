"""`lmforge longctx` (continued pretraining at a longer context) and `lmforge needle`
(needle-in-a-haystack eval)."""
from __future__ import annotations

import json
import sys

from lmforge import config
from lmforge.train.cli import add_config_args


def _longctx(args) -> int:
    from lmforge.train.longctx import LongCtxConfig, run
    from lmforge.train.trainer import TrainingDiverged
    cfg = config.load(LongCtxConfig, args.config, args.overrides)
    try:
        summary = run(cfg, progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"lmforge longctx: {e}", file=sys.stderr)
        return 3
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to train again)")
    print(json.dumps(summary, indent=1))
    return 0


def _needle(args) -> int:
    from lmforge.eval.needle import NeedleConfig, run
    cfg = config.load(NeedleConfig, args.config, args.overrides)
    summary = run(cfg, progress=not args.quiet)
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to evaluate again)")
    print(json.dumps(summary, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("longctx", help="continued pretraining at a longer context with a new RoPE base "
                                       "(Index-1.9B-32K defaults; resumes automatically)")
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_longctx)
    p = sub.add_parser("needle", help="needle-in-a-haystack eval: retrieval over prompt length x depth "
                                      "(needle.json, needle.md, needle.png)")
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_needle)
