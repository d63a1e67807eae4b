"""The pipeline end to end: accounting, bad input, bad config, skip on rerun, resume,
quality classifier, topic downsampling, code rules."""
import json
import random

import numpy as np
import pytest

from lmforge.config import ConfigError, load
from lmforge.data import pipeline
from lmforge.data.config import DataConfig, QualityConfig
from lmforge.data.pipeline import Stats, final_documents, run_pipeline
from lmforge.data.quality import QualityModel
from lmforge.io.writers import write_documents

WORDS = ("the river valley mill grain autumn water children wheel parents harvest weather "
         "bread town hills farmer road stone bridge winter summer field forest night morning "
         "story history science music teacher school garden market village house").split()
AD = "buy cheap pills discount offer click free shipping best price sale now".split()


def prose(rng, n=80):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_corpus(folder, n=120, seed=0):
    rng = random.Random(seed)
    docs = [{"text": prose(rng, rng.randint(60, 120)), "meta": {"domain": "web"}} for _ in range(n)]
    docs += [{"id": f"ad{i}", "text": " ".join(rng.choice(AD) for _ in range(80)) + ".",
              "meta": {"domain": "web"}} for i in range(30)]
    docs += [dict(d, id=f"copy{i}") for i, d in enumerate(docs[:15])]  # exact copies
    docs.append({"id": "zh", "text": "河水穿过山谷，旧磨坊就立在河边。秋天水流湍急的时候，农民们把粮食运来。" * 2})
    docs += [{"id": f"json{i}", "text": json.dumps({"k": i, "v": list(range(20))}),
              "meta": {"domain": "code", "path": f"conf{i}.json"}} for i in range(20)]
    docs += [{"id": f"py{i}", "text": f"def f{i}(x):\n    return x + {i}\n",
              "meta": {"domain": "code", "path": f"m{i}.py"}} for i in range(10)]
    folder.mkdir(parents=True, exist_ok=True)
    write_documents(folder / "a.jsonl.zst", docs[: len(docs) // 2])
    lines = [json.dumps(d, ensure_ascii=False) for d in docs[len(docs) // 2:]]
    (folder / "b.jsonl").write_bytes("\n".join(lines).encode() + b"\n{broken json\n"
                                     + b'{"text": "bad \xff"}\n{"id": "x"}\n')
    return folder


def config(tmp_path, **kw):
    data = {"input": [str(tmp_path / "raw")], "output": str(tmp_path / "out"), "workers": 1,
            "docs_per_shard": 40, "progress": False,
            "filters": {"min_units": 20, "max_top_ngram_ratio": {}, "max_dup_ngram_ratio": {}},
            **kw}
    return load(DataConfig, data=data)


def all_stats(out):
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/stats.json"))]


def test_full_pipeline_accounting_adds_up(tmp_path):
    make_corpus(tmp_path / "raw")
    cfg = config(tmp_path, workers=2, steps=["extract", "code", "filters", "langid", "minhash",
                                             "substring", "topics"],
                 langid={"allowed": ["en"]}, topics={"clusters": 3},
                 code={"json_yaml_keep": 0.0})
    summary = run_pipeline(cfg, log=lambda *a: None)
    stats = all_stats(tmp_path / "out")
    assert [s["step"] for s in stats] == ["read", "extract", "code", "filters", "langid",
                                          "minhash", "substring", "topics"]
    for s in stats:
        assert Stats.from_dict(s).adds_up(), s
    for a, b in zip(stats, stats[1:]):  # each step reads what the previous one kept
        assert b["in"] == a["kept"]
    read = stats[0]["removed"]
    assert read["malformed_json"]["docs"] == 1 and read["invalid_utf8"]["docs"] == 1
    assert read["missing_text"]["docs"] == 1
    rejects = [json.loads(l) for p in (tmp_path / "out/00-read/rejected").glob("*.jsonl")
               for l in p.read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["invalid_utf8", "malformed_json", "missing_text"]
    assert stats[2]["removed"]["code_json_yaml"]["docs"] == 20  # keep 0% of JSON/YAML
    assert stats[4]["removed"]["lang_zh"]["docs"] == 1
    assert stats[5]["removed"]["minhash_duplicate"]["docs"] >= 15
    docs = list(final_documents(tmp_path / "out"))
    assert len(docs) == stats[-1]["kept"]["docs"] and all("topic" in d["meta"] for d in docs)
    assert not any(d["id"].startswith(("copy", "json")) for d in docs)
    # rejected documents are written aside with their reason
    rej = list(pipeline.iter_shard(next((tmp_path / "out/05-minhash/rejected").iterdir())))
    assert all(d["meta"]["reject_reason"] == "minhash_duplicate" for d in rej)


def test_skip_on_rerun_and_resume(tmp_path, monkeypatch):
    make_corpus(tmp_path / "raw")
    cfg = config(tmp_path, steps=["filters", "minhash"])
    first = run_pipeline(cfg, log=lambda *a: None)
    calls = []
    real = pipeline.run_shard
    monkeypatch.setattr(pipeline, "run_shard", lambda *a: calls.append(a) or real(*a))
    logs = []
    again = run_pipeline(cfg, log=logs.append)
    assert calls == [] and sum("skipped" in l for l in logs) == 3
    assert again["final"] == first["final"]
    # interrupt: forget the last shard of the minhash step and its DONE marker
    step = tmp_path / "out/02-minhash"
    (step / "DONE").unlink()
    last = sorted((step / "stats").glob("*.json"))[-1]
    last.unlink()
    run_pipeline(cfg, log=lambda *a: None)
    assert len(calls) == 1  # only the missing shard was redone
    assert all_stats(tmp_path / "out")[2]["kept"] == json.loads(
        json.dumps(first["steps"][2]["kept"]))
    # a changed setting redoes that step (and the ones after it), not the earlier ones
    calls.clear()
    run_pipeline(config(tmp_path, steps=["filters", "minhash"], minhash={"threshold": 0.6}),
                 log=lambda *a: None)
    n_shards = len(list((tmp_path / "out/01-filters/kept").iterdir()))
    assert len(calls) == n_shards


def test_bad_config_refused_before_work(tmp_path):
    with pytest.raises(ConfigError, match="minhash.treshold: unknown key"):
        config(tmp_path, minhash={"treshold": 0.5})
    with pytest.raises(ConfigError, match="steps"):
        config(tmp_path, steps=["filters", "dedupe"])
    with pytest.raises(ConfigError, match="minhash.threshold"):
        config(tmp_path, minhash={"threshold": 1.5})
    with pytest.raises(ConfigError, match="quality"):
        config(tmp_path, steps=["quality"])
    y = tmp_path / "c.yaml"
    y.write_text("input: [x]\nfilters: {min_unit: 3}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: filters.min_unit"):
        load(DataConfig, y)
    assert not (tmp_path / "out").exists()


def test_cli_register(tmp_path, capsys):
    from lmforge.cli import build_parser

    make_corpus(tmp_path / "raw")
    y = tmp_path / "c.yaml"
    y.write_text(f"input: [{tmp_path / 'raw'}]\nprogress: false\nsteps: [filters]\n")
    p = build_parser(["data"])
    a = p.parse_args(["data", str(y), "--out", str(tmp_path / "o"), "--set", "filters.min_units=5"])
    assert a.func(a) == 0 and (tmp_path / "o/summary.json").exists()
    from lmforge.cli import main
    capsys.readouterr()
    assert main(["data", str(y), "--set", "filters.bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge data: config error:") and "filters.bogus" in err and "\n" not in err


def test_quality_classifier_separates_good_from_junk(tmp_path):
    rng = random.Random(1)
    good = [prose(rng, 60) for _ in range(150)]
    junk = [" ".join(rng.choice(AD + ["$$", "!!!", "www", "xx"]) for _ in range(40))
            for _ in range(150)]
    m = QualityModel(n_features=1 << 16)
    info = m.fit(good[:100], junk[:100], heldout=0.25)
    assert info["heldout_accuracy"] > 0.95
    assert (m.score(good[100:]) > 0.5).mean() > 0.95 and (m.score(junk[100:]) < 0.5).mean() > 0.95
    m.save(tmp_path / "m")  # no pickle: npz + json
    m2 = QualityModel.load(tmp_path / "m")
    assert np.allclose(m2.score(good[100:]), m.score(good[100:]))


def test_quality_step_in_pipeline(tmp_path):
    make_corpus(tmp_path / "raw")
    rng = random.Random(2)
    # references apply to the corpus group of their language and domain (quality.py)
    write_documents(tmp_path / "ref.jsonl", [{"id": str(i), "text": prose(rng, 80),
                                              "meta": {"domain": "web"}} for i in range(80)])
    cfg = config(tmp_path, steps=["quality"], quality={"positive": [str(tmp_path / "ref.jsonl")],
                                                       "threshold": 0.5, "n_features": 4096})
    run_pipeline(cfg, log=lambda *a: None)
    s = all_stats(tmp_path / "out")[1]
    assert "heldout_accuracy" in s and Stats.from_dict(s).adds_up()
    kept = list(final_documents(tmp_path / "out"))
    assert all("quality" in d["meta"] for d in kept)
    assert not any(d["id"].startswith("ad") for d in kept)  # ads are unlike the reference
    assert s["removed"]["quality_low"]["docs"] >= 30


def test_topics_downsampling_applies_weights(tmp_path):
    make_corpus(tmp_path / "raw")
    cfg = config(tmp_path, steps=["topics"],
                 topics={"clusters": 3, "term_weights": {"discount": 0.0}})
    run_pipeline(cfg, log=lambda *a: None)
    report = json.loads((tmp_path / "out/01-topics/topics.json").read_text())
    ad = [c for c in report if "discount" in c["top_terms"]]
    assert len(ad) == 1 and ad[0]["weight"] == 0.0
    kept = list(final_documents(tmp_path / "out"))
    assert not any(d["id"].startswith("ad") for d in kept)
    s = all_stats(tmp_path / "out")[1]
    assert s["removed"]["topic_downsampled"]["docs"] == ad[0]["size"]
    # a keep probability of 0.5 keeps about half, the same half on every run
    from lmforge.data.topics import keep_draw

    draws = np.array([keep_draw(0, f"doc{i}") for i in range(2000)])
    assert abs((draws < 0.5).mean() - 0.5) < 0.05
    assert keep_draw(0, "x") == keep_draw(0, "x") != keep_draw(1, "x")


def test_stats_detects_mismatch():
    s = Stats(3, 30, 2, 20, {"r": [1, 5]})
    assert not s.adds_up()
    s.remove("r", 0, 5)
    assert s.adds_up()
