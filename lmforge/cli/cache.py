"""`lmforge cache ls | prune`: the local copies of files read from URLs (lmforge.io.fetch)."""
from __future__ import annotations

import argparse
import time

from lmforge.io.fetch import fetch_root
from lmforge.io.fetchcache import ENV_CAP, cap_bytes, listing, prune
from lmforge.numfmt import human_bytes

WHAT = ("the local copies of token shards and teacher caches read from URLs (s3://...): "
        f"$LMFORGE_FETCH_DIR, else ~/.cache/lmforge/fetched; ${ENV_CAP} caps it")


def register(subparsers) -> None:
    cache = subparsers.add_parser("cache", help="see and prune the local copies of files read from URLs",
                                  description=WHAT)
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    p = sub.add_parser("ls", help="one line per URL folder: copies, size, last use, in use",
                       description="One line per cached URL folder: its copies, their size, when one was "
                                   "last used, and whether a running process holds it; then the total.")
    p.set_defaults(func=_ls)
    p = sub.add_parser("prune", help="remove least recently used copies down to a size, or all",
                       description="Remove the least recently used copies until the cache holds at most "
                                   f"--max-gb (default ${ENV_CAP}), or all of them with --all. A folder a "
                                   "running process fetches into or reads from is left as it is.")
    p.add_argument("--max-gb", type=float, default=None, metavar="N",
                   help=f"prune down to N GB (10^9 bytes; default ${ENV_CAP})")
    p.add_argument("--all", action="store_true", help="remove every copy no running process holds")
    p.set_defaults(func=_prune)
    cache.set_defaults(func=lambda args: (cache.print_help(), 2)[1])


def _n(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _ls(args: argparse.Namespace) -> int:
    root, cap = fetch_root(), cap_bytes()
    rows = listing(root)
    if rows:
        print(f"{'FOLDER':<16}  {'FILES':>5}  {'SIZE':>9}  {'LAST USED':<16}  URL")
    for r in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["used"])) if r["used"] else "-"
        print(f"{r['folder']:<16}  {r['files']:>5}  {human_bytes(r['bytes']):>9}  {used:<16}  {r['url']}"
              + ("  (in use)" if r["in_use"] else ""))
    total = sum(r["bytes"] for r in rows)
    busy = sum(r["in_use"] for r in rows)
    print(f"cache {root}: {_n(len(rows), 'folder')}, {_n(sum(r['files'] for r in rows), 'file')}, {human_bytes(total)}"
          + (f", {busy} in use" if busy else "")
          + (f"; cap {human_bytes(cap)} ({ENV_CAP})" if cap is not None else f"; no cap ({ENV_CAP} unset)"))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from lmforge.cli.common import fail
    if args.max_gb is not None and not args.max_gb >= 0:
        return fail("cache prune", f"--max-gb: expected a size in GB of at least 0, got {args.max_gb}")
    cap = int(round(args.max_gb * 1e9)) if args.max_gb is not None else cap_bytes()
    if cap is None and not args.all:
        return fail("cache prune", f"give --max-gb N or --all (or set {ENV_CAP})")
    root = fetch_root()
    r = prune(root, cap, everything=args.all)
    goal = "all" if args.all else f"down to {human_bytes(cap)}"
    busy = f"; {_n(r['busy'], 'folder')} in use kept" if r["busy"] else ""
    over = "" if args.all or r["left"] <= cap else f"; still over {human_bytes(cap)}: the rest is in use"
    print(f"cache prune ({goal}): removed {_n(r['files'], 'file')}, {_n(r['folders'], 'folder')}, freed "
          f"{human_bytes(r['freed'])}{busy}{over}; left {human_bytes(r['left'])} in {_n(r['left_folders'], 'folder')} "
          f"({root})")
    return 0
