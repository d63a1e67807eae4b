"""Shipped modern prose references (issue 35): both languages, their sources and licences
recorded, routed to every non-code group of their language, and never the held-out text the
bench evaluates on (Debian FAQ, manual pages, gettext catalogues)."""
from __future__ import annotations

import random

import numpy as np

from lmforge.config import load
from lmforge.corpus import parallel
from lmforge.data.config import QualityConfig
from lmforge.data.degrade import degrade
from lmforge.data.quality import add_shipped_references, shipped_references


def test_shipped_references_cover_both_languages_with_sources():
    refs = shipped_references()
    assert len(refs["en"]) >= 200 and len(refs["zh"]) >= 200
    for lang, docs in refs.items():
        for doc_id, text in docs:
            assert doc_id.startswith(("ref:debian-reference:", "ref:maint-guide:")), doc_id
            assert len(text) >= 500 and parallel.prose_share(text, lang) >= 0.5, doc_id


def test_routed_to_non_code_groups_of_the_language():
    cfg = load(QualityConfig, data={"positive": ["x"], "shipped_references": True, "shipped_share": 0.5})
    refs, counts = {"zh/zh": [("a", "classic")]}, {"zh/zh": 1}
    add_shipped_references(refs, counts, ["en/prose", "en/code", "zh/zh", "zh/prose", "fr/prose"], cfg)
    n_en, n_zh = len(shipped_references()["en"]), len(shipped_references()["zh"])
    # a group with references of its own gets at most as many shipped ones (shipped_share 0.5)
    assert counts == {"en/prose": n_en, "zh/zh": 1 + 1, "zh/prose": n_zh}
    assert "en/code" not in refs and "fr/prose" not in refs
    whole = load(QualityConfig, data={"positive": ["x"]})          # default: all of them
    refs3, counts3 = {"zh/zh": [("a", "classic")]}, {"zh/zh": 1}
    add_shipped_references(refs3, counts3, ["zh/zh"], whole)
    assert counts3 == {"zh/zh": 1 + n_zh}
    off = load(QualityConfig, data={"positive": ["x"], "group_by": ["domain"]})
    refs2: dict = {}
    add_shipped_references(refs2, {}, ["prose"], off)   # no lang key: no language to match
    assert refs2 == {}


def _shingles(text: str, n: int = 60) -> set[str]:
    flat = " ".join(text.split())
    return {flat[i:i + n] for i in range(0, max(0, len(flat) - n), 30)}


def test_held_out_sources_share_no_text_with_the_references():
    refs = {s for docs in shipped_references().values() for _, t in docs for s in _shingles(t)}
    held = [t for _, a, b in parallel.mo_pairs()[:400] for t in (a, b)]
    held += [t for _, a, b in parallel.man_pairs(limit=15) for t in (a, b)]
    held += [t for _, a, b in parallel.faq_pairs() for t in (a, b)]
    shared = sum(1 for t in held for s in _shingles(t) if s in refs)
    assert len(held) >= 100 and shared == 0, shared


def test_new_damage_kinds_keep_language():
    rng = random.Random(0)
    zh = shipped_references()["zh"][0][1]
    en = shipped_references()["en"][0][1]
    for kind in ("markov", "listed"):
        for text in (zh, en):
            out = degrade(text, kind, rng)
            assert out != text and len(out) > 50


def test_markov_pool_drifts_into_other_documents():
    en = shipped_references()["en"]
    own, others = en[0][1], tuple(t for _, t in en[1:5])
    alone = degrade(own, "markov", random.Random(1))
    pooled = degrade(own, "markov", random.Random(1), pool=others)
    own_words = set(own.split())
    foreign = [w for w in pooled.split() if w not in own_words]
    assert all(w in own_words or w.strip(".,;:!?)]}%([{") in own for w in alone.split())
    assert len(foreign) >= 5   # words of the pooled documents, not of the copied one
    assert abs(len(pooled.split()) - len(own.split())) < 0.3 * len(own.split())  # as long as its own


def test_unbalanced_brackets_measure():
    from lmforge.data.textinfo import info_stats, unbalanced

    assert unbalanced("f(x) = [a, (b)] “quoted” 《书名》（注）") == 0
    assert unbalanced("an (open one, a closed] one, “and") == 3   # each kind on its own
    assert unbalanced("(a [b) c]") == 0   # crossing pairs are not judged
    assert info_stats("（未闭合 的 括号 " * 4)["unbalanced"] == 1.0


def test_dense_keys_saved_with_the_model_and_checked(tmp_path):
    import json

    import pytest

    from lmforge.config import ConfigError
    from lmforge.data.quality_model import QualityModel
    from lmforge.data.textinfo import DENSE

    pos = [t for _, t in shipped_references()["en"][:20]]
    neg = [degrade(t, "markov", random.Random(i)) for i, t in enumerate(pos)]
    for keys, name in (([*DENSE, "unbalanced"], "new"), (list(DENSE), "old")):
        m = QualityModel(n_features=1 << 10, dense_keys=keys)
        m.fit(pos, neg)
        m.save(tmp_path / name)
        if name == "old":   # a model saved before the keys were recorded: the default block
            meta = json.loads((tmp_path / name / "model.json").read_text())
            del meta["dense_keys"]
            (tmp_path / name / "model.json").write_text(json.dumps(meta))
        back = QualityModel.load(tmp_path / name)
        assert back.dense_keys == tuple(keys)
        assert np.allclose(back.score(pos[:3]), m.score(pos[:3]), atol=1e-5)
    with pytest.raises(ConfigError, match="dense_keys"):
        load(QualityConfig, data={"dense_keys": ["distinct", "nonsense"]})
    with pytest.raises(ConfigError, match="markov_pool"):
        load(QualityConfig, data={"markov_pool": -1})


def test_damaged_corpus_copies_stand_in_for_own_references_only():
    """Damaged corpus documents carry the corpus's vocabulary into the negatives: with the
    shipped references they match half of the group's own references, not of all of them
    (else Python docs beside Debian manuals learn their own topic as low quality)."""
    from lmforge.data.quality_train import GroupTrainer

    cfg = load(QualityConfig, data={"positive": ["x"]})
    docs = [(f"doc{i}", f"corpus document {i} " * 20) for i in range(20)]
    own = [(f"own{i}", f"own reference {i} " * 20) for i in range(10)]
    shipped = [(f"ship{i}", f"shipped reference {i} " * 20) for i in range(30)]
    negs = GroupTrainer(cfg, "en/prose", frozenset(i for i, _ in shipped)).negatives(docs, own + shipped)
    from_docs = [s for s, _, _ in negs if s.startswith("doc")]
    assert len(negs) == 40 and len(from_docs) == 5, (len(negs), len(from_docs))
    # without shipped references: half of the negatives from the corpus, as before
    negs = GroupTrainer(cfg, "en/prose").negatives(docs, own)
    assert len(negs) == 10 and sum(s.startswith("doc") for s, _, _ in negs) == 5
    # only shipped references (a modern-prose corpus with none of its own): no corpus copies
    negs = GroupTrainer(cfg, "zh/prose", frozenset(i for i, _ in shipped)).negatives(docs, shipped)
    assert len(negs) == 30 and not any(s.startswith("doc") for s, _, _ in negs)


def test_prose_only_measures_are_off_in_code_groups():
    from lmforge.data.quality import is_code_group
    from lmforge.data.quality_train import GroupTrainer

    cfg = load(QualityConfig, data={"positive": ["x"]})
    assert "unbalanced" in cfg.dense_keys
    assert is_code_group(["en/code"], cfg.group_by) and not is_code_group(["en/code", "en/prose"], cfg.group_by)
    assert "unbalanced" not in GroupTrainer(cfg, "en/code", code=True).model().dense_keys
    assert "unbalanced" in GroupTrainer(cfg, "en/prose").model().dense_keys
