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


def test_stage_streams_what_the_builder_makes(tmp_path):
    """The stage writes its conversations as they are made (a progress bar, flat memory at the
    report's 30K): the file holds exactly the builder's conversations, and stats.json its lengths."""
    from lmforge import config
    from lmforge.stages.longsft import LongSFTConfig, body
    from lmforge.tokenizer.train import load_tokenizer, save_tokenizer, train_bpe

    mods = [json, random, textwrap, inspect]
    docs = [Doc(m.__name__, inspect.getsource(m)) for m in mods]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d.text, "title": d.title}) + "\n" for d in docs))
    specials = ["<|endoftext|>", "<|pad|>"]
    save_tokenizer(train_bpe([d.text for d in docs], 400, specials), tmp_path / "tok", special_tokens=specials,
                   bos_token=None, eos_token=specials[0], pad_token=specials[1], chat_template=None)
    cfg = config.from_dict(LongSFTConfig, {"inputs": [str(tmp_path / "docs.jsonl")], "tokenizer": str(tmp_path / "tok"),
                                           "out_dir": str(tmp_path / "out"), "long_count": 9, "general_count": 0,
                                           "length_range": [300, 900]})
    (tmp_path / "out").mkdir()
    summary = body(cfg, progress=False)
    tok = load_tokenizer(str(tmp_path / "tok"))
    pool = [Doc(d["title"], d["text"]) for d in map(json.loads, (tmp_path / "docs.jsonl").read_text().splitlines())]
    want, stats = build_long_conversations(pool, 9, (300, 900), lambda t: len(tok.encode(t, add_special_tokens=False).ids))
    got = [json.loads(line) for line in (tmp_path / "out" / "long.jsonl").read_text().splitlines()]
    assert got == want and summary["long"] == 9
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert {k: written[k] for k in ("min_tokens", "max_tokens", "mean_tokens", "tries")} == \
        {k: stats[k] for k in ("min_tokens", "max_tokens", "mean_tokens", "tries")}
