"""`lmforge tokenizer {train,extend,encode,report}`: the tokenizer, extend and encode stages (made by
the stage command handler, lmforge.cli.stagecmd) and the compression report."""
from __future__ import annotations

from lmforge.cli.common import add_config_args, load_config
from lmforge.cli.stagecmd import add_stage_command


def _report(args) -> int:
    from lmforge.tokenizer.report import TokenizerReportConfig, format_table, run_report
    cfg = load_config(TokenizerReportConfig, args)   # a bad key is blamed on the file or on --set, as elsewhere
    rows, path, account = run_report(cfg)
    print(format_table(rows))
    print(f"saved {path}")
    print(account)
    return 0


def register(subparsers) -> None:
    from lmforge.recipe.registry import STAGES, command_words
    p = subparsers.add_parser("tokenizer", help="train / extend a BPE tokenizer, encode documents to token shards")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    for kind in STAGES:
        words = command_words(kind)
        if words[0] == "tokenizer":
            add_stage_command(sub, kind, words[1])
    q = sub.add_parser("report", help="characters and bytes per token by domain and language")
    add_config_args(q, "max_docs=1000", "tokenizer-report")
    q.set_defaults(func=_report)
