"""`lmforge report`: a tiny real run (data funnel, pretrain, eval) -> report.html whose images
all exist and are valid PNGs; works on partial runs; renders in headless Chromium if present."""
import json
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lmforge import config
from lmforge.data.pipeline import run_pipeline
from lmforge.stages.eval import EvalConfig, run as run_eval
from lmforge.stages.report import ReportConfig, run as run_report
from test_data_pipeline import config as data_config, make_corpus
from test_eval_helpers import tiny_run


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.sections, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "section":
            self.sections.append(a.get("id"))

    def handle_data(self, data):
        self.text.append(data)


def check_png(path: Path) -> tuple[int, int]:
    """Signature, IHDR and every chunk's CRC; returns (width, height)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, kinds = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body), path
        kinds.append(kind)
        pos += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    w, h = struct.unpack(">II", data[16:24])
    assert w > 100 and h > 100
    return w, h


def parse(html_path: Path) -> Page:
    page = Page()
    page.feed(html_path.read_text(encoding="utf-8"))
    for src in page.imgs:
        check_png(html_path.parent / src)
    return page


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run_dir = tmp / "run"
    # data stage: the real pipeline on a small corpus
    make_corpus(tmp / "raw")
    cfg = data_config(tmp, steps=["filters"], output=str(run_dir / "data"))
    run_pipeline(cfg, log=lambda *a: None)
    # pretrain stage: a tiny real run (metrics.jsonl with val losses, mixture.json)
    pre = tiny_run(tmp / "pre", steps=6)
    shutil.copytree(pre, run_dir / "pretrain")
    # eval stage: perplexity on the val split + an MCQ file
    mcq = tmp / "mcq.jsonl"
    mcq.write_text("".join(json.dumps({"question": f"Q{i}?", "choices": ["fox", "dog", "12"], "answer": i % 3})
                           + "\n" for i in range(6)))
    ecfg = config.load(EvalConfig, data={
        "checkpoint": str(run_dir / "pretrain"), "out_dir": str(run_dir / "eval"),
        "perplexity": {"data": str(tmp / "pre" / "tokens")},
        "mcq": {"sets": [{"name": "toy", "path": str(mcq)}], "shots": [0, 1]}})
    first = run_eval(ecfg, progress=False)
    assert run_eval(ecfg, progress=False)["skipped"]
    # an interrupted eval (no DONE.json) reuses its finished sections from parts/
    (run_dir / "eval" / "DONE.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "eval" / "parts").iterdir()}
    assert run_eval(ecfg, progress=False) == first
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "eval" / "parts").iterdir()} == before
    # grow stage (layer similarities), needle picture from another stage's format
    (run_dir / "grow").mkdir()
    (run_dir / "grow" / "similarity.json").write_text(json.dumps({"layer_similarity": [0.5, 0.9, 0.95, 0.7],
                                                                  "duplicated": [1, 2]}))
    stages = [{"name": "data", "kind": "data", "out_dir": str(run_dir / "data"), "status": "done"},
              {"name": "pretrain", "kind": "pretrain", "out_dir": str(run_dir / "pretrain"), "status": "done"},
              {"name": "grow", "kind": "grow", "out_dir": "elsewhere/grow", "status": "done"},
              {"name": "eval", "kind": "eval", "out_dir": str(run_dir / "eval"), "status": "done"},
              {"name": "sft", "kind": "sft", "out_dir": str(run_dir / "sft"), "status": "pending"}]
    (run_dir / "recipe.json").write_text(json.dumps({"name": "tiny", "stages": stages}))
    return run_dir


def test_full_report(full_run, tmp_path):
    summary = run_report(ReportConfig(run_dir=str(full_run), out=str(tmp_path / "rep")), progress=False)
    html_path = tmp_path / "rep" / "report.html"
    page = parse(html_path)
    assert page.sections == ["overview", "training", "data", "mixture", "eval", "grow"]
    assert summary["sections"] == page.sections and summary["problems"] == []
    names = {Path(s).name for s in page.imgs}
    assert {"train_loss.png", "train_lr.png", "train_grad_norm.png", "train_tokens_per_s.png", "val_loss.png",
            "funnel_data.png", "mixture_pretrain.png", "grow_grow.png"} <= names
    text = " ".join(page.text)
    for needle in ("Perplexity (val split)", "Multiple choice", "bits/byte", "sft", "missing", "filters",
                   "prose", "code"):
        assert needle in text, needle
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "![train_loss](train_loss.png)" in md and "## Data funnel" in md
    assert (full_run / "eval" / "eval.md").read_text().count("| toy |") == 2  # 0- and 1-shot rows


def test_partial_run_and_single_stage(full_run, tmp_path):
    # only the pretrain folder, no recipe.json: one stage, training + mixture sections only
    summary = run_report(ReportConfig(run_dir=str(full_run / "pretrain")), progress=False)
    page = parse(full_run / "pretrain" / "report" / "report.html")
    assert page.sections == ["overview", "training", "mixture"] and summary["stages"] == ["pretrain"]
    # a run dir without recipe.json: its stage subfolders, a crash-cut metrics line reported
    part = tmp_path / "part"
    shutil.copytree(full_run / "data", part / "data")
    (part / "pretrain").mkdir()
    (part / "pretrain" / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0, "lr": 0.001}\n{"step": 2, "lo')
    summary = run_report(ReportConfig(run_dir=str(part), out=str(tmp_path / "r2")), progress=False)
    assert summary["sections"] == ["overview", "training", "data"]
    assert "malformed line" in summary["problems"][0]
    parse(tmp_path / "r2" / "report.html")


def test_cli_and_config_errors(full_run, tmp_path):
    import argparse
    from lmforge.cli.eval import register as reg_eval
    from lmforge.cli.report import register as reg_report
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    reg_eval(sub)
    reg_report(sub)
    args = parser.parse_args(["report", str(full_run), "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0 and (tmp_path / "cli" / "report.html").is_file()
    with pytest.raises(config.ConfigError, match="run_dir"):
        config.load(ReportConfig, data={})
    with pytest.raises(config.ConfigError, match="checkpoint"):
        config.load(EvalConfig, data={})
    with pytest.raises(config.ConfigError, match="mcq.shots"):
        config.load(EvalConfig, data={"checkpoint": "x", "mcq": {"shots": [-1]}})


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-headless-shell")),
                    reason="no headless chromium on PATH (apt-get install chromium-headless-shell)")
def test_renders_in_headless_chromium(full_run, tmp_path):
    run_report(ReportConfig(run_dir=str(full_run), out=str(tmp_path / "rep")), progress=False)
    shot = tmp_path / "shot.png"
    res = subprocess.run(["bash", str(Path(__file__).parent.parent / "scripts" / "check_report.sh"),
                          str(tmp_path / "rep" / "report.html"), str(shot)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    w, h = check_png(shot)
    assert w >= 800 and h >= 600
