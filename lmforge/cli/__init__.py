"""`lmforge` command line: one subcommand per stage.

Subcommands are registered lazily: `lmforge --help` lists them from the table below without
importing any stage, and `lmforge CMD ...` imports only the module that defines CMD (so a
data step never imports torch, and the CLI starts in well under a second).

Every command ends at one error boundary (`main`): a bad config, a missing or unreadable
file, a full disk, a corrupt checkpoint or a bad input is one line naming what and where,
with a distinct exit code, and no stack trace unless `--debug` is given.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module providing register(subparsers), one-line help). Pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("lmforge.cli.corpus", "the embedded default corpus (offline sources)"),
    "data": ("lmforge.cli.data", "clean, filter and deduplicate raw documents"),
    "tokenizer": ("lmforge.cli.tokenizer", "train / extend a BPE tokenizer, encode documents to token shards"),
    "pretrain": ("lmforge.cli.train", "train a model on token shards (resumes automatically)"),
    "grow": ("lmforge.cli.grow", "depth up-scaling: measure layer similarity, duplicate a block of layers"),
    "longctx": ("lmforge.cli.longctx", "continued pretraining at a longer context with a new RoPE base"),
    "needle": ("lmforge.cli.longctx", "needle-in-a-haystack eval: retrieval over prompt length x depth"),
    "longstudy": ("lmforge.cli.longctx", "long-context study: perplexity by length, needles, seesaw, across RoPE "
                                         "settings"),
    "sftdata": ("lmforge.cli.sftdata", "curate SFT conversations: dedup, scoring, diversity, system-prompt balance"),
    "sftgrid": ("lmforge.cli.sftdata", "task-mix grid search: one short SFT per mix, the best by held-out loss"),
    "sft": ("lmforge.cli.align", "supervised fine-tuning on ChatML conversations (loss on replies only)"),
    "dpo": ("lmforge.cli.align", "direct preference optimization on preference pairs"),
    "selfknow": ("lmforge.cli.align", "self-knowledge: RLCD pair generation + C-RLFT training"),
    "eval": ("lmforge.cli.eval", "evaluate a checkpoint: perplexity, multiple choice, contamination"),
    "import": ("lmforge.cli.hfimport", "Hugging Face folder -> lmforge checkpoint (step-0 + tokenizer)"),
    "export": ("lmforge.cli.export", "checkpoint -> Hugging Face folder"),
    "character": ("lmforge.cli.character", "build a role-play character package (card + BM25 knowledge index)"),
    "generate": ("lmforge.cli.export", "generate text from a checkpoint or exported folder"),
    "chat": ("lmforge.cli.export", "multi-turn ChatML chat in the terminal"),
    "report": ("lmforge.cli.report", "write report.html / report.md with plots of a run folder"),
    "run": ("lmforge.cli.recipe", "run a recipe: every stage in order, resumable"),
    "config": ("lmforge.cli.configcmd", "the config keys of a stage kind: type, default, meaning"),
}

def _chosen(argv: list[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of the command named in `argv` is imported (None: all)."""
    parser = argparse.ArgumentParser(prog="lmforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen(argv) if argv is not None else None
    wanted = {m for c, (m, _) in COMMANDS.items() if argv is None or c == chosen}
    done: set[str] = set()
    for cmd, (module, help_) in COMMANDS.items():
        if module in wanted:
            if module not in done:
                importlib.import_module(module).register(sub)
                done.add(module)
        else:
            sub.add_parser(cmd, help=help_, add_help=False)
    return parser


def _version() -> str:
    from lmforge import __version__
    return f"lmforge {__version__}"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:     # `lmforge ... | head`: the reader left; no traceback
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from lmforge.cli.errors import run_guarded
    return run_guarded(args.func, args, args.command, args.debug)
