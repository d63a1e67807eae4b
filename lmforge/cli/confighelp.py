"""Every config key of a stage, with its type, default and meaning, read from the dataclasses.

`lmforge STAGE --help-config`, `lmforge config show KIND` and docs/config.md (written by
scripts/gen_config_docs.py) all come from `config_keys(cls)`: the dataclass fields walked
recursively (a nested dataclass becomes dotted keys, `optim.lr`; a list of them `stages[].name`;
a mapping of them `stages.<name>.kind`). The meaning of a field is the `# comment` at the end
of its line in the source (or the comment lines right above it), so the docs stay beside the
code they describe; a field without one says so rather than being left out.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import yaml

NO_MEANING = "(undocumented)"
REQUIRED = "(required)"


@dataclass
class Key:
    key: str          # dotted, e.g. train.optim.lr
    type: str         # e.g. float, list[str], one of: auto|fp32|bf16
    default: str      # as YAML would write it, or (required)
    meaning: str      # one line


# configs of commands that are no stage -> (module, config class); the stage kinds come from
# their descriptors (lmforge.recipe.registry)
EXTRA_CONFIGS = {
    "tokenizer-report": ("lmforge.tokenizer.report", "TokenizerReportConfig"),
}


def config_source(name: str) -> tuple[str, str]:
    """(module, class name) of the config of a stage kind or an EXTRA_CONFIGS name, read without
    importing the stage (`lmforge config list` stays free of torch)."""
    from lmforge.config import ConfigError
    from lmforge.recipe.registry import STAGES, declared
    if name in STAGES:
        d = declared(name)
        return d["config_module"], d["config"]
    if name in EXTRA_CONFIGS:
        return EXTRA_CONFIGS[name]
    raise ConfigError(f"no stage kind {name!r} (kinds: {', '.join(all_kinds())})")


def config_class(name: str) -> type:
    """The config dataclass of a stage kind (its STAGE.config) or an EXTRA_CONFIGS name."""
    module, cls = config_source(name)
    return getattr(importlib.import_module(module), cls)


def all_kinds() -> list[str]:
    from lmforge.recipe.registry import STAGES
    return [*STAGES, *EXTRA_CONFIGS]


# ------------------------------------------------------------------ comments in the source


@functools.lru_cache(maxsize=None)
def comment_lines(cls: type) -> dict[str, tuple[tuple[int, int], list[int], list[int]]]:
    """{field: ((first, last line of the field), trailing comment lines, block lines above)}
    for the fields declared in `cls`'s own class body; line numbers in the dedented source."""
    return _parse_comments(cls)[1]


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, tuple[str | None, str | None]]:
    """{field: (comment at the end of its line, comment block right above it)} for the fields
    declared in `cls`'s own class body."""
    comments, where = _parse_comments(cls)
    return {name: (" ".join(comments[n] for n in trailing) or None,
                   " ".join(comments[n] for n in above) or None)
            for name, (_, trailing, above) in where.items()}


def _parse_comments(cls: type) -> tuple[dict[int, str], dict]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}, {}
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                parts = [p.strip() for p in tok.string.split("#")]     # "# type: ignore  # why"
                text = " ".join(p for p in parts if p and not p.startswith(("type:", "noqa")))
                if text:
                    comments[tok.start[0]] = text
    except (tokenize.TokenError, SyntaxError):
        return {}, {}
    lines = source.splitlines()
    body = ast.parse(source).body[0].body
    out, owned = {}, set()
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = [n for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        if trailing:
            more = continuation_lines(lines, comments, node.end_lineno, node.col_offset)
            trailing += more
            owned.update(more)
        above, n = [], node.lineno - 1
        while (n >= 1 and n in comments and n not in owned
               and lines[n - 1].strip().startswith("#")):
            above.insert(0, n)
            n -= 1
        out[node.target.id] = ((node.lineno, node.end_lineno), trailing, above)
    return comments, out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def continuation_lines(lines: list[str], comments: dict[int, str], end: int, indent: int) -> list[int]:
    """Comment-only lines right below a field's trailing comment that are indented deeper
    than the field: they continue that comment (a comment line at the field's own
    indentation is the block above the next field, not the end of this one's sentence)."""
    out, n = [], end + 1
    while (n <= len(lines) and n in comments and lines[n - 1].strip().startswith("#")
           and _indent(lines[n - 1]) > indent):
        out.append(n)
        n += 1
    return out


def meaning_of(cls: type, name: str) -> str:
    """The field's entry in lmforge.cli.config_meanings (where its comment does not read as a
    meaning), else its trailing comment, else a comment block right above it (often a section
    heading, so it comes last), else the generic meaning of its name."""
    from lmforge.cli.config_meanings import GENERIC, MEANINGS
    above = None
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            table = MEANINGS.get(f"{klass.__module__}.{klass.__qualname__}.{name}")
            if table:
                return table
            trailing, over = field_comments(klass).get(name, (None, None))
            if trailing:
                return trailing
            above = above or over
    return above or GENERIC.get(name) or NO_MEANING


# ------------------------------------------------------------------ types and defaults


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of: " + " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args]
        names = ["mapping" if n.startswith("mapping") and any(dataclasses.is_dataclass(a) for a in args) else n
                 for n in names]
        return " | ".join(dict.fromkeys(names))
    if origin in (list, tuple):
        return f"list[{type_name(args[0]) if args else 'any'}]"
    if origin is dict:
        return f"mapping[{type_name(args[0])}, {type_name(args[1])}]" if args else "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def show_default(value: Any, limit: int = 70) -> str:
    if value is dataclasses.MISSING:
        return REQUIRED
    if isinstance(value, float):
        return repr(value)
    text = yaml.safe_dump(_plain(value), default_flow_style=True, allow_unicode=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _nested(tp: Any) -> tuple[str, type] | None:
    """(how keys continue, dataclass) when a field holds dataclasses: '.', '[].' or '.<name>.'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return ".", tp
    if origin in (Union, types.UnionType):     # X | None, or X | dict (a mapping converted to X)
        inner = [a for a in args if dataclasses.is_dataclass(a)]
        if len(inner) == 1:
            return _nested(inner[0])
    if origin in (list, tuple) and args and dataclasses.is_dataclass(args[0]):
        return "[].", args[0]
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return ".<name>.", args[1]
    return None


def section_meaning(cls: type, key: str) -> str:
    """A nested section without a comment: the first sentence of its class's docstring."""
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    if not doc or doc.startswith((cls.__name__ + "(", "`lmforge")):
        return f"the {key}.* keys below"
    return doc.split(". ")[0].rstrip(".")


def _instance(cls: type) -> Any:
    try:
        return cls()
    except Exception:   # noqa: BLE001 - a class with required fields: children show their own defaults
        return None


def config_keys(cls: type, prefix: str = "", instance: Any = None, path: tuple = ()) -> list[Key]:
    """Every key of config dataclass `cls`, depth first, in declaration order. A class nested in
    itself (a multistage schedule's `stages`) is listed once and referred to the second time."""
    path = (*path, (cls, prefix.rstrip(".") or "the top level"))
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        default = getattr(instance, f.name) if instance is not None else _default(f)
        nested = _nested(tp)
        meaning = meaning_of(cls, f.name)
        outer = next((where for klass, where in path if nested and klass is nested[1]), None)
        if outer is not None:
            out.append(Key(key, type_name(tp), show_default(default), f"{meaning} (each with the keys of {outer})"))
        elif nested and nested[0] == ".":
            child = default if dataclasses.is_dataclass(default) else _instance(nested[1])
            if meaning == NO_MEANING:
                meaning = section_meaning(nested[1], key)
            if default is None:     # an optional section, off by default
                out.append(Key(key, type_name(tp), "null", meaning))
            else:
                out.append(Key(key, "mapping", "", meaning))
            out += config_keys(nested[1], key + ".", child, path)
        elif nested:
            out.append(Key(key, type_name(tp), show_default(default), meaning))
            out += config_keys(nested[1], key + nested[0], _instance(nested[1]), path)
        else:
            out.append(Key(key, type_name(tp), show_default(default), meaning))
    return out


# ------------------------------------------------------------------ text and markdown


def format_text(cls: type, title: str) -> str:
    keys = config_keys(cls)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    if doc.startswith((cls.__name__ + "(", "`lmforge")):   # the generated signature, or just the command
        doc = ""
    width = min(max(len(k.key) for k in keys), 34)
    lines = [f"{title}: {len(keys)} keys ({cls.__module__}.{cls.__name__})"]
    if doc:
        lines.append(f"  {doc}")
    lines.append(f"  set them in the YAML config or with --set KEY=VALUE; defaults in [brackets]")
    for k in keys:
        default = f" [{k.default}]" if k.default else ""
        lines.append(f"  {k.key:<{width}}  {k.type}{default}")
        lines += textwrap.wrap(k.meaning, 100, initial_indent=" " * (width + 6),
                               subsequent_indent=" " * (width + 6))
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown(cls: type, title: str) -> str:
    rows = [f"## {title}", "", f"`{cls.__module__}.{cls.__name__}`", "",
            "| key | type | default | meaning |", "|---|---|---|---|"]
    for k in config_keys(cls):
        default = f"`{_md(k.default)}`" if k.default and k.default != REQUIRED else k.default
        rows.append(f"| `{k.key}` | {_md(k.type)} | {default} | {_md(k.meaning)} |")
    return "\n".join(rows) + "\n"
