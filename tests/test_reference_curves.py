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


def _toy_run(root, name="toy"):
    """A recipe run folder with one pretraining stage's metrics (no training: the report reads files)."""
    run_dir = root / "run"
    (run_dir / "pretrain").mkdir(parents=True)
    recs = [{"step": i, "loss": 5 - 0.05 * i, "lr": 1e-3} for i in range(1, 31)]
    recs += [{"step": s, "val/mean": 4.8 - 0.03 * s, "val/prose": 4.8 - 0.03 * s} for s in (10, 20, 30)]
    (run_dir / "pretrain" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run_dir / "recipe.json").write_text(json.dumps({
        "name": name, "smoke": {"steps": 0.01}, "stages": [
            {"name": "pretrain", "kind": "pretrain", "objective": "lm", "status": "done",
             "out_dir": str(run_dir / "pretrain")}]}))
    return run_dir


def _drawn(monkeypatch):
    """{png name: [(label, xs, ys), ...]} of every axis line of every figure the report saves."""
    from lmforge.report import plots
    seen, save = {}, plots.save
    def record(fig, path, rect=None):
        seen[path.name] = [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata()))
                           for ax in fig.axes for ln in ax.lines]
        seen[path.name + ":legend"] = [t.get_text() for ax in fig.axes if ax.get_legend()
                                       for t in ax.get_legend().get_texts()]
        return save(fig, path, rect)
    monkeypatch.setattr(plots, "save", record)
    return seen


def test_report_overlays_the_recipe_reference_curve_only_when_one_exists(tmp_path, monkeypatch):
    import lmforge.report.reference as reference
    from lmforge.report.build import build_report
    run_dir = _toy_run(tmp_path)
    ref = curves(run_dir)
    ref["pretrain"]["train"] = [[s, loss + 0.5] for s, loss in ref["pretrain"]["train"]]   # a visibly other run
    ref["pretrain"]["val"]["val/mean"] = [[s, v + 0.5] for s, v in ref["pretrain"]["val"]["val/mean"]]
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / "toy-smoke.json").write_text(json.dumps(ref))
    monkeypatch.setattr(reference, "CURVES_DIR", tmp_path / "curves")
    seen = _drawn(monkeypatch)
    build_report(run_dir, tmp_path / "report")
    label = "reference run (toy-smoke.json), smoothed"
    lines = [ln for ln in seen["train_loss.png"] if ln[0] == label]
    assert len(lines) == 1 and label in seen["train_loss.png:legend"]
    _, xs, ys = lines[0]
    assert xs == list(range(1, 31)) and abs(ys[0] - 5.45) < 1e-6 and abs(ys[-1] - 4.0) < 1e-6   # a line: smoothing keeps it
    val = [ln for ln in seen["val_loss.png"] if ln[0].startswith("reference run (toy-smoke.json)")]
    assert len(val) == 1 and val[0][2] == [4.8 - 0.3 + 0.5, 4.8 - 0.6 + 0.5, 4.8 - 0.9 + 0.5]
    assert "toy-smoke.json" in (tmp_path / "report" / "report.html").read_text()
    # another recipe name: no reference file, no overlay, no legend entry
    other = _toy_run(tmp_path / "b", name="other")
    seen.clear()
    build_report(other, tmp_path / "report-b")
    assert seen["train_loss.png"] and not any("reference" in ln[0] for ln in seen["train_loss.png"])
    assert not any("reference" in t for t in seen["train_loss.png:legend"] + seen["val_loss.png:legend"])
