"""`lmforge longctx` (continued pretraining at a longer context), `lmforge needle`
(needle-in-a-haystack eval) and `lmforge longstudy` (the long-context study)."""
from __future__ import annotations

from lmforge import config
from lmforge.cli.common import add_stage_args, run_stage


def _longctx(args) -> int:
    from lmforge.stages.longctx import LongCtxConfig, run
    return run_stage("longctx", config.load(LongCtxConfig, args.config, args.overrides), run, args.quiet)


def _needle(args) -> int:
    from lmforge.stages.needle import NeedleConfig, run
    return run_stage("needle", config.load(NeedleConfig, args.config, args.overrides), run, args.quiet)


def _longstudy(args) -> int:
    from lmforge.stages.longstudy import LongStudyConfig, run
    return run_stage("longstudy", config.load(LongStudyConfig, args.config, args.overrides), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("longctx", help="continued pretraining at a longer context with a new RoPE base "
                                       "(Index-1.9B-32K defaults; resumes automatically)")
    add_stage_args(p, "train.seq_len=4096", "longctx")
    p.set_defaults(func=_longctx)
    p = sub.add_parser("needle", help="needle-in-a-haystack eval: retrieval over prompt length x depth "
                                      "(needle.json, needle.md, needle.png)")
    add_stage_args(p, "lengths=[1024,2048]", "needle")
    p.set_defaults(func=_needle)
    p = sub.add_parser("longstudy", help="long-context study over checkpoints x RoPE settings: perplexity by "
                                         "length, needle heatmaps, retrieval tasks, LongBench, the short-context "
                                         "seesaw (longstudy.json/.md + plots)")
    add_stage_args(p, "ppl.lengths=[512,1024]", "longstudy")
    p.set_defaults(func=_longstudy)
