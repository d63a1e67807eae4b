"""`lmforge` command line: one subcommand per stage.

Each stage package contributes its subcommands through a `register(subparsers)` function;
a stage whose optional dependencies are missing is listed with the reason instead of
breaking the whole CLI.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from lmforge.config import ConfigError

# Modules that provide `register(subparsers)`, in the order of the pipeline.
STAGES = [
    "lmforge.corpus.cli",
    "lmforge.data.cli",
    "lmforge.tokenizer.cli",
    "lmforge.train.cli",
    "lmforge.grow.cli",
    "lmforge.train.longctx_cli",
    "lmforge.align.cli",
    "lmforge.eval.cli",
    "lmforge.export.cli",
    "lmforge.report.cli",
    "lmforge.recipe.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("lmforge"):
                continue  # stage not built yet
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from lmforge import __version__
    return f"lmforge {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"lmforge {args.command}: config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"lmforge {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmforge {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
