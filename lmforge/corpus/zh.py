"""Traditional -> simplified Chinese with OpenCC, when it is installed.

Works with the PyPI `opencc` package (C++ bindings, `OpenCC("t2s")`) and with the pure
Python `opencc-python-reimplemented` (same import name and config name). Without either,
Chinese text is kept as the source has it and the build says so.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

from .common import pip_version

INSTALL = "pip install opencc==1.4.2"


@lru_cache(maxsize=1)
def converter() -> Callable[[str], str] | None:
    try:
        import opencc
    except ImportError:
        return None
    for config in ("t2s", "t2s.json"):
        try:
            cc = opencc.OpenCC(config)
            cc.convert("漢")
        except Exception:  # the two packages disagree on config names; try the next one
            continue
        return cc.convert
    return None


def converter_version() -> str:
    for dist in ("opencc", "OpenCC", "opencc-python-reimplemented"):
        v = pip_version(dist)
        if v != "unknown":
            return f"{dist} {v}"
    return "unknown"


def to_simplified(text: str) -> str:
    conv = converter()
    return conv(text) if conv is not None else text
