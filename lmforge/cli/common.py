"""Argument helpers every stage subcommand shares."""
from __future__ import annotations

import json
import sys

from lmforge import config


def add_config_args(p, example: str = "train.steps=200") -> None:
    p.add_argument("config", nargs="?", help="YAML config file (optional: all keys can come from --set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key, e.g. --set {example} (repeatable)")


def add_stage_args(p, example: str = "train.steps=200") -> None:
    """The arguments every stage subcommand takes: config, --set, --quiet."""
    add_config_args(p, example)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_config(cls, args, extra: dict | None = None):
    """The config from YAML + --set, then `extra` list entries appended (e.g. --data FILE)."""
    data = config.read_yaml(args.config) if args.config else {}
    data = config.apply_overrides(data, args.overrides)
    for dotted, values in (extra or {}).items():
        if not values:
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise config.ConfigError(f"{p}: expected a mapping")
        node[leaf] = list(node.get(leaf) or []) + list(values)
    return config.from_dict(cls, data, source=args.config or "<config>")


def run_stage(name: str, cfg, run, quiet: bool) -> int:
    """Run a stage's `run(cfg)` and print its summary (or that it was already done)."""
    summary = run(cfg, progress=not quiet)
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to run it again)")
    print(json.dumps({k: v for k, v in summary.items() if k != "account"}, indent=1, ensure_ascii=False,
                     default=str))
    if summary.get("account"):
        print(summary["account"])   # last: read / kept / rejected by reason, where the rejects are
    return 0


def fail(command: str, message: str, code: int = 2) -> int:
    print(f"lmforge {command}: {message}", file=sys.stderr)
    return code
