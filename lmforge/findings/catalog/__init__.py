"""The findings, in suite order: one module per finding, each declaring `FINDING`.

Adding a finding is its module plus one line here. Modules are imported only when used."""
from __future__ import annotations

import importlib

from lmforge.config import ConfigError

NAMES: list[str] = [   # issue 27's numbering
    "normhead",        # 1  Index: Norm-Head vs a plain head at a spiking LR
    "schedules",       # 2  Index: WSD vs cosine vs linear; WSD decayed from an intermediate checkpoint
    "depthwidth",      # 3  Index: deep-narrow vs shallow-wide at equal parameters
    "decaydata",       # 4  Index: the decay stage's data
    "ropebase",        # 5  Index-32K: RoPE base trained per base; NTK vs naive vs trained
    "longfails",       # 6  Index-32K's failed experiments
    "growth",          # 7  Yi: depth up-scaling by the most similar block vs random vs scratch
    "stemramp",        # 8  Skywork: gradual STEM ramp vs a step change
    "zloss",           # 9  StableLM 2: z-loss on vs off
    "dedup",           # 10 data: deduplicated vs planted duplicates; filtered vs unfiltered
    "alignment",       # 11 SFT and DPO against their start model
]


def available() -> list[str]:
    """The names whose module is in this tree."""
    out = []
    for name in NAMES:
        try:
            importlib.import_module(f"lmforge.findings.catalog.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"lmforge.findings.catalog.{name}":
                raise
            continue
        out.append(name)
    return out


def get(name: str):
    if name not in NAMES:
        raise ConfigError(f"name: unknown finding {name!r} (known: {', '.join(NAMES)})")
    try:
        return importlib.import_module(f"lmforge.findings.catalog.{name}").FINDING
    except ModuleNotFoundError as e:
        if e.name == f"lmforge.findings.catalog.{name}":
            raise ConfigError(f"name: finding {name!r} is listed but not in this tree yet") from None
        raise
