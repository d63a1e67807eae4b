"""Reference curves: a seeded run repeats inside the band, a changed setting lands outside it,
and the curve file keeps each stage's end points and its last step."""
import json

from lmforge import config
from lmforge.report.reference import MAX_POINTS, compare, curves, stage_curves
from lmforge.stages.pretrain import PretrainConfig, run

TINY = ["model.vocab_size=128", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=64",
        "train.seq_len=32", "train.micro_batch_size=4", "train.steps=12", "train.eval_every=6",
        "train.schedule.kind=constant", "train.eval_batches=2", "train.device=cpu"]


def pretrain(data, out, *extra):
    run(config.load(PretrainConfig, None, [f"data={data}", f"out_dir={out}", *TINY, *extra]), progress=False)


def test_a_repeat_is_inside_the_band_a_changed_lr_is_not(token_data, tmp_path):
    for name, lr in (("a", 3e-3), ("b", 3e-3), ("c", 1e-2)):
        pretrain(token_data, tmp_path / "run" / name / "pretrain", f"train.optim.lr={lr}")
    ref = curves(tmp_path / "run" / "a")
    assert set(ref) == {"pretrain"} and ref["pretrain"]["val"]["val/mean"]
    assert compare(curves(tmp_path / "run" / "b"), ref) == []
    bad = compare(curves(tmp_path / "run" / "c"), ref)
    assert any("train loss" in b for b in bad) and any("val/mean" in b for b in bad)
    # a stage that disappeared is named
    assert compare({}, ref) == ["pretrain: missing from the run"]


def test_thinning_keeps_the_last_step(tmp_path):
    m = tmp_path / "metrics.jsonl"
    m.write_text("".join(json.dumps({"step": i, "loss": 10 - i / 100}) + "\n" for i in range(1, 1001)))
    c = stage_curves(m)
    assert len(c["train"]) <= MAX_POINTS + 1 and c["train"][-1] == [1000, 0.0] and c["train"][0][0] == 1
    assert abs(c["train_end"] - (10 - 998 / 100)) < 1e-9
