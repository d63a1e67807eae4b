"""Long-SFT conversations stay within the context length they were drawn for, also when the
documents are longer than the window (the second of the two documents every task needs
overshot it by up to its own length: the index smoke run's conversations all came out longer
than its SFT window once the quality step kept longer documents)."""
from __future__ import annotations

import inspect
import json
import random
import textwrap

from lmforge.align.long_sft import Doc, build_long_conversations


def _words(text: str) -> int:
    return len(text.split())


def test_context_within_the_drawn_length_with_long_documents():
    # real text: the standard library's own modules, whole (hundreds to thousands of words)
    mods = [json, random, textwrap, inspect]
    docs = [Doc(m.__name__, inspect.getsource(m)) for m in mods]
    docs += [Doc(f"{m.__name__} doc", m.__doc__ or "") for m in mods]
    assert max(_words(d.text) for d in docs) > 2000
    lo, hi = 200, 400
    convs, stats = build_long_conversations(docs, 12, (lo, hi), _words, seed=0)
    assert stats["conversations"] >= 6
    for c in convs:
        context = c["messages"][0]["content"]
        assert "Document 2:" in context   # every task still reads two documents
    # the proportional cut is approximate: a little over the drawn length, never a document's worth
    assert stats["max_tokens"] <= hi * 1.15 + 60, stats
