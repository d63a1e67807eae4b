"""Safety pairs with model-written refusals (Index-1.9B).

Index found that human-written refusals have a much higher perplexity under its SFT model
than refusals the model writes itself, and trained DPO on the latter: the SFT model is
prompted to refuse (a system prompt telling it the request is unsafe) and its refusal is
the *chosen* reply, trained without that system prompt; the *rejected* reply is the one the
record gives, else the model's own answer without the instruction (what it would have said).

Input records (jsonl): {"prompt": str | [messages], "refusal": str?, "rejected": str?};
`refusal` is a human-written refusal, kept only to compare perplexities.
`builtin` names the small mild set shipped in lmforge/align/data/unsafe_prompts.jsonl.

The sampler and the scorer are passed in (align needs no inference code): the stage binds
lmforge.infer.generate and a reply-perplexity function of the SFT model.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from statistics import median

from lmforge.align.chat_template import message_error, render

BUILTIN = Path(__file__).parent / "data" / "unsafe_prompts.jsonl"
REFUSAL_SYSTEM = ("The user's request below is unsafe, harmful or unethical. As a responsible assistant, politely "
                  "refuse it in one or two sentences, and offer a safe alternative when there is one.")


def load_unsafe(paths: list[str], errors) -> tuple[list[dict], Counter]:
    """Records {"prompt": messages, "refusal", "rejected"}; bad lines go to `errors`, counted."""
    from lmforge.align.sft_data import iter_jsonl

    stats: Counter = Counter()
    out = []
    files = [str(BUILTIN) if p == "builtin" else p for p in paths]
    for p, n, rec in iter_jsonl(files, errors, stats):
        prompt = rec.get("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        err = message_error(prompt) or (None if prompt[-1]["role"] == "user" else "the prompt must end with a user turn")
        bad = [k for k in ("refusal", "rejected") if rec.get(k) is not None and not isinstance(rec[k], str)]
        if err or bad:
            stats["malformed"] += 1
            errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False)[:2000],
                       detail=err or f"{bad[0]} must be a string")
            continue
        out.append({"prompt": prompt, "refusal": rec.get("refusal"), "rejected": rec.get("rejected")})
    return out, stats


def refusal_pairs(records: list[dict], sample, score, system: str = REFUSAL_SYSTEM) -> tuple[list[dict], dict]:
    """(DPO records with the model-written refusal as chosen, refusals.json content).

    sample(list of ChatML prompt texts, call) -> replies (call 0: refusals, 1: plain answers, so
    a sampler can seed them apart); score(prompt messages, reply) -> perplexity of
    the reply under the SFT model, in the plain context (no refusal instruction)."""
    asked = [render([{"role": "system", "content": system}, *r["prompt"]], add_generation_prompt=True)
             for r in records]
    refusals = sample(asked, 0)
    need_plain = [i for i, r in enumerate(records) if not r["rejected"]]
    plain = dict(zip(need_plain, sample([render(records[i]["prompt"], add_generation_prompt=True)
                                          for i in need_plain], 1))) if need_plain else {}
    stats: Counter = Counter(records=len(records))
    pairs, per_pair = [], []
    for i, (r, mine) in enumerate(zip(records, refusals)):
        rejected = r["rejected"] or plain.get(i, "")
        if not mine.strip() or not rejected.strip():
            stats["empty"] += 1
            continue
        if mine.strip() == rejected.strip():
            stats["tie"] += 1
            continue
        row = {"model": score(r["prompt"], mine)}
        if r["refusal"]:
            row["human"] = score(r["prompt"], r["refusal"])
        per_pair.append(row)
        pairs.append({"prompt": r["prompt"], "chosen": mine, "rejected": rejected,
                      "meta": {"source": "model_refusal", "human_refusal": r["refusal"],
                               "rejected_kind": "given" if r["rejected"] else "model_sample"}})
    stats["pairs"] = len(pairs)

    def summary(kind):
        v = [p[kind] for p in per_pair if kind in p and math.isfinite(p[kind])]
        return {"n": len(v), "mean_ppl": sum(v) / len(v) if v else None, "median_ppl": median(v) if v else None}
    return pairs, {"pairs": len(pairs), "stats": dict(stats), "system": system,
                   "summary": {k: summary(k) for k in ("human", "model")}, "per_pair": per_pair}
