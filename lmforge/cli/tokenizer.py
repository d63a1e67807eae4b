"""`lmforge tokenizer {train,extend,encode,report}`."""
from __future__ import annotations

import sys

from lmforge import config
from lmforge.cli.common import add_config_args


def _train(args) -> int:
    from lmforge.tokenizer.train import TrainConfig, run_train
    cfg = config.load(TrainConfig, args.config, args.overrides)
    info = run_train(cfg, progress=not args.quiet)
    if info.get("skipped"):
        print(f"{cfg.out_dir} already has a tokenizer (set overwrite=true to train again)")
    _done("tokenizer train", info, cfg.out_dir)
    return 0


def _done(what: str, summary: dict, out_dir: str) -> None:
    """The one-line summary, then the read / kept / rejected account when there is one."""
    from lmforge.stagekit.summary import summary_line
    print(f"[{what}] {'already done' if summary.get('skipped') else 'done'}: {summary_line(summary)} -> {out_dir}")
    if summary.get("account"):
        print(summary["account"])


def _extend(args) -> int:
    from lmforge.tokenizer.extend import ExtendConfig, run_extend
    cfg = config.load(ExtendConfig, args.config, args.overrides)
    info = run_extend(cfg, progress=not args.quiet)
    if info.get("skipped"):
        print(f"{cfg.out_dir} already has a tokenizer (set overwrite=true to extend again)")
    _done("tokenizer extend", info, cfg.out_dir)
    return 0


def _encode(args) -> int:
    from lmforge.stages.encode import EncodeConfig, run_encode_stage
    cfg = config.load(EncodeConfig, args.config, args.overrides)
    stats = run_encode_stage(cfg, progress=not args.quiet)
    if stats.get("skipped"):
        print(f"{cfg.out_dir} is already encoded (set overwrite=true to encode again)")
    _done("tokenizer encode", stats, cfg.out_dir)
    if stats.get("empty_docs"):
        print(f"note: {stats['empty_docs']} empty documents not written (ids in stats.json)", file=sys.stderr)
    return 0


def _report(args) -> int:
    from lmforge.tokenizer.report import ReportConfig, format_table, run_report
    cfg = config.load(ReportConfig, args.config, args.overrides)
    rows, path = run_report(cfg)
    print(format_table(rows))
    print(f"saved {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train / extend a BPE tokenizer, encode documents to token shards")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    for name, func, help_, example, kind in [
        ("train", _train, "train a byte-level BPE tokenizer on documents", "vocab_size=32000", "tokenizer"),
        ("extend", _extend, "add tokens learned from a new corpus to an existing tokenizer (old ids kept)",
         "add_tokens=8000", "extend"),
        ("encode", _encode, "documents -> token shards (train/val split per domain)", "val_fraction=0.01", "encode"),
        ("report", _report, "characters and bytes per token by domain and language", "max_docs=1000",
         "tokenizer-report"),
    ]:
        q = sub.add_parser(name, help=help_)
        add_config_args(q, example, kind)
        if name != "report":
            q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.set_defaults(func=func)
