"""`lmforge` command line: one subcommand per stage.

Subcommands are registered lazily: `lmforge --help` lists them from the stage registry and the
table below without importing any stage, and `lmforge CMD ...` imports only the module that
defines CMD (so a data step never imports torch, and the CLI starts in well under a second).

Every command ends at one error boundary (`main`): a bad config, a missing or unreadable
file, a full disk, a corrupt checkpoint or a bad input is one line naming what and where,
with a distinct exit code, and no stack trace unless `--debug` is given.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# The commands that are not one stage each: command -> (module providing register(subparsers),
# one-line help). `corpus build` and `tokenizer train|extend|encode` run their stages' code
# (lmforge.stagekit.stage.Stage.run); every other stage is a command of its own, made by
# lmforge.cli.stagecmd from the stage registry (lmforge.recipe.registry.STAGES).
COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("lmforge.cli.corpus", "the embedded default corpus (offline sources)"),
    "tokenizer": ("lmforge.cli.tokenizer", "train / extend a BPE tokenizer, encode documents to token shards"),
    "import": ("lmforge.cli.hfimport", "Hugging Face folder -> lmforge checkpoint (step-0 + tokenizer)"),
    "export": ("lmforge.cli.export", "checkpoint -> Hugging Face folder"),
    "generate": ("lmforge.cli.export", "generate text from a checkpoint or exported folder"),
    "chat": ("lmforge.cli.export", "multi-turn chat in the terminal (the tokenizer's own chat format, else ChatML)"),
    "run": ("lmforge.cli.recipe", "run a recipe: every stage in order, resumable"),
    "config": ("lmforge.cli.configcmd", "the config keys of a stage kind: type, default, meaning"),
    "cache": ("lmforge.cli.cache", "see and prune the local copies of files read from URLs"),
}
STAGE_MODULE = "lmforge.cli.stagecmd"


def commands() -> dict[str, tuple[str, str]]:
    """Every command -> (module, help, stage kind or ""): the stages in pipeline order, then the
    others; read without importing any stage (lmforge.recipe.registry.declared)."""
    from lmforge.recipe.registry import STAGES, command_words, declared
    out: dict[str, tuple[str, str, str]] = {}
    for kind in STAGES:
        word = command_words(kind)[0]
        if word in COMMANDS:
            out.setdefault(word, (*COMMANDS[word], ""))
        else:
            out[word] = (STAGE_MODULE, declared(kind)["help"], kind)
    for cmd, (module, help_) in COMMANDS.items():
        out.setdefault(cmd, (module, help_, ""))
    return out


def _chosen(argv: list[str], known) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a if a in known else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of the command named in `argv` is imported (None: all)."""
    parser = argparse.ArgumentParser(prog="lmforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    table = commands()
    chosen = _chosen(argv, table) if argv is not None else None
    wanted = {table[chosen][0]} if chosen else set() if argv is not None else {m for m, _, _ in table.values()}
    done: set[str] = set()
    for cmd, (module, help_, kind) in table.items():
        if module not in wanted or (kind and argv is not None and cmd != chosen):
            sub.add_parser(cmd, help=help_, add_help=False)    # listed; its module is imported only when chosen
        elif kind:
            importlib.import_module(module).register(sub, kind)
        elif module not in done:
            importlib.import_module(module).register(sub)      # registers every command it defines
            done.add(module)
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
    if not args.debug:
        _quiet_import_chatter()
    from lmforge.cli.errors import run_guarded
    return run_guarded(args.func, args, args.command, args.debug)


def _quiet_import_chatter() -> None:
    """torchao (the fp8 extra; transformers and sentence-transformers import it whenever it is
    installed) logs a warning per CUDA kernel library it cannot load on a CPU machine, and its enum
    registrations make torch log a deprecation line: noise on every good run, not a problem.
    Shown again with --debug."""
    import logging
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
