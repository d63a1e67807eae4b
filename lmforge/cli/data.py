"""`lmforge data CONFIG.yaml [--set k=v ...] [--out DIR]`: raw documents -> clean shards."""
from __future__ import annotations

import argparse

from lmforge.cli.common import add_config_args


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="clean, filter and deduplicate raw documents",
                              description=__doc__)
    add_config_args(p, "minhash.threshold=0.7", "data", required=True)
    p.add_argument("--out", default=None, help="output folder (overrides `output`)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from lmforge.config import load
    from lmforge.data.config import DataConfig
    from lmforge.data.pipeline import run_pipeline

    cfg = load(DataConfig, args.config, args.overrides)
    summary = run_pipeline(cfg, args.out)
    final = summary["steps"][-1]
    print(f"[data] done: {final['kept']['docs']} documents, {final['kept']['bytes'] / 1e6:.2f} MB "
          f"in {len(summary['final'])} shards under {args.out or cfg.output}")
    print(summary["account"])
    return 0
