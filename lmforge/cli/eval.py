"""`lmforge eval`: perplexity / bits per byte, multiple choice, contamination -> eval.json."""
from __future__ import annotations

import json
from pathlib import Path

from lmforge import config
from lmforge.cli.common import add_config_args


def _eval(args) -> int:
    from lmforge.stages.eval import EvalConfig, run
    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.insert(0, f"checkpoint={args.checkpoint}")
    if args.out:
        overrides.insert(0, f"out_dir={args.out}")
    cfg = config.load(EvalConfig, args.config, overrides)
    summary = run(cfg, progress=not args.quiet)
    if summary.get("skipped"):
        print(f"{cfg.out_dir} already finished (delete {cfg.out_dir}/DONE.json to evaluate again)")
    else:
        print(Path(cfg.out_dir, "eval.md").read_text(encoding="utf-8"))
    print(json.dumps({k: v for k, v in summary.items() if k != "account"}, indent=1))
    if summary.get("account"):
        print(summary["account"])
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: per-domain perplexity/bits-per-byte, multiple "
                                    "choice, contamination (docs/eval.md)")
    add_config_args(p, "mcq.shots=[0,5]", "eval")
    p.add_argument("--checkpoint", help="run folder or step-N folder (same as --set checkpoint=...)")
    p.add_argument("--out", help="output folder (same as --set out_dir=...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_eval)
