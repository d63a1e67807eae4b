"""`lmforge config list` / `lmforge config show KIND`: the config keys of any stage kind,
also those a recipe uses without a command of their own (longsft, report, ...)."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("config", help="the config keys of a stage kind: type, default, meaning",
                              description=__doc__)
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    s = sub.add_parser("show", help="every key of KIND's config (a recipe stage's `kind`)")
    s.add_argument("kind", nargs="?", help="a recipe stage kind: `lmforge config list` names them")
    s.add_argument("--markdown", action="store_true", help="a Markdown table (as in docs/config.md)")
    s.set_defaults(func=_show)
    q = sub.add_parser("list", help="the stage kinds and their config classes")
    q.set_defaults(func=_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _show(args) -> int:
    from lmforge.cli.confighelp import all_kinds, config_class, format_markdown, format_text
    if not args.kind:   # name the kinds rather than argparse's bare "kind is required"
        print(f"lmforge config show: name a stage kind, e.g. `lmforge config show pretrain`; kinds: "
              f"{', '.join(all_kinds())}", file=sys.stderr)
        return 2
    cls = config_class(args.kind)
    print(format_markdown(cls, args.kind) if args.markdown else format_text(cls, f"kind {args.kind}"))
    return 0


def _list(args) -> int:
    from lmforge.cli.confighelp import all_kinds, config_source
    for kind in all_kinds():
        module, name = config_source(kind)
        print(f"{kind:18s} {module}.{name}")
    return 0
