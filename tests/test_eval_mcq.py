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
                              item_correct, load_items, parse_item, stderr)
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
    # per character (= per byte, ASCII): q1 right, q2 " aaaa" right, q3 tie again wrong
    assert res["acc_norm"] == pytest.approx(2 / 3) and res["acc_bytes"] == pytest.approx(2 / 3)
    assert res["acc_stderr"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 2))
    assert res["chance"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)


class TableTok:
    """One token per character, for a fixed alphabet that includes non-ASCII characters."""
    ALPHABET = " ab猫狗é\nAnswer:q?"

    def encode(self, text):
        return SimpleNamespace(ids=[self.ALPHABET.index(c) for c in text])


def test_acc_norm_per_character_acc_bytes_per_byte_non_ascii():
    """lm-eval 0.4.13 (ConfigurableTask.process_results): acc_norm divides by len(choice) in
    characters, acc_bytes by len(choice.encode()), both without the " " delimiter."""
    # by hand: "猫" is 1 character, 3 bytes; "ab" 2 and 2
    #   raw:        -3.0 vs -5.0           -> choice 0
    #   per char:   -3.0 vs -2.5           -> choice 1
    #   per byte:   -1.0 vs -2.5           -> choice 0
    item = Item("q", ["猫", "ab"], 1)
    assert item_correct(item, [-3.0, -5.0]) == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 0.0}
    item0 = Item("q", ["猫", "ab"], 0)
    assert item_correct(item0, [-3.0, -5.0]) == {"acc": 1.0, "acc_norm": 0.0, "acc_bytes": 1.0}
    # "é" is 1 character, 2 bytes; ties go to the first choice (np.argmax)
    assert item_correct(Item("q", ["é", "a"], 1), [-2.0, -2.0])["acc"] == 0.0

    # end to end through a unigram model: every log-likelihood is a hand sum
    V = len(TableTok.ALPHABET)
    probs = {"猫": 0.05, "狗": 0.3, "a": 0.2, "b": 0.2, "é": 0.1, " ": 0.1}
    p = torch.full((V,), 1e-3, dtype=torch.float64)
    for c, v in probs.items():
        p[TableTok.ALPHABET.index(c)] = v
    logp = (p / p.sum()).log()
    model = Unigram({})
    model.logp = torch.nn.Parameter(logp, requires_grad=False)
    model.forward = lambda input_ids, position_ids=None, doc_ids=None: logp.float().expand(*input_ids.shape, V)
    lp = {c: float(logp[TableTok.ALPHABET.index(c)]) for c in probs}
    items = [Item("q?", ["猫猫", "ab", "狗"], 1), Item("q?", ["éé", "b", "a"], 0)]
    res = evaluate_mcq(model, TableTok(), items, batch_size=2)
    want_acc = want_norm = want_bytes = 0
    for it in items:
        ll = [lp[" "] + sum(lp[c] for c in ch) for ch in it.choices]
        pick = lambda lens: max(range(len(ll)), key=lambda i: (ll[i] / lens[i], -i))  # noqa: E731
        want_acc += pick([1] * len(ll)) == it.answer
        want_norm += pick([len(c) for c in it.choices]) == it.answer
        want_bytes += pick([len(c.encode()) for c in it.choices]) == it.answer
    assert (res["acc"], res["acc_norm"], res["acc_bytes"]) == (want_acc / 2, want_norm / 2, want_bytes / 2)
    # raw picks "狗" and "b"; per character "ab" and "éé"; per byte "狗" and "éé"
    assert (res["acc"], res["acc_norm"], res["acc_bytes"]) == (0.0, 1.0, 0.5)
    assert set(res) >= {"acc_stderr", "acc_norm_stderr", "acc_bytes_stderr"}


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
