"""Multiple choice by log-likelihood: brute-force check, a hand-checkable unigram model,
standard errors, few-shot prompts and the item format."""
import copy
import json
import math
import statistics
from types import SimpleNamespace

import pytest
import torch

from lmforge.corpus.mcq import make_item
from lmforge.eval.mcq import (Item, build_requests, continuation_logprobs, evaluate_mcq, few_shot_prefix,
                              load_items, parse_item, stderr)
from lmforge.tokenizer.train import load_tokenizer
from test_eval_helpers import make_tokenizer
from test_eval_perplexity import tiny_model


class CharTok:
    """One token per character (code point < 128)."""
    def encode(self, text):
        return SimpleNamespace(ids=[ord(c) for c in text])


class Unigram(torch.nn.Module):
    """log p(next token) = logp[token] whatever the context: every score is a hand sum."""
    def __init__(self, probs: dict[str, float], floor=1e-4):
        super().__init__()
        p = torch.full((128,), floor, dtype=torch.float64)
        for c, v in probs.items():
            p[ord(c)] = v
        self.logp = torch.nn.Parameter((p / p.sum()).log(), requires_grad=False)
        self.cfg = SimpleNamespace(max_seq_len=256)

    def forward(self, input_ids, position_ids=None, doc_ids=None):
        return self.logp.float().expand(*input_ids.shape, 128)


def test_hand_checkable_unigram_scores():
    model = Unigram({"a": 0.5, "b": 0.2, " ": 0.01})
    lp = {c: float(model.logp[ord(c)]) for c in "ab "}
    items = [Item("q1", ["b", "a"], 1),            # " a" beats " b"
             Item("q2", ["a", "aaaa"], 1),         # raw sum prefers the shorter " a"; per byte " aaaa"
             Item("q3", ["bb", "ab", "ba"], 2)]    # " ab" == " ba": ties go to the first (wrong here)
    reqs = build_requests(items, CharTok(), max_len=256)
    got = continuation_logprobs(model, reqs, batch_size=2)
    want = [lp[" "] + lp["b"], lp[" "] + lp["a"], lp[" "] + lp["a"], lp[" "] + 4 * lp["a"],
            lp[" "] + 2 * lp["b"], lp[" "] + lp["a"] + lp["b"], lp[" "] + lp["b"] + lp["a"]]
    assert got == pytest.approx(want, abs=1e-4)
    res = evaluate_mcq(model, CharTok(), items, batch_size=3)
    # acc: q1 right, q2 wrong (picks "a"), q3 wrong (tie -> "ab")
    assert res["acc"] == pytest.approx(1 / 3)
    # per byte: q1 right, q2 " aaaa" right, q3 tie again wrong
    assert res["acc_norm"] == pytest.approx(2 / 3)
    assert res["acc_stderr"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 2))
    assert res["chance"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)


def test_matches_brute_force_logprob_sums(tmp_path):
    tok = load_tokenizer(make_tokenizer(tmp_path / "tok"))
    model = tiny_model(tok.get_vocab_size(), seed=1)
    items = [Item("The quick brown fox jumps over the", ["lazy dog.", "moon", "a single step", "12345"], 0, "en"),
             Item("def add(a, b):", ["return a + b", "print(os.getcwd())", "床前明月光"], 0, "code"),
             Item("举头望明月，", ["低头思故乡。", "疑是地上霜。"], 0, "zh")]
    m64 = copy.deepcopy(model).double()
    for shots in (0, 2):
        reqs = build_requests(items, tok, max_len=128, shots=shots, seed=3)
        got = continuation_logprobs(model, reqs, batch_size=4)
        for (ctx, cont), g in zip(reqs, got):
            ids = torch.tensor(ctx + cont)[None]
            with torch.no_grad():
                logp = torch.log_softmax(m64(ids[:, :-1]).double(), -1)[0]
            want = float(logp[len(ctx) - 1:].gather(-1, torch.tensor(cont)[:, None]).sum())
            assert g == pytest.approx(want, rel=1e-5, abs=1e-5)
        res = evaluate_mcq(model, tok, items, shots=shots, seed=3, max_len=128)
        k, correct = 0, []
        for it in items:
            scores = got[k:k + len(it.choices)]
            k += len(it.choices)
            correct.append(max(range(len(scores)), key=scores.__getitem__) == it.answer)
        assert res["acc"] == pytest.approx(sum(correct) / len(items))
        assert set(res["subjects"]) == {"en", "code", "zh"}


def test_truncation_keeps_the_choice():
    items = [Item("x" * 500, ["aa", "b"], 0)]
    reqs = build_requests(items, CharTok(), max_len=64)
    for (ctx, cont), choice in zip(reqs, items[0].choices):
        assert len(ctx) + len(cont) == 64 and cont == CharTok().encode(" " + choice).ids
        assert ctx[-8:] == CharTok().encode("\nAnswer:").ids  # the end of the question survives


def test_stderr_formula():
    vals = [1.0] * 7 + [0.0] * 13
    assert stderr(vals) == pytest.approx(statistics.stdev(vals) / math.sqrt(len(vals)))
    p, n = 7 / 20, 20
    assert stderr(vals) == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
    assert math.isnan(stderr([1.0]))


def test_few_shot_prefix_never_uses_the_item():
    pool = [Item(f"q{i}", ["x", "y"], i % 2, "s1" if i < 3 else "s2", id=str(i)) for i in range(8)]
    p = few_shot_prefix(pool[0], pool, 3, seed=0)
    assert p.count("\nAnswer:") == 3 and "q0\n" not in p
    assert "q1\n" in p and "q2\n" in p  # same subject first
    assert p == few_shot_prefix(pool[0], pool, 3, seed=0)  # deterministic
    assert "q1\nAnswer: y\n\n" in p  # solved with the right answer
    assert few_shot_prefix(pool[0], pool, 0, seed=0) == ""


def test_item_format_and_malformed_lines(tmp_path):
    f = tmp_path / "items.jsonl"
    good = {"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "math"}
    corpus_item = make_item("quiz/x:1", "African: Algeria\nWhat is the capital?", "Algiers",
                            ["Dakar", "Luanda", "Conakry", "Rabat"], "k", {"file": "africa"})
    lines = [json.dumps(good), "{broken", json.dumps({**good, "answer": 2}), json.dumps({**good, "choices": "ab"}),
             "", json.dumps(corpus_item)]
    f.write_text("\n".join(lines) + "\n")
    res = load_items(f)
    assert [i.subject for i in res.items] == ["math", "africa"]
    assert res.items[1].choices[res.items[1].answer] == "Algiers"
    assert [e.split(": ")[0] for e in res.errors] == [f"{f}:2", f"{f}:3", f"{f}:4"]
    with pytest.raises(ValueError, match="answer"):
        parse_item({**good, "answer": True}, "x")
