"""Continuation choice on held-out text (lmforge.eval.continuation): the items, their scoring
against a model that knows the text and one that does not, and the eval stage's effect row."""
import numpy as np
import torch

from lmforge.eval.continuation import N_CHOICES, build_items, evaluate
from lmforge.shards import TokenDataset, write_dataset

V = 64


def counting_docs(rng, n: int, length: int, domain: int) -> list[tuple[list[int], int]]:
    """Documents that count up by 1 (mod V) from a random start: the next token is the last + 1."""
    return [([(int(s) + t) % V for t in range(length)], domain) for s in rng.integers(0, V, n)]


class Counter(torch.nn.Module):
    """A 'model' that knows the counting text: logits favour token x + 1 after x; `know=False`
    gives every token the same logit (it knows nothing)."""

    def __init__(self, know: bool = True):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.know = know

    def forward(self, ids, position_ids=None, doc_ids=None):
        logits = torch.zeros(*ids.shape, V) + self.w
        if self.know:
            logits.scatter_(-1, ((ids + 1) % V).unsqueeze(-1), 8.0)
        return logits


def dataset(tmp_path):
    rng = np.random.default_rng(0)
    docs = counting_docs(rng, 6, 70, 0) + counting_docs(rng, 2, 200, 1) + counting_docs(rng, 2, 30, 2)
    write_dataset(tmp_path, docs, V, domains=["a", "b", "tiny"], split="val")
    return TokenDataset(tmp_path, "val"), docs


def test_items_are_held_out_spans_with_same_domain_distractors(tmp_path):
    ds, docs = dataset(tmp_path)
    items = build_items(ds, 40, context=16, answer=4, seed=1)
    assert items and len(items) <= 40
    # domain "tiny": 2 docs of 30 tokens give 2 spans (< 4 choices): no items from it
    assert {it["domain"] for it in items} == {"a", "b"}
    texts = {d: [toks for toks, dom in docs if dom == i] for i, d in enumerate(["a", "b", "tiny"])}
    for it in items:
        assert len(it["choices"]) == N_CHOICES and 0 <= it["answer"] < N_CHOICES
        assert len({tuple(c) for c in it["choices"]}) == N_CHOICES and all(len(c) == 4 for c in it["choices"])
        whole = it["context"] + it["choices"][it["answer"]]
        assert 8 <= len(it["context"]) <= 16
        # the right choice continues its context inside a document of the item's domain
        assert any(whole == doc[k:k + len(whole)] for doc in texts[it["domain"]] for k in range(len(doc)))
        for j, c in enumerate(it["choices"]):   # every distractor is a span of the same domain
            assert any(c == doc[k:k + 4] for doc in texts[it["domain"]] for k in range(len(doc)))
    assert build_items(ds, 40, 16, 4, seed=1) == items   # deterministic
    # 0 = every span: a: 6 docs x 3 spans, b: 2 docs x 10 spans
    assert len(build_items(ds, 0, 16, 4)) == 6 * 3 + 2 * 10


def test_a_model_that_knows_the_text_beats_chance_and_one_that_does_not_ties(tmp_path):
    ds, _ = dataset(tmp_path)
    items = build_items(ds, 40, context=16, answer=4)
    knows = evaluate(Counter(True), items)
    assert knows["acc"] == 1.0 and knows["hits"] == knows["n"] == len(items) and knows["chance"] == 0.25
    assert set(knows["by_domain"]) == {"a", "b"}
    blind = evaluate(Counter(False), items)   # equal scores: argmax takes the first choice
    assert blind["acc"] == np.mean([it["answer"] == 0 for it in items])


def test_eval_effect_heads_with_the_continuation_row():
    from lmforge.stagekit.score_effects import mcq_effect

    quiz = {"quiz": {"results": {"5": {"shots": 5, "chance": 0.25, "n": 40, "acc": 0.25}}}}
    e = mcq_effect(quiz, {"acc": 0.6, "n": 100, "hits": 60, "chance": 0.25})
    assert e["metric"].startswith("continuation choice") and e["verdict"] == "gain" and e["hits"] == 60
    assert e["more"][0]["metric"].startswith("multiple choice quiz") and e["more"][0]["verdict"] == "within noise"
    assert mcq_effect(quiz)["metric"].startswith("multiple choice quiz")   # without it: as before


def test_eval_tables_show_the_continuation_result():
    from lmforge.report.tables import eval_tables

    res = {"continuation": {"acc": 0.5, "n": 9, "hits": 4, "chance": 0.25,
                            "by_domain": {"zh": {"acc": 0.25, "n": 4}, "code": {"acc": 0.8, "n": 5}}}}
    (title, table), = eval_tables(res)
    assert title == "Continuation choice on held-out text"
    assert "| all | 9 | 0.25 | 0.500 ± 0.177 |" in table and "| code | 5 |" in table
