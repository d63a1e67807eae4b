"""Subcommands of the alignment stages: `lmforge sft`, `lmforge dpo`, `lmforge selfknow`."""
from __future__ import annotations

from lmforge.cli.common import add_stage_args, load_config, run_stage


def _sft(args) -> int:
    from lmforge.stages.sft import SFTConfig, run
    return run_stage("sft", load_config(SFTConfig, args, {"data": args.data}), run, args.quiet)


def _dpo(args) -> int:
    from lmforge.stages.dpo import DPOConfig, run
    cfg = load_config(DPOConfig, args, {"data": args.data, "pairs_from_sft.files": args.build_pairs})
    return run_stage("dpo", cfg, run, args.quiet)


def _selfknow(args) -> int:
    from lmforge.stages.selfknow import SelfKnowConfig, run
    return run_stage("selfknow", load_config(SelfKnowConfig, args), run, args.quiet)


def register(sub) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning on ChatML conversations (loss on replies only)")
    add_stage_args(p, "epochs=3", "sft")
    p.add_argument("--data", action="append", default=[], metavar="JSONL",
                   help="conversation jsonl ({'messages': [...]}), added to `data` (repeatable)")
    p.set_defaults(func=_sft)

    p = sub.add_parser("dpo", help="direct preference optimization on preference pairs")
    add_stage_args(p, "beta=0.1", "dpo")
    p.add_argument("--data", action="append", default=[], metavar="JSONL",
                   help="preference jsonl (prompt, chosen, rejected[, scores]), added to `data` (repeatable)")
    p.add_argument("--build-pairs", action="append", default=[], metavar="SFT_JSONL",
                   help="build pairs from SFT conversations (real reply vs another conversation's reply, "
                        "truncated or shuffled; pairs_from_sft.rejected=model: the model's own sample)")
    p.set_defaults(func=_dpo)

    p = sub.add_parser("selfknow", help="self-knowledge (StableLM 2): first messages from the base model, "
                                          "RLCD replies, C-RLFT with KL to a reference trained on D_c")
    add_stage_args(p, "base=runs/pretrain", "selfknow")
    p.set_defaults(func=_selfknow)
