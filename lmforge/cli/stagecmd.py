"""The one command handler of every stage: `lmforge KIND [CONFIG] [--set k=v] [options]`.

Built from the stage's descriptor (lmforge.stagekit.stage.Stage: help, `--set` example, extra
options), and run through `Stage.run`, the same code a recipe's stage runs: the same lock,
skip, resume and DONE.json, the same outputs."""
from __future__ import annotations

from lmforge.cli.common import add_config_args, load_config, run_stage


def add_stage_command(sub, kind: str, name: str | None = None):
    """Register stage `kind` as subcommand `name` (default: the last word of its command), from
    its declaration read without importing the stage (so `lmforge sft --help` needs no torch);
    the stage module is imported when the command runs."""
    from lmforge.recipe.registry import command_words, declared
    from lmforge.stagekit.stage import Arg
    d = declared(kind)
    options = [Arg(*a["args"], **a["kwargs"]) for a in d.get("args", [])]
    p = sub.add_parser(name or command_words(kind)[-1], help=d["help"], description=d["help"])
    for a in options:
        if not a.name.startswith("-"):      # a positional (report's RUN_DIR), before the config file
            p.add_argument(a.name, metavar=a.name.upper(), help=a.help)
    add_config_args(p, d["example"], kind)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for a in options:
        if a.name.startswith("-"):
            p.add_argument(a.name, dest=a.dest, action="append" if a.append else "store",
                           default=[] if a.append else None, metavar=a.metavar, help=a.help)
    p.set_defaults(func=lambda args: run_command(kind, args))
    return p


def run_command(kind: str, args) -> int:
    """`lmforge KIND ...`: the config from the file, the options and --set, then Stage.run."""
    from lmforge.recipe.registry import load_stage
    stage = load_stage(kind, f"lmforge {kind}")
    cfg = load_config(stage.config, args, stage.args)
    return run_stage(" ".join(stage.words), cfg, stage.run, args.quiet, str(stage.out_dir(cfg)), stage.show)


def register(sub, kind: str) -> None:
    add_stage_command(sub, kind)
