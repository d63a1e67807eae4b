"""Cross-dataset decontamination (data step `decontam`): eval items planted inside longer
real documents, exact or edited, are removed and counted by reason; clean documents stay."""
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lmforge.config import ConfigError, load
from lmforge.data.config import DataConfig, DecontamConfig
from lmforge.data.decontam import EvalIndex, item_text, unit_hashes
from lmforge.data.dedup.synthetic import stdlib_documents
from lmforge.data.pipeline import run_pipeline
from lmforge.eval.contamination import item_text as eval_item_text
from lmforge.io.writers import write_documents


def _docstring_paragraphs(n: int) -> list[str]:
    """Prose from a stdlib package the training documents do not come from."""
    import ast

    out = []
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("email/*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            doc = ast.get_docstring(node) if isinstance(
                node, (ast.FunctionDef, ast.ClassDef, ast.Module)) else None
            for para in (doc or "").split("\n\n"):
                words = para.split()
                if 30 <= len(words) <= 90:
                    out.append(" ".join(words))
    assert len(out) >= n, len(out)
    return out[:n]


def _edit_runs(text: str, run: int, seed: int) -> str:
    """Replace a word whenever `run` units (text.units: a word like `a.b()` is several) have
    passed unedited, so no n-gram of more than `run` units of the item is left intact."""
    from lmforge.data.text import units

    rng = np.random.default_rng(seed)
    words, since = text.split(), 0
    for j, w in enumerate(words):
        n = len(units(w))
        if since + n > run:
            words[j] = str(rng.choice(["river", "mill", "valley", "lantern", "copper"]))
            since = 1
        else:
            since += n
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decontam")
    rng = np.random.default_rng(0)
    items = _docstring_paragraphs(60)
    # eval files: half MCQ items (question + choices + answer index), half text items
    bench = tmp / "bench"
    bench.mkdir()
    write_documents(bench / "mcq.jsonl", [
        {"question": it, "choices": ["alpha", "beta", "gamma"], "answer": 1} for it in items[:30]])
    (bench / "text.jsonl").write_text("".join(json.dumps({"text": it}) + "\n" for it in items[30:])
                                      + "{broken\n" + json.dumps({"question": 5}) + "\n")
    texts = [item_text({"question": it, "choices": ["alpha", "beta", "gamma"], "answer": 1})
             for it in items[:30]] + items[30:]
    docs = stdlib_documents(400)
    kinds = ["clean"] * len(docs)
    for j, item in enumerate(texts[:40]):  # 20 exact, 20 with every 12th word edited
        body = item if j < 20 else _edit_runs(item, 11, seed=j)
        host = docs[int(rng.integers(len(docs)))]
        cut = len(host) // 2
        docs.append(host[:cut] + "\n" + body + "\n" + host[cut:][::-1])  # a longer document
        kinds.append("exact" if j < 20 else "edited")
    raw = tmp / "raw"
    raw.mkdir()
    write_documents(raw / "train.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(docs)])
    return tmp, np.array(kinds)


def _run(tmp, name, **decontam):
    cfg = load(DataConfig, data={"input": [str(tmp / "raw")], "output": str(tmp / name),
                                 "steps": ["decontam"], "docs_per_shard": 100, "workers": 1,
                                 "progress": False,
                                 "decontam": {"eval": [str(tmp / "bench" / "*.jsonl")], **decontam}})
    summary = run_pipeline(cfg, log=lambda *a: None)
    step = tmp / name / "01-decontam"
    removed = {}
    for p in sorted((step / "rejected").glob("*")):
        from lmforge.data.pipeline import iter_shard
        for d in iter_shard(p):
            removed[int(d["id"])] = (d["meta"]["reject_reason"], d["meta"]["contaminated_by"])
    return summary["steps"][-1], removed


def test_planted_eval_items_are_removed_by_reason(planted):
    tmp, kinds = planted
    stats, removed = _run(tmp, "both")
    exact = set(np.flatnonzero(kinds == "exact").tolist())
    edited = set(np.flatnonzero(kinds == "edited").tolist())
    assert set(removed) == exact | edited  # every planted copy, no clean document
    assert {removed[i][0] for i in exact} == {"eval_ngram"}
    # a word edited every 11 units: no 13-gram of the item is left, ~60% of its 5-grams are
    assert {removed[i][0] for i in edited} == {"eval_near_duplicate"}
    assert stats["removed"]["eval_ngram"]["docs"] == 20
    assert stats["removed"]["eval_near_duplicate"]["docs"] == 20
    assert stats["eval_items"] == 60 and stats["eval_bad_records"] == 2
    assert all(v[1].split(":")[0].endswith(".jsonl") for v in removed.values())
    rejects = (tmp / "both" / "01-decontam" / "work" / "eval_rejects.txt").read_text()
    assert "text.jsonl:31:" in rejects and "text.jsonl:32:" in rejects


def test_ngram_only_misses_the_edited_copies(planted):
    tmp, kinds = planted
    stats, removed = _run(tmp, "ngram", containment=None)
    assert set(removed) == set(np.flatnonzero(kinds == "exact").tolist())
    assert "eval_near_duplicate" not in stats["removed"]


def test_short_items_use_their_length_and_tiny_ones_are_skipped():
    cfg = DecontamConfig(eval=["x"])
    items = ["the quick brown fox jumps over the lazy dog today",  # 10 units: n = 10
             "too short item",                                       # 3 units: skipped
             "河水穿过山谷旧磨坊就立在河边秋天水流湍急"]                    # CJK: characters are units
    ev = EvalIndex.build(items, cfg)
    assert ev.item_n.tolist() == [10, 0, 13]
    doc = unit_hashes("Intro. The quick brown fox jumps over the lazy dog today, said Ann.")
    assert ev.ngram_hit(doc) == 0
    assert ev.ngram_hit(unit_hashes("the quick brown fox jumps over the lazy dog")) == -1
    assert ev.ngram_hit(unit_hashes("他说：河水穿过山谷旧磨坊就立在河边。")) == 2
    assert ev.ngram_hit(unit_hashes("a too short item here")) == -1


def test_item_text_is_the_eval_readers_rule():
    assert eval_item_text is item_text
    cases = [({"text": "t", "question": "q", "answer": "a"}, "t"), ({"question": " q ", "answer": "a"}, "q\nAnswer: a"),
             ({"question": "q", "choices": ["x", "y"], "answer": 1}, "q\nAnswer: y"),
             ({"question": "q", "choices": ["x", "y"], "answer": True}, "q\nAnswer: True")]
    for rec, text in cases:
        assert item_text(rec) == text
    with pytest.raises(ValueError, match="neither 'text' nor 'question'"):
        item_text({"question": "q"})


def test_config_refusals(tmp_path):
    with pytest.raises(ConfigError, match="decontam.eval"):
        load(DataConfig, data={"input": ["x"], "steps": ["decontam"]})
    with pytest.raises(ConfigError, match="min_ngram"):
        DecontamConfig(eval=["x"], min_ngram=20)
    (tmp_path / "raw").mkdir()
    write_documents(tmp_path / "raw" / "a.jsonl", [{"text": "some words here " * 5}])
    cfg = load(DataConfig, data={"input": [str(tmp_path / "raw")], "output": str(tmp_path / "o"),
                                 "steps": ["decontam"], "progress": False,
                                 "decontam": {"eval": [str(tmp_path / "nothing*.jsonl")]}})
    with pytest.raises(FileNotFoundError, match="decontam.eval: .*matches no eval file"):
        run_pipeline(cfg, log=lambda *a: None)
