"""`lmforge sftdata` with `backend: embedding`: on hand-written prompts whose topic is carried
by meaning rather than shared words (tests/fixtures/topic_prompts.tsv, six topics, 25 prompts
each, written before any clustering was run on them), k-means over sentence embeddings finds
the planted topics where TF-IDF finds almost nothing, the even sampling over those clusters
gives a more topic-balanced set from a skewed input, system-prompt paraphrases are grouped by
meaning, and a missing optional extra is refused in one line at config time."""
from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from lmforge import config
from lmforge.config import ConfigError
from lmforge.data import embed
from lmforge.data.text import units
from lmforge.stages.sftdata import SFTDataConfig, cluster_texts, embed_cached, run
from test_align_utils import write_jsonl

PROMPTS = Path(__file__).parent / "fixtures" / "topic_prompts.tsv"
TOPICS = ["sleep", "money", "pets", "car", "garden", "career"]
SKEW = dict(zip(TOPICS, [25, 18, 12, 8, 5, 4]))   # 72 prompts: 35% / 25% / ... / 6%

needs_extra = pytest.mark.skipif(not embed.available(), reason="optional extra lmforge[embed] not installed")


def planted() -> tuple[list[str], list[str]]:
    rows = [ln.split("\t") for ln in PROMPTS.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")]
    return [r[1] for r in rows], [r[0] for r in rows]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """All 150 prompts embedded once (work/embeddings parts, as the stage writes them)."""
    folder = tmp_path_factory.mktemp("emb") / "embeddings"
    texts, _ = planted()
    V = embed_cached(texts, folder)
    assert V.shape == (150, 384) and np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-4)
    return folder


def cfg_of(data, out, *extra) -> SFTDataConfig:
    return config.load(SFTDataConfig, None, [f"data={[str(d) for d in data]}", f"out_dir={out}", *extra])


def conv(prompt: str, system: str = "", **top) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": "ok"}]
    return {"messages": msgs, **top}


def purity(labels, truth) -> float:
    """Share of prompts whose cluster's most common planted topic is their own."""
    return sum(Counter(t for l, t in zip(labels, truth) if l == c).most_common(1)[0][1]
               for c in set(labels)) / len(truth)


@needs_extra
def test_embedding_clusters_recover_planted_topics_better_than_tfidf(embedded):
    texts, truth = planted()
    got = {}
    for backend in ("tfidf", "embedding"):
        scores = []
        for seed in range(3):
            labels = cluster_texts(texts, backend, 6, seed, embedded.parent,   # the stage's prompt TF-IDF
                                   tokenizer=lambda t: units(t, lowercase=True), max_features=20000)[0]
            scores.append((adjusted_rand_score(truth, labels), purity(labels.tolist(), truth)))
        got[backend] = np.mean(scores, axis=0)
    print(f"\nplanted topics, mean of 3 seeds: tfidf ARI {got['tfidf'][0]:.3f} purity {got['tfidf'][1]:.3f}; "
          f"embedding ARI {got['embedding'][0]:.3f} purity {got['embedding'][1]:.3f}")
    # measured (2-core CPU): tfidf ARI 0.004 purity 0.289 (chance: 1/6 topics ~ 0.17 purity
    # floor, ARI 0); embedding ARI 0.674 purity 0.831
    assert got["embedding"][0] >= 0.5 and got["embedding"][1] >= 0.7
    assert got["embedding"][0] >= got["tfidf"][0] + 0.4
    assert got["embedding"][1] >= got["tfidf"][1] + 0.3


def skewed_set(seed: int) -> list[dict]:
    texts, truth = planted()
    rng = random.Random(seed)
    by_topic = {t: [x for x, y in zip(texts, truth) if y == t] for t in TOPICS}
    return [conv(p, topic=t) for t, n in SKEW.items() for p in rng.sample(by_topic[t], n)]


def balance(counts: Counter, n: int) -> tuple[float, float]:
    """(largest topic share, entropy of the topic shares / log(topics))."""
    p = np.array([counts[t] for t in TOPICS], dtype=float) / n
    return float(p.max()), float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(len(TOPICS)))


@needs_extra
def test_even_sampling_over_embedding_clusters_balances_a_skewed_set(embedded, tmp_path, monkeypatch):
    def no_model(texts, *a, **k):
        raise AssertionError(f"embedded {len(texts)} prompts again: work/embeddings was not reused")
    monkeypatch.setattr(embed, "embed", no_model)
    got = {"tfidf": [], "embedding": []}
    for seed in range(6):
        path = write_jsonl(tmp_path / f"skew{seed}.jsonl", skewed_set(seed))
        for backend in got:
            out = tmp_path / f"{backend}{seed}"
            shutil.copytree(embedded, out / "work" / "embeddings")   # as an interrupted run leaves it
            run(cfg_of([path], out, "dedup.near=false", "diversity.target=24", "diversity.clusters=6",
                       f"diversity.backend={backend}", f"seed={seed}"), progress=False)
            kept = [json.loads(ln) for ln in (out / "sft.jsonl").read_text().splitlines()]
            assert len(kept) == 24
            got[backend].append(balance(Counter(r["topic"] for r in kept), 24))
            d = json.loads((out / "sftdata.json").read_text())["steps"][-1]["details"]
            assert d["backend"] == backend and set(d["cluster_terms"]) == set(d["cluster_sizes_before"])
            prompts = {r["messages"][0]["content"] for r in skewed_set(seed)}
            assert set(d["cluster_central"].values()) <= prompts   # each cluster named by one of its prompts
    before = balance(Counter(SKEW), sum(SKEW.values()))
    mean = {b: np.mean(v, axis=0) for b, v in got.items()}
    print(f"\nskewed 25/18/12/8/5/4 -> 24, mean of 6 seeds (largest share, normalised entropy): input "
          f"{before[0]:.3f} {before[1]:.3f}; tfidf {mean['tfidf'][0]:.3f} {mean['tfidf'][1]:.3f}; "
          f"embedding {mean['embedding'][0]:.3f} {mean['embedding'][1]:.3f}")
    assert mean["embedding"][0] <= before[0] - 0.02          # the largest topic shrinks ...
    assert mean["embedding"][0] <= mean["tfidf"][0] - 0.03   # ... more than over TF-IDF clusters
    assert mean["embedding"][1] >= mean["tfidf"][1] + 0.03


SYSTEMS = {   # three instructions, four paraphrases each, few words shared
    "helpful": ["You are a helpful assistant.", "Act as a friendly, useful AI helper.",
                "Your job is to assist the user as well as you can.",
                "You're an obliging chatbot that supports people with their requests."],
    "french": ["Always reply in French.", "Respond only in the French language.", "Write every answer en français.",
               "Use French for all of your responses, never English."],
    "brief": ["Keep answers short.", "Be concise: two sentences at most.", "Reply as briefly as possible.",
              "Avoid long explanations; give the shortest useful answer."],
}


@needs_extra
def test_system_balance_groups_paraphrases_by_meaning(tmp_path):
    recs = [conv(f"question {k} ({meaning})", SYSTEMS[meaning][k % 4], meaning=meaning)
            for meaning, n in (("helpful", 60), ("french", 20), ("brief", 20)) for k in range(n)]
    path = write_jsonl(tmp_path / "sys.jsonl", recs)
    shares = {}
    for backend in ("tfidf", "embedding"):
        out = tmp_path / backend
        run(cfg_of([path], out, "dedup.near=false", "system.max_share=0.4", "system.group_by=cluster",
                   "system.clusters=3", f"system.backend={backend}"), progress=False)
        kept = Counter(json.loads(ln)["meaning"] for ln in (out / "sft.jsonl").read_text().splitlines())
        shares[backend] = kept["helpful"] / sum(kept.values())
    print(f"\nshare of the 60% instruction after a 0.4 cap: tfidf groups {shares['tfidf']:.3f}, "
          f"embedding groups {shares['embedding']:.3f}")
    # groups = the three meanings: cap c = 26 (c <= 0.4 * (c + 40)), so 26 of 66 kept
    assert shares["embedding"] == pytest.approx(26 / 66)


def test_embedding_backend_refused_in_one_line_without_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "available", lambda: False)
    for key in ("diversity.backend", "system.backend"):
        with pytest.raises(ConfigError, match=rf"{key}: .*lmforge\[embed\]") as e:
            cfg_of(["x.jsonl"], tmp_path, f"{key}=embedding")
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="diversity.backend"):
        cfg_of(["x.jsonl"], tmp_path, "diversity.backend=bert")
