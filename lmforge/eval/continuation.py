"""Continuation choice on held-out text: which of 4 token spans follows a context (a LAMBADA /
HellaSwag-style multiple choice built from the token data's val split, no benchmark file).

An item is a held-out document's `context` tokens and the `answer` tokens that follow them;
the distractors are the answer spans of 3 other items of the same domain (other documents
first), so every choice is text of the same kind and length (in tokens) and only the fit to
the context tells them apart. Each choice is scored by the summed log-probability of its
tokens after the context (lmforge.eval.mcq.continuation_logprobs); all choices have the same
token count, so no length normalisation is needed. Chance is 1 / 4.

Why: the quiz and poem benchmarks ask for facts a 5M-parameter model trained on ~1M tokens
does not hold (the tiny recipe scores them at chance), so they cannot show whether it learned
anything; following a text (the word that continues a split word, the next line of code, a
name used before) is what language-model pretraining teaches first, and these spans come from
documents no stage trained on (the val split).

Items are spread over domains (an equal share each) and, within a domain, evenly over the
spans of its documents: span k of a document of L tokens has its answer at
p_k = min(context, L - answer) + k * (context + answer) (while p_k + answer <= L), after the
`context` tokens before it (fewer at a short document's start, at least MIN_CONTEXT).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

N_CHOICES = 4
MIN_CONTEXT = 8   # a shorter context hardly says what follows


@dataclass
class Span:
    doc: int
    domain: str
    context: list[int]
    answer: list[int]


def spans_of(ds, context: int, answer: int) -> dict[str, list[Span]]:
    """Every candidate span of every document, by domain name."""
    out: dict[str, list[Span]] = {}
    for i in range(ds.n_docs):
        ids, L = ds.doc(i), ds.doc_len(i)
        domain = ds.domain_names[int(ds.doc_domain[i])]
        p = min(context, L - answer)
        while p >= MIN_CONTEXT and p + answer <= L:
            out.setdefault(domain, []).append(Span(i, domain, [int(t) for t in ids[max(0, p - context):p]],
                                                   [int(t) for t in ids[p:p + answer]]))
            p += context + answer
    return out


def even(xs: list, n: int) -> list:
    if len(xs) <= n:
        return list(xs)
    return [xs[k] for k in np.linspace(0, len(xs) - 1, n).round().astype(int)]


def build_items(ds, n_items: int, context: int = 48, answer: int = 8, seed: int = 0) -> list[dict]:
    """Up to n_items (0: every span) {"domain", "context", "choices" (token lists), "answer"
    (index)}; a domain with fewer than N_CHOICES spans gives none (its items would have no
    same-kind distractors)."""
    by_domain = {d: s for d, s in spans_of(ds, context, answer).items() if len(s) >= N_CHOICES}
    if not by_domain:
        return []
    share = -(-n_items // len(by_domain)) if n_items > 0 else max(len(s) for s in by_domain.values())
    items = []
    for domain in sorted(by_domain):
        pool = by_domain[domain]
        for k, sp in enumerate(even(pool, share)):
            r = random.Random(f"{seed}:{domain}:{sp.doc}:{k}")
            others = [o.answer for o in pool if o.doc != sp.doc and o.answer != sp.answer]
            if len(others) < N_CHOICES - 1:   # a domain of one long document: its other spans
                others = [o.answer for o in pool if o.answer != sp.answer and o is not sp]
            picked: list[list[int]] = []
            for o in r.sample(others, len(others)):
                if o not in picked:
                    picked.append(o)
                if len(picked) == N_CHOICES - 1:
                    break
            if len(picked) < N_CHOICES - 1:
                continue
            choices = picked + [sp.answer]
            r.shuffle(choices)
            items.append({"domain": domain, "context": sp.context, "choices": choices,
                          "answer": choices.index(sp.answer)})
    return even(items, n_items) if n_items > 0 else items


def evaluate(model, items: list[dict], batch_size: int = 16, progress: bool = False) -> dict:
    """{"acc", "n", "hits", "chance", "by_domain": {domain: {"acc", "n"}}} by summed log-probability."""
    from lmforge.eval.mcq import continuation_logprobs

    reqs = [(it["context"], c) for it in items for c in it["choices"]]
    lp = np.asarray(continuation_logprobs(model, reqs, batch_size, progress, desc="continuation"))
    right = [int(np.argmax(lp[N_CHOICES * j:N_CHOICES * (j + 1)]) == it["answer"]) for j, it in enumerate(items)]
    by: dict[str, list[int]] = {}
    for it, ok in zip(items, right):
        by.setdefault(it["domain"], []).append(ok)
    return {"acc": float(np.mean(right)) if right else None, "n": len(right), "hits": int(sum(right)),
            "chance": 1.0 / N_CHOICES,
            "by_domain": {d: {"acc": float(np.mean(v)), "n": len(v)} for d, v in sorted(by.items())}}
