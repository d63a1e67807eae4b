"""Subcommands of SFT data curation: `lmforge sftdata` and `lmforge sftgrid` (docs/sftdata.md)."""
from __future__ import annotations

from lmforge.cli.common import add_stage_args, load_config, run_stage


def _sftdata(args) -> int:
    from lmforge.stages.sftdata import SFTDataConfig, run
    return run_stage("sftdata", load_config(SFTDataConfig, args, {"data": args.data}), run, args.quiet)


def _sftgrid(args) -> int:
    from lmforge.stages.sftgrid import SFTGridConfig, run
    return run_stage("sftgrid", load_config(SFTGridConfig, args, {"data": args.data}), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("sftdata", help="curate SFT conversations: dedup, scoring, diversity, system-prompt balance")
    add_stage_args(p, "diversity.target=1000", "sftdata")
    p.add_argument("--data", action="append", default=[], metavar="JSONL",
                   help="conversation jsonl ({'messages': [...]}), added to `data` (repeatable)")
    p.set_defaults(func=_sftdata)

    p = sub.add_parser("sftgrid", help="task-mix grid search: one short SFT per mix, the best by held-out loss")
    add_stage_args(p, "weights={code: [1, 3], chat: [1, 3]}", "sftgrid")
    p.add_argument("--data", action="append", default=[], metavar="JSONL",
                   help="conversation jsonl with a task per record (task_key), added to `data` (repeatable)")
    p.set_defaults(func=_sftgrid)
