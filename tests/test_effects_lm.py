"""Effects of the stages without a conversation to score: pretrain (vs the unigram / its input
checkpoint), grow and a grown model's loss recovery, the data stage against planted truth, and
eval / needle against chance; the report's "N of M stages show a gain". Each check is shown to
fail: an unchanged model reads "within noise", a blind rule reads "within noise"."""
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lmforge import config
from lmforge.eval.effect import rate_effect

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_helpers import TINY, tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("src"), steps=2, extra=["model.n_layers=4"])


def test_rate_effect_against_chance():
    e = rate_effect("recall", 36, 40, 0.1)
    assert e["after"] == 0.9 and e["before"] == 0.1 and e["verdict"] == "gain" and e["hits"] == 36
    assert 0.04 < e["stderr"] < 0.06                     # binomial: sqrt(0.9 * 0.1 / 40) ~ 0.047
    assert rate_effect("recall", 4, 40, 0.1)["verdict"] == "within noise"    # a blind rule's rate
    assert rate_effect("recall", 0, 40, 0.3)["verdict"] == "loss"
    assert 0 < rate_effect("recall", 40, 40, 0.1)["stderr"] < 0.02          # perfect: still a spread
    assert rate_effect("recall", 0, 0, 0.1)["verdict"] == "too few items"


def test_pretrain_effect_is_against_the_unigram_from_scratch(source):
    from lmforge.stagekit.lm_effects import heldout_windows, unigram_nll

    e = json.loads((source / "DONE.json").read_text())["effect"]
    data = source.parent / "tokens"
    items = heldout_windows(data, 32)
    assert e["n"] == len(items) >= 2 and "unigram" in e["baseline"]
    assert np.isclose(e["before"], unigram_nll(data, items).mean())
    # two steps from a random init: still worse than token frequencies (the check can fail)
    assert e["verdict"] == "loss" and e["delta"] > 0


def test_pretrain_effect_from_a_checkpoint_unchanged_model_is_within_noise(source):
    from lmforge.model.load import load_checkpoint
    from lmforge.stagekit.lm_effects import pretrain_effect

    model, _ = load_checkpoint(source)
    cfg = SimpleNamespace(data=str(source.parent / "tokens"), train=SimpleNamespace(seq_len=32),
                          init=SimpleNamespace(from_checkpoint=str(source)))
    e = pretrain_effect(cfg, SimpleNamespace(model=model))
    assert e["delta"] == 0 and e["verdict"] == "within noise" and "input checkpoint" in e["baseline"]


def test_grow_effect_and_the_grown_models_loss_recovery(source, tmp_path):
    from lmforge.model.load import load_checkpoint
    from lmforge.stagekit.lm_effects import grow_effect
    from lmforge.stages.grow import GrowConfig
    from lmforge.stages.grow import run as grow
    from lmforge.stages.pretrain import PretrainConfig
    from lmforge.stages.pretrain import run as pretrain

    data = source.parent / "tokens"
    g = grow(config.load(GrowConfig, None, [f"init.from_checkpoint={source}", f"data={data}",
                                            f"out_dir={tmp_path / 'grow'}", "add_layers=2", "calib_tokens=256",
                                            "seq_len=32"]), progress=False)
    ge = g["effect"]
    assert ge["n"] >= 2 and "before growth" in ge["baseline"] and ge["before"] != ge["after"]
    same, _ = load_checkpoint(source)       # a "growth" that changed nothing: within noise
    assert grow_effect(source, same, data, 32)["verdict"] == "within noise"
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    res = pretrain(config.load(PretrainConfig, None, [
        f"data={data}", f"out_dir={tmp_path / 'grown'}", f"model.vocab_size={vocab}", "train.steps=3",
        *TINY, *g["continue_with"]]), progress=False)
    e = res["effect"]
    assert e["metric"].startswith("loss recovery") and e["baseline"] == "the model before growth"
    assert np.isclose(e["before"], ge["before"])            # the same pre-growth model, the same windows
    more = e["more"][0]
    assert more["metric"].startswith("continued pretraining") and np.isclose(more["before"], ge["after"])
    assert np.isclose(more["after"], e["after"])


def natural_docs(n: int, seed: int = 0) -> list[dict]:
    """Plain documents of the three domains, unlike each other (no duplicates among them)."""
    from lmforge.data.dedup.synthetic import stdlib_documents

    rng = random.Random(seed)
    code = stdlib_documents(max_docs=n, lines=30)
    words = ("the of and to in is that for it as with was on be by this are from at or an which have "
             "not they their one all were when we there can more if what about out into only time "
             "river city garden music letter winter market school window morning history").split()
    docs = []
    for i in range(n):
        prose = " ".join(rng.choice(words) for _ in range(160)).capitalize() + "."
        zh = "".join(chr(0x4E00 + rng.randrange(3000)) + ("，" if k % 7 == 6 else "") for k in range(160)) + "。"
        docs += [{"id": f"prose-{i}", "text": prose, "meta": {"domain": "prose", "lang": "en"}},
                 {"id": f"zh-{i}", "text": zh, "meta": {"domain": "zh", "lang": "zh"}},
                 {"id": f"code-{i}", "text": code[i % len(code)], "meta": {"domain": "code", "lang": "code",
                                                                           "format": "python"}}]
    return docs


def run_planted(tmp_path: Path, threshold: float) -> dict:
    from lmforge.corpus.common import write_jsonl
    from lmforge.corpus.planted import PLANTED_FILE, plant
    from lmforge.data.config import DataConfig
    from lmforge.data.pipeline import run_pipeline
    from lmforge.stagekit.data_effects import planted_effect

    docs = natural_docs(30)
    write_jsonl(tmp_path / "docs" / "a.jsonl", docs)
    write_jsonl(tmp_path / "docs" / PLANTED_FILE, plant(docs, 24, 24, (0.01, 0.02), seed=1))
    cfg = config.load(DataConfig, None, [f"input=[{tmp_path / 'docs'}]", f"output={tmp_path / 'out'}",
                                         "steps=[filters,minhash]", "workers=1", "progress=false",
                                         f"minhash.threshold={threshold}"])
    summary = run_pipeline(cfg, tmp_path / "out", log=lambda *a: None)
    return planted_effect(tmp_path / "out", summary)


def test_data_effect_scores_dedup_and_junk_against_planted_truth(tmp_path):
    e = run_planted(tmp_path / "a", 0.7)
    recall, precision, junk_recall, junk_precision = e, *e["more"]
    assert recall["metric"].startswith("dedup recall") and recall["verdict"] == "gain" and recall["after"] > 0.8
    assert precision["verdict"] == "gain" and precision["after"] > 0.8   # the natural docs have no duplicates
    assert junk_recall["metric"].startswith("junk recall") and junk_recall["n"] == 24
    assert e["planted"]["duplicates"] == 24 and e["planted"]["junk"] == 24
    assert junk_recall["hits"] == 24 - e["planted"]["kept_after"]["filters"]["junk"]
    # a dedup that catches only exact copies misses every edited one: no better than chance
    blind = run_planted(tmp_path / "b", 0.999)
    assert blind["hits"] == 0 and blind["verdict"] != "gain"


def test_data_effect_is_none_without_planted_documents(tmp_path):
    from lmforge.stagekit.data_effects import planted_effect

    (tmp_path / "00-read" / "kept").mkdir(parents=True)
    assert planted_effect(tmp_path, {"steps": [{"step": "read"}]}) is None


def test_mcq_and_needle_effects_against_chance():
    from lmforge.stagekit.score_effects import mcq_effect, needle_effect

    res = lambda acc, n: {"results": {"0": {"shots": 0, "chance": 0.25, "n": n, "acc": 0.1},   # noqa: E731
                                      "5": {"shots": 5, "chance": 0.25, "n": n, "acc": acc}}}
    e = mcq_effect({"quiz": res(0.9, 40), "poems": res(0.25, 40)})
    assert e["metric"].startswith("multiple choice quiz, 5-shot") and e["verdict"] == "gain" and e["hits"] == 36
    assert e["more"][0]["verdict"] == "within noise"         # at chance
    cells = [{"exact": False, "rank": 0 if i % 5 == 0 else 2} for i in range(45)]   # 1 in 5: chance at 4 distractors
    n = needle_effect(cells, distractors=4)
    assert n["before"] == 0.2 and n["verdict"] == "within noise" and n["more"][0]["hits"] == 0
    assert needle_effect([{"exact": True, "rank": 0}] * 20, 4)["verdict"] == "gain"
    assert needle_effect(cells, distractors=0) is None


def test_report_counts_the_stages_that_show_a_gain(tmp_path):
    from lmforge.report.collect import StageFolder
    from lmforge.report.effects import effects_section

    gain, flat = rate_effect("r", 36, 40, 0.1), rate_effect("r", 4, 40, 0.1)
    stages = [StageFolder("data", tmp_path, kind="data", done={"effect": gain}),
              StageFolder("pretrain", tmp_path, kind="pretrain", done={"effect": gain}),
              StageFolder("grow", tmp_path, kind="grow", done={"effect": flat}),
              StageFolder("needle", tmp_path, kind="needle", done={"effect": flat}),
              StageFolder("sft", tmp_path, kind="sft", done={"step": 3}),
              StageFolder("export", tmp_path, kind="export", done={"ok": 1})]
    sec = effects_section(stages)
    assert sec.blocks[0].title == "Before / after: 2 of 4 stages show a gain beyond noise"
    note = sec.blocks[1]
    assert "No gain beyond noise: needle, sft." in note and "Shown, not counted: grow" in note
    assert "No before/after measurement recorded for: sft." in sec.blocks
