"""The quality classifier judges quality within each language and domain.

A planted corpus of real text (Python docs reST, Python stdlib code, Chinese poetry from
the committed sample) and hand-written junk (tests/planted_junk.py: ad pages, pages of
navigation chrome, obfuscated and spam code), none of it seen by the classifier's
synthetic negatives, runs through the pipeline's quality step.
"""
import json
import random
from collections import defaultdict

import numpy as np
import pytest

from lmforge.config import ConfigError, load
from lmforge.data.config import DataConfig
from lmforge.data.degrade import KINDS, degrade
from lmforge.data.pipeline import Stats, run_pipeline
from lmforge.data.quality import group_threshold
from lmforge.data.textinfo import TermMatcher, info_stats, read_sections
from lmforge.io.writers import write_documents
from planted_junk import junk


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The committed sample built into a corpus (docs + quality positives)."""
    from lmforge.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, sources=["pydocs", "poetry", "stdlib"], from_sample=True, log=lambda m: None)
    return out


def _read(path):
    from lmforge.data.pipeline import iter_shard

    return list(iter_shard(path))


def planted(corpus, folder, seed=0, n_zh=120, n_junk=30):
    """Reference files and a raw corpus: real good text + hand-written junk per language."""
    rng = random.Random(seed)
    refs = [json.loads(l) for l in (corpus / "quality_positives.jsonl").read_text().splitlines()]
    en_pages = [d for d in refs if d["meta"]["lang"] == "en"]
    zh_classics = [d for d in refs if d["meta"]["lang"] == "zh"]
    rng.shuffle(en_pages)
    ref_docs = en_pages[:25] + zh_classics[:n_zh]  # the other pages are corpus documents
    good_en = [d["text"] for d in en_pages[25:]]
    poems = [d["text"] for d in _read(corpus / "docs/poetry.jsonl.zst") if len(d["text"]) >= 60]
    good_zh = rng.sample(poems, n_zh)
    good_code = [d["text"] for d in _read(corpus / "docs/stdlib.jsonl.zst")
                 if d["meta"].get("format") == "python"]
    docs = []
    for lang, domain, good in (("en", "prose", good_en), ("zh", "zh", good_zh), ("en", "code", good_code)):
        docs += [{"id": f"{domain}-good-{i}", "text": t, "meta": {"lang": lang, "domain": domain, "planted": "good"}}
                 for i, t in enumerate(good)]
        bad = junk("code" if domain == "code" else lang, rng, good, n_junk)
        docs += [{"id": f"{domain}-junk-{i}", "text": t, "meta": {"lang": lang, "domain": domain, "planted": k}}
                 for i, (k, t) in enumerate(bad)]
    rng.shuffle(docs)
    write_documents(folder / "raw/docs.jsonl.zst", docs)
    write_documents(folder / "ref.jsonl", [{"id": d["id"], "text": d["text"], "meta": d["meta"]} for d in ref_docs])
    return folder


def run_quality(folder, **quality):
    cfg = load(DataConfig, data={
        "input": [str(folder / "raw")], "output": str(folder / "out"), "workers": 1, "progress": False,
        "docs_per_shard": 200, "steps": ["quality"],
        "quality": {"positive": [str(folder / "ref.jsonl")], "n_features": 1 << 16, **quality}})
    run_pipeline(cfg, log=lambda *a: None)
    stats = json.loads((folder / "out/01-quality/stats.json").read_text())
    kept = defaultdict(lambda: [0, 0])  # (domain, good|junk) -> [kept, total]
    for sub in ("kept", "rejected"):
        for p in (folder / f"out/01-quality/{sub}").iterdir():
            for d in _read(p):
                k = (d["meta"]["domain"], "good" if d["meta"]["planted"] == "good" else "junk")
                kept[k][0] += sub == "kept"
                kept[k][1] += 1
    return stats, {k: a / b for k, (a, b) in kept.items()}


def test_junk_dropped_and_code_and_chinese_kept_like_english(corpus, tmp_path):
    stats, share = run_quality(planted(corpus, tmp_path))
    print({f"{d}/{g}": round(v, 3) for (d, g), v in sorted(share.items())})
    assert Stats.from_dict(stats).adds_up()
    # junk in every language and domain goes; where references exist (prose, zh) nearly all
    # of it. Code has no references: its model is a junk detector whose positives hold the
    # group's own junk (quality.py), trained on ~40 documents a fold, and it is the weak
    # spot: over planted seeds and corpus builds it kept 20-53% of the code junk and
    # 86-97% of the good code (English prose: 92-100%). The bounds below are what it
    # reaches everywhere, not the goal (docs/quality-topics.md).
    assert share[("prose", "junk")] <= 0.15 and share[("zh", "junk")] <= 0.15, share
    assert share[("code", "junk")] <= 0.6, share
    assert share[("prose", "good")] >= 0.7
    assert share[("zh", "good")] >= share[("prose", "good")] - 1e-9
    assert share[("code", "good")] >= share[("prose", "good")] - 0.1
    # stats: per-domain and per-language kept shares that add up to the step's totals
    by_domain = stats["by_domain"]
    assert set(by_domain) == {"prose", "zh", "code"}
    assert sum(v["kept"]["docs"] for v in by_domain.values()) == stats["kept"]["docs"]
    assert sum(v["in"]["docs"] for v in stats["by_lang"].values()) == stats["in"]["docs"]
    groups = stats["quality_groups"]
    assert groups["zh/zh"]["positives"] == "reference"  # Chinese classics are its references
    code = [g for g in groups.values() if "en/code" in g["members"]][0]
    assert code["positives"] in ("corpus", "mixed")  # no code references: its own documents
    # out-of-fold accuracy over all damage kinds, word salad (caught least) included
    assert all(g["heldout"]["accuracy"] > 0.75 for g in groups.values() if g["heldout"])


def test_min_keep_floor_then_reused_model_in_tag_mode(corpus, tmp_path):
    import shutil

    folder = planted(corpus, tmp_path, seed=1, n_zh=60, n_junk=12)
    stats, share = run_quality(folder, threshold=0.999, min_keep=0.6)
    for g in stats["quality_groups"].values():  # the floor binds: thresholds lowered
        assert g["threshold"] < 0.999 and g["sample_kept_share"] >= 0.6
    for v in stats["by_group"].values():
        assert v["kept_share"] >= 0.6  # the sample is the whole group here
    scores = {d["id"]: d["meta"]["quality"] for sub in ("kept", "rejected")
              for p in (folder / f"out/01-quality/{sub}").iterdir() for d in _read(p)}
    # the trained model folder, reused: the same scores; tag mode drops nothing
    shutil.copytree(folder / "out/01-quality/work/model", tmp_path / "model")
    shutil.rmtree(folder / "out")
    stats, share = run_quality(folder, model=str(tmp_path / "model"), mode="tag")
    assert stats["kept"]["docs"] == stats["in"]["docs"] and not stats["removed"]
    again = {d["id"]: d["meta"]["quality"] for p in (folder / "out/01-quality/kept").iterdir()
             for d in _read(p)}
    assert again == scores


def test_group_threshold_floor():
    s = np.array([0.1, 0.2, 0.3, 0.9])
    assert group_threshold(s, 0.5, 0.0) == 0.5
    assert group_threshold(s, 0.5, 0.25) == 0.5  # already keeps 25%
    t = group_threshold(s, 0.5, 0.5)
    assert t == 0.3 and np.mean(s >= t) >= 0.5


def test_degradations_keep_script_and_change_text():
    en = "The river runs through the valley, and the old mill stands beside it.\n" * 3
    zh = "河水穿过山谷，旧磨坊就立在河边。秋天水流湍急的时候，农民们把粮食运来。\n" * 3
    for text in (en, zh):
        for k in KINDS:
            out = degrade(text, k, random.Random(0))
            assert out and out != text, k
    shuffled = degrade(en, "shuffled", random.Random(0))
    assert sorted(shuffled.split()) != sorted(en.split()) or shuffled != en
    assert sorted(w.strip(",.") for w in shuffled.split()) == sorted(w.strip(",.") for w in en.split())


def test_term_list_and_information_measures(tmp_path):
    terms = read_sections(__import__("lmforge.data.textinfo", fromlist=["AD_TERMS"]).AD_TERMS)
    assert len(terms["en"]) > 30 and len(terms["zh"]) > 30
    m = TermMatcher(["buy now", "% off", "包邮"])
    assert m.count("Buy now! 50% off, 包邮. buy nowhere") == 3
    rep = info_stats("buy now " * 100)
    prose = info_stats(" ".join(f"word{i}" for i in range(300)))
    assert rep["distinct"] < 0.05 and prose["distinct"] == 1.0 and rep["ad_density"] == 1.0
    bad = tmp_path / "t.txt"
    bad.write_text("term before header\n")
    with pytest.raises(ValueError, match="t.txt:1"):
        read_sections(bad)


def test_config_refuses_bad_quality_keys():
    from lmforge.data.config import QualityConfig

    with pytest.raises(ConfigError, match="negative_kinds"):
        load(QualityConfig, data={"negative_kinds": ["nonsense"]})
    with pytest.raises(ConfigError, match="min_keep"):
        load(QualityConfig, data={"min_keep": 1.5})
    with pytest.raises(ConfigError, match="heldout_fraction: unknown key"):
        load(QualityConfig, data={"heldout_fraction": 0.2})
