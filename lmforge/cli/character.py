"""`lmforge character`: a role-play character package on a chat model."""
from __future__ import annotations

from lmforge import config
from lmforge.cli.common import add_stage_args, run_stage


def _character(args) -> int:
    from lmforge.stages.character import CharacterConfig, run
    return run_stage("character", config.load(CharacterConfig, args.config, args.overrides), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("character", help="build a role-play character package: card + BM25 index of its "
                                         "knowledge folder, checked against the chat model")
    add_stage_args(p, "card=examples/character/lin.yaml", "character")
    p.set_defaults(func=_character)
