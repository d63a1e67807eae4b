"""lmforge's few-shot draw as an lm-evaluation-harness sampler (fewshot_config.sampler).

lm-eval's default sampler draws examples with its own random stream, so its 5-shot prompts
would not be lmforge's. This one reproduces lmforge.eval.mcq.few_shot_prefix: every other
item of the file, those of the item's subject first, each group shuffled by
random.Random(f"{SEED}:{item id}"). It is self-contained (no lmforge import), so the task
runs wherever lm-eval is installed.
"""
from __future__ import annotations

import random

from lm_eval.api.samplers import ContextSampler

SEED = 0   # lmforge eval's mcq.seed default; change both together


def subject(doc: dict) -> str:
    """The item's subject as lmforge.eval.mcq.parse_item finds it."""
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    return str(doc.get("subject") or meta.get("subject") or meta.get("file") or meta.get("kind") or "")


def item_id(doc: dict) -> str | None:
    # lmforge names an item without an id "FILE:LINE", which a sampler cannot see: such items
    # get other examples than lmforge eval gives them (their 0-shot scores still agree).
    return None if doc.get("id") is None else str(doc["id"])


class LmforgeSampler(ContextSampler):
    def sample(self, n: int, eval_doc=None, df=None, **kwargs):
        if n <= 0:
            return []
        if df:
            self.df = df
        docs = self.fewshot_docs()
        key = item_id(eval_doc) if eval_doc is not None else None
        if key is not None:
            others = [d for d in docs if item_id(d) != key]
        else:
            others = [d for d in docs if d != eval_doc]
            key = (eval_doc or {}).get("question", "")
        rng = random.Random(f"{SEED}:{key}")
        subj = subject(eval_doc or {})
        same = [d for d in others if subject(d) == subj]
        rest = [d for d in others if subject(d) != subj]
        rng.shuffle(same)
        rng.shuffle(rest)
        shots = (same + rest)[:n]
        if len(shots) < n:
            raise ValueError(f"{n} few-shot examples asked for, the file has {len(shots)} other items")
        return shots
