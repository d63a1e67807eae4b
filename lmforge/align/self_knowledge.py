"""Self-knowledge data, RLCD-style, as StableLM 2 builds it (after Yang et al. 2023, "RLCD").

For each first message (sampled from the base model: lmforge.align.first_messages) the chat
model answers twice:
- positive: with a few-shot system prompt that states the self-knowledge facts and shows
  example answers that use them;
- negative: the same model without that system prompt (its unguided answer).
Both are kept as training conversations WITHOUT the facts prompt (the model must learn to
answer so by itself). The class is the C-RLFT condition, and StableLM 2 marks it only on
the negatives: a positive stays in plain SFT format (user, assistant: exactly what the model
sees at inference), a negative opens with a system message holding only the dedicated
negative token (`NEGATIVE_TOKEN`, added to the tokenizer as a special token by the stage).
So asking in plain format asks for the positive class. The pairs are also written as RLCD
preference pairs (chosen = positive, rejected = negative) usable by `lmforge dpo`. Empty
samples and positive == negative ties are counted.

Generation goes through the sampler the stage passes in (lmforge.infer.generate.generate_ids:
KV cache, stop at <|im_end|>).
"""
from __future__ import annotations

from collections import Counter

import torch
from tqdm import tqdm

from lmforge.align.chat_template import encode_chat

DEFAULT_FACTS = [
    "My name is Forge.",
    "I am a small language model trained with the lmforge toolkit.",
    "I was trained on Python documentation, Python code, classical Chinese poems and chatbot dialogs.",
    "I can make mistakes, so important answers should be checked.",
]
NEGATIVE_TOKEN = "<|negative|>"
# First messages used only when the stage is given no base model to sample them from (and no
# `prompts`): the simplified data of earlier versions, kept as a fallback.
DEFAULT_PROMPTS = [
    "Who are you?", "What is your name?", "Who made you?", "What are you?", "Tell me about yourself.",
    "What data were you trained on?", "Are you a human?", "Can you make mistakes?",
    "Introduce yourself.", "What kind of model are you?",
]
# Held-out paraphrases of identity questions for the before/after check of the stage: none is
# a DEFAULT_PROMPTS or few-shot question, and the first messages are sampled from the base model.
HELDOUT_QUESTIONS = [
    "Could you tell me who you are?", "What's your name?", "What should I know about you?",
    "How were you made?", "Which data did you learn from?", "Are you ever wrong?",
    "Describe yourself in one sentence.", "What are you called?", "Who built you?",
    "Are you a person or a program?", "What do you know about yourself?", "Can I trust every answer you give?",
    "Hello! Who am I talking to?", "What toolkit trained you?", "Say something about your training.",
    "Do you have a name?",
]
# False facts in the same style: the control of the before/after check. A model that only got
# better at identity-style replies lowers both losses; one that learned the facts lowers the
# true facts' loss more (the effect is the gap, control loss - fact loss, before vs after).
CONTROL_FACTS = [
    "My name is Atlas.",
    "I am a large search engine built by a public library.",
    "I was trained on news articles, legal texts, cooking recipes and song lyrics.",
    "I am never wrong, so my answers need no checking.",
]
DEFAULT_FEW_SHOT = [
    {"user": "What should I call you?", "assistant": "You can call me Forge."},
    {"user": "Are you always right?", "assistant": "No. I am a small language model and I can make mistakes."},
]


def facts_system_prompt(facts: list[str], few_shot: list[dict]) -> str:
    """The positive (RLCD) system prompt: the facts, then example exchanges that use them."""
    lines = ["You are an AI assistant. Facts about yourself:", *[f"- {f}" for f in facts]]
    if few_shot:
        lines.append("Examples of answers that use these facts:")
        for ex in few_shot:
            lines += [f"User: {ex['user']}", f"Assistant: {ex['assistant']}"]
    lines.append("Answer the user truthfully using these facts.")
    return "\n".join(lines)


def prompt_ids(tok, user: str, system: str | None) -> list[int]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    ids, _ = encode_chat(tok, msgs, "none", add_generation_prompt=True)
    return ids.tolist()


def sample_replies(tok, prompts: list[list[int]], generate_ids, seed: int, batch_size: int = 16,
                   desc: str | None = None) -> list[str]:
    """Decoded replies; `generate_ids(prompt_batch, seed)` is the sampler (the stage binds the
    model and the sampling settings: lmforge.infer.generate.generate_ids). Batch b samples with
    seed + its first index, so seeds never repeat within seed .. seed + len(prompts)."""
    out: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=desc is None):
        ids = generate_ids(prompts[start:start + batch_size], seed + start)
        out += [tok.decode(x, skip_special_tokens=True).strip() for x in ids]
    return out


def conditioned(user: str, reply: str, cls: str, negative_token: str) -> list[dict]:
    """The C-RLFT training messages: plain for a positive, the negative token as the system
    message of a negative."""
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return msgs if cls == "positive" else [{"role": "system", "content": negative_token}, *msgs]


@torch.no_grad()
def rlcd_samples(tok, prompts: list[str], facts: list[str], few_shot: list[dict], samples_per_prompt: int,
                 generate_ids, seed: int, progress: bool = False,
                 negative_token: str = NEGATIVE_TOKEN) -> tuple[list[dict], list[dict], dict]:
    """(C-RLFT conversations with "class" (D_c), RLCD preference pairs, stats);
    `generate_ids(prompt batch, seed)` samples the model's replies."""
    system = facts_system_prompt(facts, few_shot)
    stats: Counter = Counter()
    convs, pairs = [], []
    n = len(prompts)
    for k in range(samples_per_prompt):
        pos = sample_replies(tok, [prompt_ids(tok, p, system) for p in prompts], generate_ids, seed + 2 * k * n,
                             desc=f"positives {k + 1}/{samples_per_prompt}" if progress else None)
        neg = sample_replies(tok, [prompt_ids(tok, p, None) for p in prompts], generate_ids, seed + (2 * k + 1) * n,
                             desc=f"negatives {k + 1}/{samples_per_prompt}" if progress else None)
        for p, a, b in zip(prompts, pos, neg):
            stats["prompts_sampled"] += 1
            for cls, reply in (("positive", a), ("negative", b)):
                if not reply:
                    stats[f"empty_{cls}"] += 1
                    continue
                stats[f"kept_{cls}"] += 1
                convs.append({"messages": conditioned(p, reply, cls, negative_token), "class": cls,
                              "meta": {"source": "rlcd", "sample": k}})
            if a and b and a != b:
                pairs.append({"prompt": p, "chosen": a, "rejected": b, "meta": {"source": "rlcd", "sample": k}})
            elif a and b:
                stats["tie"] += 1
    stats["pairs"] = len(pairs)
    return convs, pairs, dict(stats)


def fact_conversations(questions: list[str], facts: list[str]) -> list[dict]:
    """Written positives: each identity question answered by each fact, one fact per reply, in
    plain chat format (what the held-out check scores, on other questions). For a model too
    small to copy the facts out of the RLCD system prompt, the only way the facts reach it."""
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f}],
             "class": "positive", "meta": {"source": "fact_questions", "question": i, "fact": j}}
            for i, q in enumerate(questions) for j, f in enumerate(facts)]


def fact_probe_items(tok, facts: list[str], questions: list[str] | None = None) -> list[list[tuple]]:
    """For each held-out question, one (ids, target mask) per fact: the fact as the assistant's
    reply in the plain chat format (no system prompt: what the model sees at inference).
    A question's score is the mean over facts of the reply loss (lmforge.eval.effect)."""
    return [[encode_chat(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": f}], "last")
             for f in facts] for q in (questions or HELDOUT_QUESTIONS)]
