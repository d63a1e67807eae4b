"""Argument helpers every stage subcommand shares."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lmforge import config


def add_config_args(p, example: str, kind: str, required: bool = False) -> None:
    """config, --set and --help-config. `kind`: the recipe kind (or lmforge.cli.confighelp name)
    whose config class the command reads; `example`: a --set valid for it
    (tests/test_config_help.py parses every one)."""
    p.add_argument("config", nargs=None if required else "?",
                   help="YAML config file" + ("" if required else " (optional: all keys can come from --set)")
                        + f"; `lmforge {p.prog.split(' ', 1)[-1]} --help-config` lists every key")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key, e.g. --set {example} (repeatable)")
    add_help_config(p, kind)
    p.set_defaults(config_kind=kind, set_example=example)


def add_help_config(p, kind: str) -> None:
    """`--help-config`: print every key of the command's config (type, default, meaning) and exit.
    The config's module is imported only then."""
    import argparse

    class HelpConfig(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            from lmforge.cli.confighelp import config_class, format_text
            print(format_text(config_class(kind), parser.prog))
            parser.exit(0)

    p.add_argument("--help-config", action=HelpConfig, nargs=0,
                   help="list every config key with its type, default and meaning, and exit")


def load_config(cls, args, options=()):
    """The config from YAML, the command's own options (lmforge.stagekit.stage.Arg: list entries
    appended, values set), then --set on top. A bad key is blamed on the file, or on --set."""
    data = config.read_yaml(args.config) if args.config else {}
    for a in options:
        value = getattr(args, a.dest)
        if value:
            config.set_key(data, a.key.split("."), value, a.name, append=a.append)
    data = config.apply_overrides(data, args.overrides)
    source = args.config or "--set"
    try:
        return config.from_dict(cls, data, source=source)
    except config.ConfigError as e:
        set_keys = {t.split("=", 1)[0].strip(): t for t in args.overrides if "=" in t}
        raise config.blame_set(e, f"{source}: ", set_keys) from None


def run_stage(name: str, cfg, run, quiet: bool, out: str | None = None, show=None) -> int:
    """Run a stage's `run(cfg, progress)` and print its one-line summary (or that it was already
    done), then `show(cfg, summary)` and the input account; the whole summary is in
    OUT_DIR/DONE.json."""
    from lmforge.stagekit.summary import summary_line
    t0 = time.perf_counter()
    summary = run(cfg, progress=not quiet)
    out = out or getattr(cfg, "out_dir", None)
    if summary.get("skipped"):
        print(f"{out} already finished (delete {out}/DONE.json to run it again)" + _changed_since(out, cfg))
    done = f"{out}/DONE.json" if out and Path(out, "DONE.json").is_file() else None
    when = "already done" if summary.get("skipped") else f"done in {time.perf_counter() - t0:.1f}s"
    print(f"[{name}] {when}: {summary_line(summary) or '-'}" + (f" (all numbers: {done})" if done else ""))
    if show is not None:
        show(cfg, summary)
    if summary.get("account"):
        print(summary["account"])   # last: read / kept / rejected by reason, where the rejects are
    return 0


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _changed_since(out: str | None, cfg, most: int = 4) -> str:
    """'; its config.json differs at train.steps (100 -> 200) ...' when the finished run's saved
    config (training stages keep one) differs from this one: a rerun with, say, more steps is
    otherwise skipped without a word on what it ignored."""
    saved = Path(out or "", "config.json")
    if not out or not saved.is_file():
        return ""
    try:
        import json
        old, new = _flat(json.loads(saved.read_text())), _flat(config.to_dict(cfg))
    except (ValueError, TypeError, OSError):
        return ""
    diff = [k for k in new if k in old and old[k] != new[k]]
    if not diff:
        return ""
    said = ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in diff[:most])
    more = f" and {len(diff) - most} more" if len(diff) > most else ""
    return (f"; this config differs from the finished run's ({saved}) at {said}{more}, and was not used "
            f"(delete DONE.json to continue the finished run with it, or give a new out_dir to start over)")


def fail(command: str, message: str, code: int = 2) -> int:
    print(f"lmforge {command}: {message}", file=sys.stderr)
    return code
