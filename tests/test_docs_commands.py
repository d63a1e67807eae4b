"""The commands the README and docs/*.md show are commands lmforge accepts: every `lmforge ...`
line of a code block parses (its command, options and argument count) and each of its
`--set KEY=...` names a key of that stage's config; every `lmforge ...` in running text names a
real command and only options that command has. A renamed option or config key then fails here
instead of in a newcomer's first hour."""
import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from lmforge.cli import build_parser, commands
from lmforge.cli.confighelp import config_class, config_keys

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(?:\S*/)?lmforge (.*)$")
INLINE = re.compile(r"`(?:\S*/)?lmforge ([^`]+)`")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z_]*|<[^>]+>|\S*:)$")    # STAGE, COMMAND, <kind>, an output line's "sft:"


def code_lines(doc: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines inside fenced code blocks, continuations joined."""
    out, inside = [], False
    for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            if out and out[-1][1].rstrip().endswith("\\"):
                out[-1] = (out[-1][0], out[-1][1].rstrip()[:-1] + " " + line.strip())
            else:
                out.append((no, line))
    return out


def shown_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        for no, line in code_lines(doc):
            m = COMMAND.match(line.strip())
            if m:
                rest = re.split(r"\s+#", m.group(1))[0]              # a trailing comment
                rest = re.split(r"\s*(?:&&|\||;|>)\s*", rest)[0]     # a pipe or a second command
                out.append((f"{doc.name}:{no}", shlex.split(rest)))
    return out


def parse(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser(argv).parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0), err.getvalue().strip()
    return 0, ""


def test_the_docs_show_commands():
    assert len(shown_commands()) >= 20      # the extraction still finds them


@pytest.mark.parametrize("where,argv", shown_commands(), ids=[w for w, _ in shown_commands()])
def test_each_shown_command_parses_and_its_set_keys_exist(where, argv):
    code, err = parse(argv)
    assert code == 0, f"{where}: lmforge {shlex.join(argv)}: {err.splitlines()[-1] if err else code}"
    kind = commands().get(argv[0], ("", "", ""))[2]
    if not kind:
        return
    keys = {k.key for k in config_keys(config_class(kind))}
    for flag, value in zip(argv, argv[1:]):
        if flag == "--set":
            key = value.split("=", 1)[0]
            assert key in keys or any(k.startswith((key + ".", key + "[")) for k in keys), \
                f"{where}: `--set {value}`: {argv[0]} ({kind}) has no config key {key!r}"


def options_of(argv: list[str]) -> set[str]:
    """The option strings of the (sub)command `argv` names, descending into nested subcommands."""
    parser = build_parser(argv)
    words = [a for a in argv if not a.startswith("-")]
    for word in words:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        parser = sub.choices[word]
    return set(parser._option_string_actions)


def inline_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for span in INLINE.findall(line):
                argv = span.replace("\\|", " ").replace("[", " ").replace("]", " ").split()
                out.append((f"{doc.name}:{no}", argv))
    return out


def test_running_text_names_real_commands_and_options():
    known = commands()
    bad = []
    for where, argv in inline_commands():
        if not argv or PLACEHOLDER.match(argv[0]):
            continue
        if argv[0] not in known and argv[0] not in ("--help", "--version", "--debug"):
            bad.append(f"{where}: `lmforge {' '.join(argv)}`: no command {argv[0]!r}")
            continue
        options = options_of(argv)
        for a in argv[1:]:
            flag = a.split("=", 1)[0]
            if flag.startswith("--") and flag not in options:
                bad.append(f"{where}: `lmforge {' '.join(argv)}`: {argv[0]} has no option {flag}")
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_renamed_option_and_key():
    """The two checks above can fail: a wrong option and a wrong key are caught."""
    assert parse(["pretrain", "cfg.yaml", "--no-such-option"])[0] == 2
    assert "--set" in options_of(["pretrain"]) and "--max-gb" in options_of(["cache", "prune"])
    keys = {k.key for k in config_keys(config_class("pretrain"))}
    assert "train.optim.lr" in keys and "train.optim.learning_rate" not in keys
