"""Dialogs for SFT and DPO: PyPI `chatterbot-corpus` (BSD-3-Clause), English and Chinese.

Raw record per YAML file: {"lang": "en"|"zh", "file": "english/ai.yml", "text": raw YAML}.
Outputs:
- sft.jsonl: {"id", "messages": [{"role": "user"|"assistant", "content"}...], "meta"};
  turns alternate user/assistant from the first line; a trailing user turn is dropped.
- dpo.jsonl: synthetic pairs from these dialogs (see preference.py).
- docs/chatterbot.jsonl.zst: the YAML files themselves as code documents (format "yaml"),
  for Skywork's keep-some-JSON/YAML rule.
YAML is parsed with BaseLoader: every scalar stays a string ("yes" is not True).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import yaml

from .common import Source, override_path, pip_version, round_robin
from lmforge.align.pairs import make_pairs

DIST = "chatterbot-corpus"
VERSION = "1.3.3"
LICENSE = "BSD-3-Clause"
LANGS = {"english": "en", "chinese": "zh"}


def locate(override: Path | None) -> Path | None:
    root = override_path("LMFORGE_CHATTERBOT_DIR", override)
    if root is None:
        import importlib.util

        spec = importlib.util.find_spec("chatterbot_corpus")
        if spec is None or not spec.origin:
            return None
        root = Path(spec.origin).parent / "data"
    return root if any((root / d).is_dir() for d in LANGS) else None


def version(root: Path) -> str:
    return pip_version(DIST)


def _files(root: Path, folder: str) -> Iterator[dict]:
    for f in sorted((root / folder).glob("*.yml")):
        yield {"lang": LANGS[folder], "file": f"{folder}/{f.name}", "text": f.read_text("utf-8")}


def read(root: Path) -> Iterator[dict]:
    yield from round_robin([_files(root, d) for d in sorted(LANGS) if (root / d).is_dir()])


def _conversations(rec: dict, ctx) -> Iterator[dict]:
    where = rec.get("file", "?")
    try:
        data = yaml.load(rec["text"], Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        ctx.reject("chatterbot", where, f"invalid YAML: {str(e).splitlines()[0]}")
        return
    convs = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(convs, list):
        ctx.reject("chatterbot", where, "no conversations list")
        return
    cats = data.get("categories") or []
    category = cats[0] if isinstance(cats, list) and cats and isinstance(cats[0], str) else ""
    conv = ctx.zh if rec["lang"] == "zh" else (lambda s: s)
    for i, turns in enumerate(convs):
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            ctx.reject("chatterbot", f"{where}#{i}", "conversation is not a list of strings")
            continue
        turns = [conv(t.strip()) for t in turns]
        if len(turns) % 2:
            turns = turns[:-1]  # end on an assistant reply
        if len(turns) < 2 or not all(turns):
            ctx.reject("chatterbot", f"{where}#{i}", "fewer than two non-empty turns")
            continue
        messages = [{"role": "user" if k % 2 == 0 else "assistant", "content": t}
                    for k, t in enumerate(turns)]
        yield {"id": f"chatterbot/{where}#{i}", "messages": messages,
               "meta": {"source": DIST, "lang": rec["lang"], "category": category, "license": LICENSE}}


def emit(records: list[dict], ctx) -> dict:
    sft = []
    counts = {"docs": 0}
    for rec in records:
        if not isinstance(rec.get("text"), str) or rec.get("lang") not in LANGS.values():
            ctx.reject("chatterbot", str(rec.get("file")), "record without YAML text")
            continue
        sft.extend(_conversations(rec, ctx))
        ctx.add("docs/chatterbot.jsonl.zst", {
            "id": f"chatterbot/{rec['file']}", "text": rec["text"],
            "meta": {"source": DIST, "domain": "code", "lang": "code", "format": "yaml",
                     "license": LICENSE, "path": rec["file"]}})
        counts["docs"] += 1
    for c in sft:
        ctx.add("sft.jsonl", c)
    pairs = make_pairs(sft, ctx.seed)
    for p in pairs:
        ctx.add("dpo.jsonl", p)
    counts.update(sft=len(sft), dpo=len(pairs))
    return counts


SOURCE = Source(
    name="chatterbot", package=f"{DIST}=={VERSION}", installer="pip", license=LICENSE,
    description="English and Chinese conversations (YAML): SFT dialogs and DPO pairs",
    setup=f"pip install {DIST}=={VERSION}", env="LMFORGE_CHATTERBOT_DIR",
    locate=locate, version=version, read=read, emit=emit)
