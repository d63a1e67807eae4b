"""Prompt evolution (Yi: hard prompts evolved WizardLM-style), after Evol-Instruct
(Xu et al. 2023, "WizardLM: Empowering Large Language Models to Follow Complex Instructions").

A generator model rewrites a prompt with one of the templates below (four "in-depth"
methods that make it harder, one "in-breadth" that makes a new prompt of the same
domain), then answers the new prompt. An evolution is eliminated (Evol-Instruct's
"elimination evolving", section 3.3) when

    no_information_gain  the new prompt adds nothing: equal to the old one once
                         normalised, or it uses no word the old one did not (the paper
                         asks ChatGPT; this is the cheap, deterministic stand-in)
    copied_template      it copies the template's words ("#Rewritten Prompt#", "given
                         prompt", "rewritten prompt", "created prompt", ...)
    model_refused        the answer contains "sorry" and is short (< 80 words)
    empty_response       the answer is only punctuation and stop words
    empty_prompt         the generator wrote no prompt at all

Survivors are added as new conversations (the originals stay); each round evolves the
previous round's survivors again (the paper runs 4 rounds). Only single-turn
conversations (one user prompt, one reply; a system prompt is kept) are evolved.

This is meant for a *capable* generator (a chat model far larger than the one being
trained, as WizardLM used ChatGPT). A small lmforge checkpoint exercises the plumbing
but mostly writes text the elimination rules discard. The generator is passed in as a
function (conversations -> replies), so this module needs no inference code.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from lmforge.align.curate import Drop, Item, normalise

_DEPTH = ("I want you act as a Prompt Rewriter.\n"
          "Your objective is to rewrite a given prompt into a more complex version to make those famous AI "
          "systems (e.g., chatgpt and GPT4) a bit harder to handle.\n"
          "But the rewritten prompt must be reasonable and must be understood and responded by humans.\n"
          "Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. "
          "Also, please do not omit the input in #The Given Prompt#.\n"
          "You SHOULD complicate the given prompt using the following method:\n"
          "{method}\n"
          "You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can "
          "only add 10 to 20 words into #The Given Prompt#.\n"
          "'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to "
          "appear in #Rewritten Prompt#\n"
          "#The Given Prompt#:\n{prompt}\n"
          "#Rewritten Prompt#:\n")

_BREADTH = ("I want you act as a Prompt Creator.\n"
            "Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\n"
            "This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\n"
            "The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.\n"
            "The #Created Prompt# must be reasonable and must be understood and responded by humans.\n"
            "'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear "
            "in #Created Prompt#\n"
            "#Given Prompt#:\n{prompt}\n"
            "#Created Prompt#:\n")

METHODS = {
    "constraints": "Please add one more constraints/requirements into #The Given Prompt#",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the "
              "inquiry can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite "
                 "it to explicitly request multiple-step reasoning.",
    "breadth": None,   # in-breadth evolving: its own template
}

_COPIED = re.compile(r"#\s*(the\s+)?(given|rewritten|created)\s+prompt\s*#|\b(given|rewritten|created)\s+prompt\b",
                     re.IGNORECASE)
_HEADER = re.compile(r"^\s*#?\s*(rewritten|created)\s+prompt\s*#?\s*:?\s*", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def evolution_prompt(prompt: str, method: str) -> str:
    """The generator's instruction that evolves `prompt` by `method` (a key of METHODS)."""
    if method not in METHODS:
        raise ValueError(f"unknown evolution method {method!r} (known: {', '.join(METHODS)})")
    if METHODS[method] is None:
        return _BREADTH.format(prompt=prompt)
    return _DEPTH.format(method=METHODS[method], prompt=prompt)


def clean_evolved(text: str) -> str:
    """The generated prompt without a repeated header line and surrounding blank space."""
    return _HEADER.sub("", text.strip(), count=1).strip()


def _words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text)} | set(_CJK.findall(text))


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    return ENGLISH_STOP_WORDS


def eliminate(original: str, evolved: str, reply: str) -> str | None:
    """Why an evolution fails (Evol-Instruct's elimination rules), or None when it survives."""
    if not evolved.strip():
        return "empty_prompt"
    if _COPIED.search(evolved):
        return "copied_template"
    if normalise(evolved) == normalise(original) or not (_words(evolved) - _words(original)):
        return "no_information_gain"
    if "sorry" in reply.casefold() and len(reply.split()) < 80:
        return "model_refused"
    content = {w for w in _words(reply) if w not in _stop_words()}
    if not content:
        return "empty_response"
    return None


def single_turn(item: Item) -> bool:
    roles = [m["role"] for m in item.messages if m["role"] != "system"]
    return roles == ["user", "assistant"]


Generate = Callable[[list[list[dict]]], list[str]]


def evolve(items: Sequence[Item], generate: Generate, methods: Sequence[str], rounds: int, share: float,
           seed: int) -> tuple[list[Item], list[Drop], dict]:
    """(evolved items, eliminated evolutions, details). A seeded `share` of the single-turn
    items is evolved in round 1; each later round evolves the previous round's survivors.
    `generate` maps conversations (ChatML messages, ending on a user turn) to replies."""
    for m in methods:
        evolution_prompt("", m)  # unknown methods fail before any generation
    rng = np.random.default_rng([seed, 23])
    pool = [it for it in items if single_turn(it)]
    pick = sorted(rng.permutation(len(pool))[:round(share * len(pool))].tolist())
    current = [pool[k] for k in pick]
    added, failed = [], []
    per_round = []
    for r in range(1, rounds + 1):
        if not current:
            break
        chosen = [methods[int(rng.integers(len(methods)))] for _ in current]
        asks = [[{"role": "user", "content": evolution_prompt(it.prompt, m)}] for it, m in zip(current, chosen)]
        new_prompts = [clean_evolved(t) for t in generate(asks)]
        convs = [([{"role": "system", "content": it.system}] if it.system else [])
                 + [{"role": "user", "content": p}] for it, p in zip(current, new_prompts)]
        replies = [t.strip() for t in generate(convs)]
        survivors = []
        for it, m, conv, reply in zip(current, chosen, convs, replies):
            msgs = conv + [{"role": "assistant", "content": reply}]
            rid = f"{it.rec.get('id', it.where)}#evol{r}"
            rec = {**{k: v for k, v in it.rec.items() if k not in ("messages", "curation")}, "id": rid,
                   "messages": msgs, "evolution": {"method": m, "round": r, "from": it.rec.get("id", it.where)}}
            new = Item(rec, it.where, it.task, it.source, origin="evolved")
            why = eliminate(it.prompt, conv[-1]["content"], reply)
            if why:
                failed.append(Drop(new, f"evolution_{why}", f"round {r}, method {m}"))
            else:
                survivors.append(new)
        per_round.append({"round": r, "tried": len(current), "survived": len(survivors)})
        added += survivors
        current = survivors
    reasons: dict[str, int] = {}
    for d in failed:
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    details = {"methods": list(methods), "rounds": rounds, "share": share, "single_turn": len(pool),
               "per_round": per_round, "eliminated": reasons}
    return added, failed, details
