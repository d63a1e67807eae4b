"""Code rules (Skywork): keep only a configured share of JSON/YAML files in code data.

JSON and YAML files are mostly data, not code. A document counts as JSON/YAML when
its meta names a path/filename/lang ending in .json/.yaml/.yml (or lang json/yaml),
or, lacking that, when its text parses as a JSON object/array. Which ones are kept is
fixed by a hash of (seed, document id).
"""
from __future__ import annotations

import json

from .pipeline import Step
from .topics import keep_draw

EXTS = (".json", ".jsonl", ".yaml", ".yml")
NAME_KEYS = ("path", "filename", "file", "file_path", "url")


def is_json_yaml(doc: dict) -> bool:
    meta = doc.get("meta") or {}
    for k in NAME_KEYS:
        v = meta.get(k)
        if isinstance(v, str) and v.lower().endswith(EXTS):
            return True
    lang = str(meta.get("language") or meta.get("code_lang") or "").lower()
    if lang in ("json", "yaml", "yml"):
        return True
    text = doc["text"].lstrip()
    if text[:1] in "{[":
        try:
            json.loads(text)
            return True
        except ValueError:
            return False
    return False


class CodeStep(Step):
    def open_shard(self, ctx, index):
        cfg = self.cfg

        def apply(i, doc):
            if cfg.domain and doc["meta"].get("domain") != cfg.domain:
                return doc, None
            if is_json_yaml(doc) and keep_draw(cfg.seed, doc["id"]) >= cfg.json_yaml_keep:
                return None, "code_json_yaml"
            return doc, None
        return apply
