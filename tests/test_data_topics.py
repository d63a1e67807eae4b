"""Topic downsampling acts without hand-picked clusters: ad clusters (shipped zh/en term
list) and low-information clusters (information score) are thinned, informative ones kept.
The embedding backend puts paraphrases together."""
import json
import random

import numpy as np
import pytest

from lmforge.config import ConfigError, load
from lmforge.data.config import DataConfig, TopicsConfig
from lmforge.data.pipeline import Stats, iter_shard, run_pipeline
from lmforge.data.topic_model import TopicModel, fit_tfidf, fit_topic_model
from lmforge.io.writers import write_documents
from planted_junk import CITIES, ad_page_en, ad_page_zh
from test_data_quality import corpus  # noqa: F401  (the sample corpus fixture)


def weather_page(rng):
    """A low-information SEO page: one phrase and its variants, over and over."""
    c = rng.choice(CITIES)
    parts = [f"{c} weather", f"{c} weather today", f"weather in {c}", f"{c} forecast",
             f"{c} weather tomorrow", f"{c} rain"]
    return "\n".join(" ".join(rng.choice(parts) for _ in range(8)) for _ in range(rng.randint(8, 14)))


def planted(corpus, folder):
    rng = random.Random(0)
    read = lambda name: list(iter_shard(corpus / "docs" / name))
    refs = [json.loads(l) for l in (corpus / "quality_positives.jsonl").read_text().splitlines()]
    docs = [dict(d, meta={"domain": "prose", "kind": "good"}) for d in refs if d["meta"]["lang"] == "en"]
    docs += [dict(d, meta={"domain": "code", "kind": "good"}) for d in read("stdlib.jsonl.zst")
             if d["meta"].get("format") == "python"][:60]
    poems = [d for d in read("poetry.jsonl.zst") if len(d["text"]) >= 40]
    docs += [dict(d, meta={"domain": "zh", "kind": "good"}) for d in rng.sample(poems, 80)]
    docs += [{"id": f"ad-en-{i}", "text": ad_page_en(rng), "meta": {"domain": "web", "kind": "ad"}} for i in range(40)]
    docs += [{"id": f"ad-zh-{i}", "text": ad_page_zh(rng), "meta": {"domain": "web", "kind": "ad"}} for i in range(40)]
    docs += [{"id": f"wx-{i}", "text": weather_page(rng), "meta": {"domain": "web", "kind": "lowinfo"}}
             for i in range(40)]
    rng.shuffle(docs)
    write_documents(folder / "raw/docs.jsonl.zst", docs)
    return folder


def test_auto_downsampling_thins_ads_and_low_information_keeps_the_rest(corpus, tmp_path):  # noqa: F811
    folder = planted(corpus, tmp_path)
    cfg = load(DataConfig, data={"input": [str(folder / "raw")], "output": str(folder / "out"),
                                 "workers": 1, "progress": False, "docs_per_shard": 100,
                                 "steps": ["topics"], "topics": {"clusters": 8}})
    assert cfg.topics.downsample == "auto"  # the default: a topics step acts by itself
    run_pipeline(cfg, log=lambda *a: None)
    stats = json.loads((folder / "out/01-topics/stats.json").read_text())
    assert Stats.from_dict(stats).adds_up()
    report = json.loads((folder / "out/01-topics/topics.json").read_text())
    docs = {sub: [d for p in (folder / f"out/01-topics/{sub}").iterdir() for d in iter_shard(p)]
            for sub in ("kept", "rejected")}
    kind_of = {}
    for d in docs["kept"] + docs["rejected"]:
        kind_of.setdefault(d["meta"]["topic"], []).append(d["meta"]["kind"])
    for r in report:
        kinds = kind_of.get(r["cluster"], [])
        major = max(set(kinds), key=kinds.count) if kinds else None
        share = kinds.count(major) / len(kinds) if kinds else 0
        if major == "ad" and share > 0.8:
            assert r["reason"] == "ads" and r["weight"] == 0.1, r
        elif major == "lowinfo" and share > 0.8:
            assert r["reason"] == "low_information" and r["weight"] == 0.5, r
        elif major == "good":
            assert r["weight"] == 1.0, r  # informative clusters are never thinned
        assert r["size"] == len(kinds)
    kept = [d["meta"]["kind"] for d in docs["kept"]]
    total = [d["meta"]["kind"] for d in docs["kept"] + docs["rejected"]]
    share = {k: kept.count(k) / total.count(k) for k in ("good", "ad", "lowinfo")}
    assert share["good"] == 1.0 and share["ad"] <= 0.25 and 0.25 <= share["lowinfo"] <= 0.75, share
    assert stats["downsampled_clusters"] and stats["by_domain"]["web"]["kept_share"] < 0.5
    assert stats["by_domain"]["zh"]["kept_share"] == 1.0
    assert sum(stats["cluster_sizes"]) == stats["in"]["docs"]


def test_downsample_none_and_hand_weights_win(corpus, tmp_path):  # noqa: F811
    folder = planted(corpus, tmp_path)
    base = {"input": [str(folder / "raw")], "output": str(folder / "out"), "workers": 1,
            "progress": False, "steps": ["topics"]}
    run_pipeline(load(DataConfig, data={**base, "topics": {"clusters": 8, "downsample": "none"}}),
                 log=lambda *a: None)
    stats = json.loads((folder / "out/01-topics/stats.json").read_text())
    assert not stats["removed"] and not stats["downsampled_clusters"]


def test_tfidf_transform_matches_scikit_learn():
    rng = random.Random(0)
    words = "river mill grain autumn water wheel 河 水 山 谷 bread town".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(50)]
    vec, X = fit_tfidf(texts, 1000)
    m = TopicModel("tfidf", vec.get_feature_names_out().tolist(), vec.idf_, np.zeros((1, X.shape[1])), [[]])
    assert np.allclose(m.tfidf(texts).toarray(), vec.transform(texts).toarray())


def test_embedding_backend_puts_paraphrases_together():
    from lmforge.data import embed

    if not embed.available():
        pytest.skip("optional extra lmforge[embed] not installed")
    groups = [["The cat sat on the mat.", "A cat was sitting on the rug.", "On the mat there sat a cat.",
               "The kitten rested on the carpet."],
              ["Stock markets fell sharply today.", "Shares dropped steeply on the exchange.",
               "Equity prices tumbled in today's trading.", "The stock market plunged today."],
              ["How do I bake sourdough bread?", "What is the recipe for sourdough loaves?",
               "Steps to make sourdough bread at home.", "Baking a sourdough loaf: a guide."]]
    texts = [t for g in groups for t in g]
    cfg = TopicsConfig(clusters=3, backend="embedding")
    model = fit_topic_model(texts, cfg)
    labels = model.assign(texts)
    per_group = [set(labels[i * 4:(i + 1) * 4]) for i in range(3)]
    assert all(len(s) == 1 for s in per_group), labels  # paraphrases share a cluster
    assert len(set().union(*per_group)) == 3  # and the three topics differ


def test_config_refuses_bad_topics_keys(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="ad_keep"):
        load(TopicsConfig, data={"ad_keep": 2})
    with pytest.raises(ConfigError, match="ad_terms"):
        load(TopicsConfig, data={"ad_terms": str(tmp_path / "missing.txt")})
    from lmforge.data import embed

    monkeypatch.setattr(embed, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"lmforge\[embed\]"):
        load(TopicsConfig, data={"backend": "embedding"})
