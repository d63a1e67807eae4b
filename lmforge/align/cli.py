"""Subcommands of the alignment stages: `lmforge sft`, `lmforge dpo`, `lmforge selfknow`."""
from __future__ import annotations

from lmforge import config
from lmforge.train.cli import add_stage_args, run_stage


def _load(cls, args, extra: dict | None = None):
    """The config from YAML + --set, then `extra` list entries appended (e.g. --build-pairs)."""
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


def _sft(args) -> int:
    from lmforge.train.sft import SFTConfig, run
    return run_stage("sft", _load(SFTConfig, args, {"data": args.data}), run, args.quiet)


def _dpo(args) -> int:
    from lmforge.train.dpo import DPOConfig, run
    cfg = _load(DPOConfig, args, {"data": args.data, "pairs_from_sft.files": args.build_pairs})
    return run_stage("dpo", cfg, run, args.quiet)


def _selfknow(args) -> int:
    from lmforge.train.selfknow import SelfKnowConfig, run
    return run_stage("selfknow", _load(SelfKnowConfig, args), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning on ChatML conversations (loss on replies only)")
    add_stage_args(p)
    p.add_argument("--data", action="append", default=[], metavar="JSONL",
                   help="conversation jsonl ({'messages': [...]}), added to `data` (repeatable)")
    p.set_defaults(func=_sft)

    p = sub.add_parser("dpo", help="direct preference optimization on preference pairs")
    add_stage_args(p)
    p.add_argument("--data", action="append", default=[], metavar="JSONL",
                   help="preference jsonl (prompt, chosen, rejected[, scores]), added to `data` (repeatable)")
    p.add_argument("--build-pairs", action="append", default=[], metavar="SFT_JSONL",
                   help="build pairs from SFT conversations (real reply vs another conversation's reply, "
                        "truncated or shuffled; pairs_from_sft.rejected=model: the model's own sample)")
    p.set_defaults(func=_dpo)

    p = sub.add_parser("selfknow", help="self-knowledge: RLCD pair generation + C-RLFT training")
    add_stage_args(p)
    p.set_defaults(func=_selfknow)
