"""`lmforge corpus build`: assemble the embedded default corpus (see lmforge.corpus)."""
from __future__ import annotations

import argparse
import sys

from lmforge.corpus.build import DEFAULT_MAX_MB, SAMPLE_DIR, SAMPLE_MAX_MB, SOURCES, CorpusError, write_sample


def register(subparsers) -> None:
    corpus = subparsers.add_parser("corpus", help="the embedded default corpus (offline sources)",
                                   description="`lmforge corpus build --help` lists its flags; in a recipe, the "
                                               "corpus stage takes the same settings as config keys "
                                               "(`lmforge config show corpus` lists them).")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="ACTION")
    p = sub.add_parser("build", help="build the default corpus from the installed offline sources",
                       description="Build docs/, sft.jsonl, dpo.jsonl, mcq_*.jsonl, quality_positives.jsonl, "
                                   "sources.json and LICENSES.md from the offline sources "
                                   f"({', '.join(SOURCES)}). Install them with scripts/setup_sources.sh; "
                                   "a missing source falls back to the committed sample.")
    p.add_argument("--out", default="corpus", help="output folder (default: ./corpus)")
    p.add_argument("--max-mb", type=float, default=None,
                   help=f"raw megabytes read per source (default {DEFAULT_MAX_MB:g}; "
                        f"{SAMPLE_MAX_MB:g} with --sample)")
    p.add_argument("--sources", default=None, help=f"comma-separated subset of: {','.join(SOURCES)}")
    p.add_argument("--from-sample", action="store_true",
                   help="build from the small committed sample only (no installed source needed)")
    p.add_argument("--no-fallback", action="store_true",
                   help="skip missing sources instead of using their committed sample")
    p.add_argument("--sample", action="store_true",
                   help=f"(maintainers) write the raw-record sample into --out (default {SAMPLE_DIR})")
    p.add_argument("--prose-format", choices=["split", "html", "rst"], default="split",
                   help="Python docs pages as HTML, reST, or half each (default split)")
    p.add_argument("--max-mcq", type=int, default=2000, help="most poem multiple-choice items (the quiz files give ~2300)")
    p.set_defaults(func=_build)
    corpus.set_defaults(func=lambda args: (corpus.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    """The corpus stage (lmforge.stages.corpus, as a recipe runs it: DONE.json, a rerun skips)
    with the flags as its config; --sample writes the maintainers' raw-record sample instead."""
    from lmforge.config import ConfigError
    from lmforge.stages.corpus import STAGE, CorpusConfig
    try:
        if args.sample:
            out = SAMPLE_DIR if args.out == "corpus" else args.out
            write_sample(out, args.sources, args.max_mb or SAMPLE_MAX_MB)
            print(f"corpus: sample written to {out}")
            return 0
        cfg = CorpusConfig(out_dir=args.out, sources=args.sources.split(",") if args.sources else None,
                           max_mb=args.max_mb or DEFAULT_MAX_MB, from_sample=args.from_sample,
                           fallback=not args.no_fallback, prose_format=args.prose_format, max_mcq=args.max_mcq)
        summary = STAGE.run(cfg, progress=True)
    except (CorpusError, ConfigError) as e:
        print(str(e), file=sys.stderr)
        return 1
    files = ", ".join(f"{k} {v}" for k, v in summary["files"].items())
    print(f"corpus: {'already built' if summary.get('skipped') else 'wrote'} {args.out}: {files}")
    return 0
