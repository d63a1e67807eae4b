"""Discoverable configs: `--help-config` lists every key of every stage's config with a meaning,
every `--set` example in the help is valid for its command, docs/config.md is up to date."""
import argparse
import dataclasses
import re
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmforge import config
from lmforge.cli import build_parser, main
from lmforge.cli.confighelp import NO_MEANING, all_kinds, config_class, config_keys, format_text, meaning_of

ROOT = Path(__file__).resolve().parents[1]


def expected_keys(cls, prefix="", path=()) -> set[str]:
    """Every dotted key of a config dataclass, walked independently of lmforge.cli.confighelp (a
    class nested in itself is listed once, as its field)."""
    path = (*path, cls)
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        out.add(key)
        tp = hints[f.name]
        options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        for c in options:
            args = typing.get_args(c)
            if dataclasses.is_dataclass(c):
                sep, inner = ".", c
            elif typing.get_origin(c) in (list, tuple) and args and dataclasses.is_dataclass(args[0]):
                sep, inner = "[].", args[0]
            elif typing.get_origin(c) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
                sep, inner = ".<name>.", args[1]
            else:
                continue
            if inner not in path:
                out |= expected_keys(inner, key + sep, path)
    return out


def stage_parsers(parser: argparse.ArgumentParser, prefix=()):
    """(command words, parser) for every (sub)command that reads a stage config."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub._defaults.get("config_kind"):
                    yield (*prefix, name), sub
                yield from stage_parsers(sub, (*prefix, name))


@pytest.fixture(scope="module")
def parsers():
    found = list(stage_parsers(build_parser(None)))
    assert len(found) >= 14, [w for w, _ in found]
    return found


def test_every_field_of_every_kind_has_a_key_and_a_meaning():
    for kind in all_kinds():
        cls = config_class(kind)
        keys = config_keys(cls)
        listed = {k.key for k in keys}
        missing = expected_keys(cls) - listed
        assert not missing, f"{kind}: keys missing from --help-config: {sorted(missing)}"
        undocumented = [k.key for k in keys if k.meaning == NO_MEANING or not k.meaning.strip()]
        assert not undocumented, (f"{kind}: no meaning for {undocumented}: add a `# comment` on the field's "
                                  f"line or an entry in lmforge/cli/config_meanings.py")


def test_help_config_of_each_command_lists_every_key(parsers, capsys):
    for words, sub in parsers:
        with pytest.raises(SystemExit) as e:
            main([*words, "--help-config"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        cls = config_class(sub._defaults["config_kind"])
        listed = {line.split()[0] for line in text.splitlines()[1:] if line.startswith("  ") and
                  not line.startswith("   ")}
        missing = expected_keys(cls) - listed
        assert not missing, f"lmforge {' '.join(words)} --help-config misses {sorted(missing)}"


def check_example(cls, example: str, where: str) -> None:
    """Run a `--set` example through the config parser: its key must exist and its value convert to
    the key's type. A complete config may need other keys (an input file): a check of the whole
    config may fail on those, never on the example's own key."""
    parts, value = config.parse_override(example)
    tp = cls
    for i, part in enumerate(parts):
        assert dataclasses.is_dataclass(tp), f"{where}: {'.'.join(parts[:i])} is not a section"
        hints = typing.get_type_hints(tp)
        assert part in hints, f"{where}: unknown key {part!r} (known: {sorted(hints)})"
        tp = hints[part]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        tp = inner[0] if inner and i < len(parts) - 1 else tp
    config._convert(tp, value, example, where)
    try:
        config.from_dict(cls, config.apply_overrides({}, [example]), source=where)
    except config.ConfigError as e:
        assert parts[-1] not in str(e).split(":")[1], f"{where}: {e}"


def test_each_help_example_is_valid_for_its_command(parsers):
    for words, sub in parsers:
        example = sub._defaults["set_example"]
        assert f"--set {example}" in " ".join(sub.format_help().split()), words
        check_example(config_class(sub._defaults["config_kind"]), example, f"lmforge {' '.join(words)}")


def test_an_invalid_example_would_fail():
    """The check above can fail: a key of another stage is refused by this stage's parser."""
    with pytest.raises(AssertionError, match="unknown key 'train'"):
        check_example(config_class("tokenizer"), "train.steps=200", "lmforge tokenizer train")
    with pytest.raises(config.ConfigError, match="expected an integer"):
        check_example(config_class("tokenizer"), "vocab_size=big", "lmforge tokenizer train")


def test_set_error_message_example_is_a_real_key():
    with pytest.raises(config.ConfigError) as e:
        config.parse_override("train.optim.lr")
    example = re.search(r"e\.g\. (\S+)", str(e.value)).group(1)
    check_example(config_class("pretrain"), example, "the --set error message")
    cfg = config.from_dict(config_class("pretrain"), config.apply_overrides({"data": "runs/tokens"}, [example]))
    assert cfg.train.optim.lr == pytest.approx(3e-4)


@dataclass
class _Inner:
    rate: float = 0.5            # how fast
    mode: typing.Literal["a", "b"] = "a"


@dataclass
class _Outer:
    # a block comment that explains
    # the name over two lines
    name: str = "x"
    inner: _Inner = field(default_factory=lambda: _Inner(rate=0.25))
    items: list[_Inner] = field(default_factory=list)
    maybe: _Inner | None = None  # off unless given
    out_dir: str = ""
    bare: int = 3


def test_keys_types_defaults_and_meanings_from_the_source():
    keys = {k.key: k for k in config_keys(_Outer)}
    assert keys["name"].meaning == "a block comment that explains the name over two lines"
    assert keys["inner.rate"].default == "0.25" and keys["inner.rate"].meaning == "how fast"  # the instance's
    assert keys["inner.mode"].type == "one of: a | b"
    assert keys["items[].rate"].default == "0.5"
    assert keys["maybe"].default == "null" and keys["maybe"].meaning == "off unless given"
    assert "maybe.mode" in keys
    assert keys["out_dir"].meaning.startswith("the stage's output folder")   # the generic meaning
    assert keys["bare"].meaning == NO_MEANING and meaning_of(_Outer, "bare") == NO_MEANING
    text = format_text(_Outer, "t")
    assert "items[].mode" in text and "[0.25]" in text


def test_config_show_command(capsys):
    assert main(["config", "show", "longsft"]) == 0
    out = capsys.readouterr().out
    assert "long_count" in out and "Index-1.9B-32K" in out
    assert main(["config", "show", "nope"]) == 2
    assert "no stage kind 'nope'" in capsys.readouterr().err
    assert main(["config", "show"]) == 2                  # no kind: the kinds are named
    assert "pretrain, grow" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["export", "report"])
def test_help_config_needs_no_positional_arguments(command, capsys):
    """README: `lmforge STAGE --help-config`; export and report take folders, yet list their keys."""
    with pytest.raises(SystemExit) as e:
        main([command, "--help-config"])
    assert e.value.code == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("  ")}
    assert expected_keys(config_class(command)) <= listed


def test_closed_pipe_is_silent():
    """`lmforge config show data | head -1`: no "Broken pipe" line from the error boundary."""
    p = subprocess.Popen([sys.executable, "-m", "lmforge", "config", "show", "data"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()              # the reader is gone before the command prints
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == "", err


def test_docs_config_md_is_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + " -- run: python scripts/gen_config_docs.py"
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert "`train.optim.lr`" in text and "## longsft" in text


@dataclass
class _Wrapped:
    bucket: int = 100  # all pairs in a bucket up to this size; beyond, each doc
                       # pairs with the next bucket - 1
    lower: bool = True
    limit: int = 3  # a limit of its own
    # a block that belongs to `after`, not to `limit` above it
    after: int = 4


def test_wrapped_comment_continues_and_a_block_starts_the_next_field():
    """A trailing comment wrapped onto a hanging-indented line is the field's whole help; the
    next field without a comment has none of it (issue 35: minhash.lowercase showed the second
    line of max_bucket's comment); a block at the field's indentation is the next field's."""
    assert meaning_of(_Wrapped, "bucket") == ("all pairs in a bucket up to this size; beyond, "
                                              "each doc pairs with the next bucket - 1")
    assert meaning_of(_Wrapped, "lower") == NO_MEANING
    assert meaning_of(_Wrapped, "limit") == "a limit of its own"
    assert meaning_of(_Wrapped, "after") == "a block that belongs to `after`, not to `limit` above it"


def test_config_show_data_minhash_help_lines(capsys):
    assert main(["config", "show", "data"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = {l.split()[0]: i for i, l in enumerate(lines) if l.startswith("  ") and l.split()[0].count(".") <= 2
          and not l.startswith("   " * 4)}
    bucket = " ".join(l.strip() for l in lines[at["minhash.max_bucket"] + 1:at["minhash.lowercase"]])
    assert "pairs with the next max_bucket - 1" in bucket
    lower = lines[at["minhash.lowercase"] + 1]
    assert "max_bucket" not in lower and "lowercase" in lower


def _config_classes() -> list[type]:
    seen: list[type] = []

    def walk(tp):
        for t in (tp, *typing.get_args(tp)):
            for u in (t, *typing.get_args(t)):
                if dataclasses.is_dataclass(u) and isinstance(u, type) and u not in seen:
                    seen.append(u)
                    for hint in typing.get_type_hints(u).values():
                        walk(hint)
    for kind in all_kinds():
        walk(config_class(kind))
    return seen


def test_every_field_help_is_its_own_comment():
    """Over every config class of every kind: a field's help is the comment on its own line
    (with its hanging continuation) or the block right above it, and no comment line is the
    help of two fields (the minhash.max_bucket / lowercase mix-up of issue 35)."""
    import inspect
    import textwrap

    from lmforge.cli.confighelp import comment_lines
    checked = 0
    for cls in _config_classes():
        for klass in cls.__mro__:
            if not dataclasses.is_dataclass(klass):
                continue
            try:
                src = textwrap.dedent(inspect.getsource(klass)).splitlines()
            except (OSError, TypeError):
                continue
            owner: dict[int, str] = {}
            for name, (node, trailing, above) in comment_lines(klass).items():
                indent = len(src[node[0] - 1]) - len(src[node[0] - 1].lstrip())
                for n in trailing:
                    inside = node[0] <= n <= node[1]
                    deeper = len(src[n - 1]) - len(src[n - 1].lstrip()) > indent
                    assert inside or deeper, (klass.__name__, name, src[n - 1])
                if above:
                    assert above == list(range(node[0] - len(above), node[0])), (klass.__name__, name)
                for n in trailing + above:
                    assert n not in owner, (klass.__name__, name, owner.get(n), src[n - 1])
                    owner[n] = name
                checked += 1
    assert checked > 300
