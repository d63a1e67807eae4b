"""The report as a reader sees it (issue 34): one self-contained HTML file, Chinese drawn in
plots and page without a system CJK font, smoothed lines that start and end where the data
does, figures that fit a 1400 px window, legends without hidden series, the recipe graph's
colours explained and its labels apart, the task-mix grid one row per distinct mix on one
colour scale, and a finished report skipped when its inputs are unchanged."""
from __future__ import annotations

import base64
import io
import json
import re
import warnings
from pathlib import Path

import pytest

from lmforge.report import plots, trainplots
from lmforge.report.collect import StageFolder
from lmforge.stages.report import ReportConfig, run as run_report

PAGE_PX = 1240          # build.CSS: body max-width


@pytest.fixture
def figures(monkeypatch):
    """The figures the report saves through plots.save, kept open for inspection."""
    caught = []

    def keep(fig, path, rect=None):
        caught.append(fig)
        fig.tight_layout(rect=rect)
        fig.savefig(path, dpi=plots.DPI)
        return Path(path)
    monkeypatch.setattr(plots, "save", keep)
    return caught


def stage(name, kind, records, deps=(), **kw):
    return StageFolder(name, Path(name), kind, "done", metrics=records, deps=list(deps), **kw)


def chinese_prompts(n: int = 12) -> list[str]:
    """Real Chinese first messages: the chatterbot corpus sample the default corpus ships."""
    import zstandard

    raw = Path(__file__).parent.parent / "lmforge" / "corpus" / "sample" / "chatterbot.jsonl.zst"
    text = zstandard.ZstdDecompressor().decompress(raw.read_bytes(), max_output_size=10 ** 8).decode()
    out = []
    for line in text.splitlines():
        rec = json.loads(line)
        if rec["lang"] == "zh":
            out += [m.group(1).strip() for m in re.finditer(r"^- - (.+)$", rec["text"], re.M)]
    assert len(out) >= n
    return out[:n]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import struct
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------ smoothing


def test_smoothing_starts_and_ends_where_the_data_does():
    n = 20
    xs = list(range(1, n + 1))
    assert plots.smooth(xs, [0.42] * n) == pytest.approx([0.42] * n)
    line = [2.0 + 0.3 * x for x in xs]
    assert plots.smooth(xs, line) == pytest.approx(line)          # a trend is not lagged
    # DPO preference accuracy: 0 at the first step (policy = reference), then 0.75
    acc = [0.0] + [0.75] * (n - 1)
    sm = plots.smooth(xs, acc)
    assert sm[-1] == pytest.approx(0.75) and sm[n // 2] == pytest.approx(0.75)
    # noisy pairs of a batch of 4: the smoothed line stays inside the raw range, near the mean
    import numpy as np
    rng = np.random.default_rng(0)
    noisy = (rng.random(200) < 0.7).astype(float) * 0.5 + rng.integers(0, 2, 200) * 0.25
    sm = plots.smooth(range(200), noisy.tolist())
    assert min(sm) >= noisy.min() and max(sm) <= noisy.max()
    assert abs(np.mean(sm) - noisy.mean()) < 0.02


def test_dpo_accuracy_smoothed_line_ends_at_the_last_steps(tmp_path, figures):
    recs = [{"step": i, "loss": 0.69, "dpo_loss_sum": 0.69, "accuracy_sum": 0.0 if i == 1 else 0.75,
             "margin_sum": 0.0 if i == 1 else 0.05} for i in range(1, 21)]
    assert trainplots.dpo(stage("dpo", "dpo", recs), tmp_path / "d.png")
    acc_ax = figures[0].axes[2]
    train = next(ln for ln in acc_ax.lines if ln.get_label() == "train")
    assert train.get_ydata()[-1] == pytest.approx(0.75, abs=0.01)


# ------------------------------------------------------------------ CJK


def test_chinese_draws_as_glyphs_not_boxes(tmp_path):
    """Two different characters must render differently: a missing glyph draws the same box."""
    import matplotlib.pyplot as plt
    import numpy as np

    def raster(ch: str):
        fig = plt.figure(figsize=(0.6, 0.6), dpi=100)
        fig.text(0.5, 0.5, ch, fontsize=28, ha="center", va="center")
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., 0].copy()
        plt.close(fig)
        return img
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # matplotlib warns "Glyph ... missing from font(s)"
        a, b, latin = raster("训"), raster("练"), raster("A")
    assert (a < 128).sum() > 30 and (a != b).sum() > 30 and (a != latin).sum() > 30


def test_page_embeds_the_font_subset_for_its_chinese(tmp_path):
    from fontTools.ttLib import TTFont

    prompts = chinese_prompts()
    before = {p: 30 - i for i, p in enumerate(prompts)}
    after = {p: 10 for p in prompts}
    run = tmp_path / "run" / "sftdata"
    run.mkdir(parents=True)
    steps = [{"step": "diversity", "in": {"docs": 300, "bytes": 9000}, "kept": {"docs": 120, "bytes": 3600},
              "removed": {"diversity_sampling": {"docs": 180, "bytes": 5400}},
              "details": {"cluster_sizes_before": before, "cluster_sizes_after": after,
                          "cluster_terms": {p: [p[:2]] for p in prompts}, "cluster_central": {p: p for p in prompts}}}]
    (run / "sftdata.json").write_text(json.dumps({"steps": steps}, ensure_ascii=False), encoding="utf-8")
    run_report(ReportConfig(run_dir=str(run), out=str(tmp_path / "rep")), progress=False)
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    m = re.search(r'@font-face\{font-family:"lmforge CJK";src:url\(data:font/otf;base64,([A-Za-z0-9+/=]+)\)', page)
    assert m, "no embedded CJK font"
    font = TTFont(io.BytesIO(base64.b64decode(m.group(1))))
    cmap = font.getBestCmap()
    body = page.split("</style>", 1)[1]
    wanted = set(re.findall("[\u4e00-\u9fff\uff00-\uffef\u3000-\u303f]", body))
    assert len(wanted) > 20 and wanted <= {chr(c) for c in cmap}
    assert len(m.group(1)) < 400_000             # a subset, not the 16 MB face
    assert "lmforge CJK" in page.split("</style>")[0].split("body{font-family:")[1].split(";")[0]
    assert "unicode-range:U+2E80-9FFF" in page.split("</style>")[0]     # only CJK comes from it


# ------------------------------------------------------------------ one file


def test_html_alone_keeps_every_plot(tmp_path):
    run = tmp_path / "run"
    for name, deps in (("pretrain", []), ("sft", ["pretrain"])):
        (run / name).mkdir(parents=True)
        recs = [{"step": i, "loss": 6.0 - 0.1 * i, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 900.0}
                for i in range(1, 16)]
        (run / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    stages = [{"name": "pretrain", "kind": "pretrain", "out_dir": str(run / "pretrain"), "status": "done"},
              {"name": "sft", "kind": "sft", "out_dir": str(run / "sft"), "status": "done", "deps": ["pretrain"]}]
    (run / "recipe.json").write_text(json.dumps({"name": "t", "stages": stages}))
    summary = run_report(ReportConfig(run_dir=str(run), out=str(tmp_path / "rep")), progress=False)
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(srcs) == len(summary["images"]) >= 3
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        w, _ = png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w <= PAGE_PX
    # nothing else the page would fetch from disk or network
    assert not re.search(r'(?:src|href)="(?!data:|#)', page) and not re.search(r"url\((?!data:)", page)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "](train_loss.png)" in md and (tmp_path / "rep" / "train_loss.png").is_file()


# ------------------------------------------------------------------ fits a 1400 px window


def study(n_settings: int = 7) -> dict:
    names = ["base", "32k", "32k-sft", "base+ntk8", "base+naive", "32k@1e6", "32k@5e6"][:n_settings]
    lengths, depths = [512, 1024, 2048, 4096], [0, 25, 50, 75, 100]
    grid = {"rank_acc": [[0.2 + 0.1 * ((i + j) % 3) for j in depths] for i in lengths]}
    metrics = {"ppl": {d: 40.0 for d in ("code", "en", "zh", "instruct", "curated")},
               "mcq": {"quiz": 0.3, "poetry": 0.26, "author": 0.25, "next_line": 0.27}}
    short = {n: {"ppl": {d: v * (1 + 0.03 * k) for d, v in metrics["ppl"].items()},
                 "mcq": {m: v * (1 - 0.02 * k) for m, v in metrics["mcq"].items()}} for k, n in enumerate(names)}
    from lmforge.stages.longstudy import seesaw
    return {"baseline": "base", "settings": [{"name": n, "rope": "model", "rope_theta": 1e4} for n in names],
            "ppl": {"lengths": lengths, "results": {}}, "needle": {"lengths": lengths, "depths": depths,
                                                                   "results": {n: {"grid": grid} for n in names}},
            "short": {"seq_len": 512, "results": short, "seesaw": seesaw(short, "base")}}


def test_needle_row_and_seesaw_fit_the_page(tmp_path):
    from lmforge.report import longstudy

    s = study()
    for fn in (getattr(longstudy, "plot_needles"), getattr(longstudy, "plot_seesaw")):
        p = fn(s, tmp_path / f"{fn.__name__}.png")
        w, h = png_size(p.read_bytes())
        assert w <= PAGE_PX, (fn.__name__, w)      # shown at its own size: 8-pt text stays ~11 px
    t = longstudy.seesaw_table(s)
    assert len(t.headers) == 1 + 7 and len(t.rows) == 9          # measures as rows, one column per setting
    assert any("(+" in str(c) for r in t.rows for c in r[2:])


# ------------------------------------------------------------------ legends


def test_legends_list_only_visible_series(tmp_path, figures):
    lr = [{"step": i, "loss": 5.0 - 0.01 * i, "lr": 1e-4 * (1 - i / 40), "grad_norm": 1.0 + 0.1 * (i % 3),
           "tokens_per_s": 800.0 + i} for i in range(1, 21)]
    other = [dict(r, tokens_per_s=400.0 + 7 * i, loss=4.0 + 0.02 * i) for i, r in enumerate(lr)]
    pre = stage("stable", "pretrain", [{"step": i, "loss": 7.0 - 0.05 * i, "lr": 1e-3, "grad_norm": 2.0,
                                        "tokens_per_s": 1000.0} for i in range(1, 31)])
    # two branches from one checkpoint with the same LR schedule: their LR lines coincide
    stages = [pre, stage("decay_pure", "pretrain", lr, ["stable"]), stage("decay_boost", "pretrain", other,
                                                                           ["stable"])]
    assert trainplots.dynamics(stages, tmp_path / "dyn.png")
    fig = figures[-1]
    lr_ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in lr_ax.lines if not ln.get_label().startswith("_")}
    pure, boost = lines["decay_pure"], lines["decay_boost"]
    assert list(pure.get_ydata()) == list(boost.get_ydata())              # the same line ...
    assert pure.get_linestyle() == "-" and boost.get_linestyle() != "-"   # ... dashed over it: both seen
    assert pure.get_color() != boost.get_color()
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["stable", "decay_pure", "decay_boost"]               # each stage once
    # the branches' start marks share one label instead of two drawn on top of each other
    assert trainplots.training_loss(stages, tmp_path / "loss.png")
    marks = [t.get_text() for t in figures[-1].axes[0].texts]
    assert "decay_pure, decay_boost" in marks
    # C-RLFT: loss (weighted CE + KL term) and weighted_ce_sum differ by 1e-4: one line, both named
    ck = [{"step": i, "loss": 2.3 + 0.01 * i + 1e-4, "weighted_ce_sum": 2.3 + 0.01 * i, "ce_sum": 2.5,
           "kl_sum": 0.01 + 0.001 * i} for i in range(1, 21)]
    assert trainplots.other_objectives([stage("selfknow", "selfknow", ck)], tmp_path / "o.png")
    labels = [ln.get_label() for ln in figures[-1].axes[0].lines if not ln.get_label().startswith("_")]
    assert labels == ["selfknow (loss) = selfknow (weighted_ce_sum)"]


# ------------------------------------------------------------------ recipe graph


def test_recipe_graph_explains_colours_and_keeps_labels_apart(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    chain = ["corpus", "data", "tokenizer", "tokens", "stable", "decay_boost", "sft", "dpo", "eval_chat",
             "chat_export", "character", "report"]
    stages = [StageFolder(n, Path(n), "report" if n == "report" else "x", "done", deps=[chain[i - 1]] if i else [])
              for i, n in enumerate(chain)]
    for n, dep, status in (("decay_pure", "stable", "done"), ("eval_pure", "decay_pure", "failed"),
                           ("longctx", "decay_boost", "done"), ("long_sft", "longctx", "pending"),
                           ("export_32k", "long_sft", "pending"), ("needle", "long_sft", "pending"),
                           ("longstudy", "long_sft", "pending")):
        stages.insert(-1, StageFolder(n, Path(n), "x", status, deps=[dep]))
    stages[-1].status = "this report"
    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    p = plots.recipe_graph(stages, tmp_path / "g.png")
    fig = kept[-1]
    w, _ = png_size(p.read_bytes())
    assert w <= PAGE_PX
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_bbox_patch().get_window_extent(r) for t in fig.axes[0].texts if t.get_bbox_patch()]
    assert len(boxes) == len(stages)
    overlaps = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not overlaps
    legend = fig.legends[0]
    assert {t.get_text() for t in legend.get_texts()} == {"done", "failed", "pending", "this report"}


# ------------------------------------------------------------------ task-mix grid


def test_grid_heatmap_one_row_per_distinct_mix_one_colour_scale(tmp_path, figures):
    from lmforge.align.task_mix import grid_points, label

    tasks = ["en", "zh"]
    shares = grid_points(tasks, {"en": [1, 2], "zh": [1, 2]})    # 1:1 and 2:2 are one mix
    assert len(shares) == 3
    points = [{"point": k, "shares": s, "label": label(s),
               "heldout": {"en": {"loss": 4.0 - s["en"]}, "zh": {"loss": 6.5 - s["zh"]}}, "score": [0.0]}
              for k, s in enumerate(shares)]
    for p in points:
        p["score"] = [sum(v["loss"] for v in p["heldout"].values()) / 2]
    # a grid.json written before points were deduplicated: 2:2 kept as its own point
    points.append({**points[0], "point": 3, "shares": {"en": 0.5, "zh": 0.5}})
    grid = {"tasks": tasks, "points": points, "best": 0, "rule": "mean_loss", "axes": {"en": [1, 2], "zh": [1, 2]},
            "config": {"weights": {"en": [1, 2], "zh": [1, 2]}}}
    assert plots.grid_heatmap(grid, tmp_path / "g.png")
    fig = figures[0]
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 1 and images[0].get_array().shape == (3, 3)     # 3 mixes x (2 tasks + mean)
    colourbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colourbars) == 1 and "nats above the best mix" in colourbars[0].get_ylabel()
    # one scale: the same loss gap reads as the same colour in every column
    arr = images[0].get_array()
    assert arr.min() == 0 and images[0].norm.vmax == pytest.approx(float(arr.max()))
    assert [label for label, _ in plots.grid_mixes(grid)] == ["en 50% : zh 50%", "en 33% : zh 67%", "en 67% : zh 33%"]
    assert [idx for _, idx in plots.grid_mixes(grid)] == [[0, 3], [1], [2]]


# ------------------------------------------------------------------ skip when nothing changed


def test_finished_report_skips_until_an_input_changes(tmp_path):
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    metrics = run / "pretrain" / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": i, "loss": 6.0 - 0.1 * i}) + "\n" for i in range(1, 8)))
    stages = [{"name": "pretrain", "kind": "pretrain", "out_dir": str(run / "pretrain"), "status": "done"},
              {"name": "report", "kind": "report", "out_dir": str(run / "report"), "status": "running",
               "deps": ["pretrain"]}]
    (run / "recipe.json").write_text(json.dumps({"name": "t", "stages": stages}))
    cfg = ReportConfig(run_dir=str(run))
    first = run_report(cfg, progress=False)
    assert not first.get("skipped")
    html = run / "report" / "report.html"
    stamp = html.stat().st_mtime_ns
    # the recipe reran: the report stage is "running" again, its own entry rewritten
    stages[1].update(status="done", seconds=3.0)
    (run / "recipe.json").write_text(json.dumps({"name": "t", "stages": stages}))
    again = run_report(cfg, progress=False)
    assert again["skipped"] and html.stat().st_mtime_ns == stamp
    # a skipped stage that rewrites its summary unchanged (the data stage does) changes nothing
    import os
    summary = run / "pretrain" / "summary.json"
    summary.write_text('{"docs": 3}')
    run_report(cfg, progress=False)
    stamp = html.stat().st_mtime_ns
    summary.write_text('{"docs": 3}')
    os.utime(summary, ns=(stamp + 10 ** 9, stamp + 10 ** 9))
    assert run_report(cfg, progress=False)["skipped"] and html.stat().st_mtime_ns == stamp
    with metrics.open("a") as f:                       # a stage resumed and logged more steps
        f.write(json.dumps({"step": 8, "loss": 5.1}) + "\n")
    redone = run_report(cfg, progress=False)
    assert not redone.get("skipped") and html.stat().st_mtime_ns != stamp


def test_validation_branches_are_separate_paths(tmp_path, figures):
    """Two branches from one checkpoint log held-out losses at the same global steps: one line
    per branch (continuing from its input's last point), never a zigzag between them."""
    def run(n, start, slope, domains=("code", "prose")):
        return [{"step": i, "loss": 6.0, **({f"val/{d}": start - slope * i - 0.3 * k for k, d in enumerate(domains)}
                                            if i % 4 == 0 else {})} for i in range(1, n + 1)]
    stages = [stage("stable", "pretrain", run(16, 7.0, 0.05)),
              stage("decay_pure", "pretrain", run(8, 6.2, 0.02), ["stable"]),
              stage("decay_boost", "pretrain", run(8, 6.6, 0.02), ["stable"])]
    assert trainplots.validation(stages, tmp_path / "v.png", {"code": 6.3}, 6.93)
    ax = figures[0].axes[0]
    paths = [ln for ln in ax.lines if ln.get_marker() == "o"]            # not the baselines or marks
    assert len(paths) == 6                                   # 2 domains x 3 stages
    for ln in paths:
        xs = list(ln.get_xdata())
        assert xs == sorted(set(xs)), xs                     # one y per step on a line
    boost = [ln for ln in paths if ln.get_linestyle() != "-"]
    assert len(boost) == 2 and all(ln.get_xdata()[0] == 16 for ln in boost)   # from stable's last point
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["code", "prose"] and "decay_boost (a branch)" in legend
