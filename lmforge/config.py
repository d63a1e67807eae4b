"""Typed configs: dataclasses loaded from YAML, with `--set a.b=c` overrides.

Every stage's config is a tree of dataclasses. `load(cls, path, overrides)` reads the
YAML, applies overrides, and converts the result field by field; an unknown key or a
value of the wrong type is refused with a ConfigError that names the file and the
dotted key, before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")

# YAML aliases let a few lines expand to billions of nodes (the "billion laughs"); every walk
# over the loaded tree (recipe expansion, type checks) would then hang. A config is refused
# when its tree, with every alias expanded, holds more nodes than this.
MAX_YAML_NODES = 100_000
# An integer given as a float (`steps: 1e6`) must be exactly representable: 1e30 is a typo.
MAX_FLOAT_INT = 2 ** 53
MAX_FLOAT = 3.4e38   # the float32 range: config numbers end up in float32 tensors


class ConfigError(ValueError):
    """A bad config: the message is one line naming the file and the key."""


def _where(source: str, key: str) -> str:
    key = key or "<top level>"
    return f"{source}: {key}" if source else key


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1 and isinstance(value, dict):   # an optional section: its own error names the key
            raise ConfigError(errors[0])
        raise ConfigError(f"{_where(source, key)}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{_where(source, key)}: expected one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):   # `data=file.jsonl` for a list of files: a list of one
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, key)}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, key)}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, key, source): _convert(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(source, key)}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_FLOAT_INT:
            return int(value)  # 1e6 in YAML is a float; accept it for step counts
        raise ConfigError(f"{_where(source, key)}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{_where(source, key)}: expected a number, got {value!r}")
        if not math.isfinite(number):   # `lr: .inf` or nan would train on garbage without a word
            raise ConfigError(f"{_where(source, key)}: must be a finite number, got {value!r}")
        if abs(number) > MAX_FLOAT:   # becomes inf (or an overflow error) in a float32 tensor
            raise ConfigError(f"{_where(source, key)}: {value!r} is beyond the float32 range (3.4e38)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{_where(source, key)}: expected a string, got {value!r}")
    raise ConfigError(f"{_where(source, key)}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: Any, source: str = "", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types.

    A dataclass may define a classmethod `_base(data) -> dict` that supplies defaults
    under the given keys (used by model presets: `preset: tiny` plus overrides).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, prefix)}: expected a mapping, got {data!r}")
    base = getattr(cls, "_base", None)
    if base is not None:
        data = {**base(data), **data}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{_where(source, key)}: unknown key (known keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, key, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # from a __post_init__ check(): message starts with the field
        raise ConfigError(_where(source, f"{prefix}.{e}" if prefix else str(e))) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_where(source, prefix)}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.optim.lr=3e-4")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    return parts, load_yaml_text(raw, f"--set {text!r}") if raw.strip() else ""


def set_key(data: dict, parts: list[str], value: Any, where: str, append: bool = False) -> dict:
    """Put `value` at the dotted key `parts` of `data`, making mappings on the way (`append`:
    add its items to the list there). The one routine behind `--set`, a recipe's
    `--set stages.NAME...` and a command's options (`--data FILE`)."""
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {p} is not a mapping")
        node = nxt
    node[parts[-1]] = list(node.get(parts[-1]) or []) + list(value) if append else value
    return data


def blame_set(e: ConfigError, where: str, set_keys: dict[str, str], what: str = "") -> ConfigError:
    """A config error "WHERE KEY: why" as "--set TEXT: WHAT KEY: why" when KEY (a key under it, or
    the section of an unknown key) was given by --set (`set_keys`: dotted key -> the --set text), else `e` unchanged: the
    user is sent to the command line, not to a file they did not write that key in."""
    msg = str(e)
    if not msg.startswith(where):
        return e
    rest = msg[len(where):]
    key = rest.split(":", 1)[0]
    for dotted, text in set_keys.items():
        if key == dotted or key.startswith((dotted + ".", dotted + "[")) or dotted.startswith(key + "."):
            return ConfigError(f"--set {text}: {what}{rest}")
    return e


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides or []:
        parts, value = parse_override(text)
        set_key(data, parts, value, f"--set {text!r}")
    return data


def _expanded_size(node, memo: dict, budget: int) -> int:
    """Nodes in the tree under `node` with every alias expanded (an alias is the same node
    object again); counted once per distinct node, so a bomb is measured without expanding it."""
    key = id(node)
    if key in memo:
        return memo[key]
    n = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            n += _expanded_size(child, memo, budget)
            if n > budget:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            n += _expanded_size(k, memo, budget) + _expanded_size(v, memo, budget)
            if n > budget:
                break
    memo[key] = n
    return n


def load_yaml_text(text: str, source: str) -> Any:
    """YAML text -> Python values, the one way every config is read: safe tags only, and a
    tree over MAX_YAML_NODES nodes once aliases are expanded refused. Errors are ConfigError
    naming `source` (a file, or the --set argument)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES} YAML nodes once aliases are expanded "
                              f"(an alias bomb?); write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}:{line} invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    data = load_yaml_text(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
         data: dict | None = None) -> T:
    """Load `cls` from a YAML file (or a dict), with `a.b=c` overrides applied."""
    source = str(path) if path else "<config>"
    if data is None:
        data = read_yaml(path) if path else {}
    data = apply_overrides(dict(data), overrides or [])
    return from_dict(cls, data, source=source)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists (for saving next to checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def check(condition: bool, key: str, message: str) -> None:
    """Validation helper for __post_init__: raises ConfigError naming the key."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def deep_merge(base: dict, over: dict | None) -> dict:
    """`base` with `over`'s keys laid on top, nested mappings merged key by key (for defaults
    a stage puts under the user's own keys)."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
