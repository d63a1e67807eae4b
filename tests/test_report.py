"""`lmforge report`: a tiny real run (data funnel, pretrain, eval) -> report.html whose images
all exist and are valid PNGs; works on partial runs; renders in headless Chromium if present."""
import base64
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
        self.imgs, self.alts, self.sections, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
            self.alts.append(a.get("alt", ""))
        if tag == "section":
            self.sections.append(a.get("id"))

    def handle_data(self, data):
        self.text.append(data)


def check_png(path: Path | bytes) -> tuple[int, int]:
    """Signature, IHDR and every chunk's CRC; returns (width, height)."""
    data = path if isinstance(path, bytes) else path.read_bytes()
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
    for src in page.imgs:      # every plot inside the page itself: report.html alone keeps them
        assert src.startswith("data:image/png;base64,"), src[:80]
        check_png(base64.b64decode(src.split(",", 1)[1]))
    return page


# what the sft and dpo stages log (names as lmforge.train.objectives writes them); a perplexity
# of ~340 beside losses of ~6 and a DPO loss of ~0.69: each must land on its own axis
SFT_METRICS = [{"step": i, "loss": 6.0 - 0.05 * i, "lr": 3e-4, "grad_norm": 0.8, "tokens_per_s": 1500.0 + i,
                "tokens_seen": 512 * i} for i in range(1, 13)]
SFT_METRICS[-1].update({"val/sft_loss": 5.83, "val/sft_ppl": 339.65})
DPO_METRICS = [{"step": i, "loss": 0.6931 - 0.004 * i, "dpo_loss_sum": 0.6931 - 0.004 * i, "lr": 5e-5,
                "grad_norm": 10.0, "tokens_per_s": 80.0, "tokens_seen": 576 * i, "reward_chosen_sum": -0.01 * i,
                "reward_rejected_sum": -0.02 * i, "margin_sum": 0.01 * i, "accuracy_sum": min(1.0, 0.1 * i),
                "logp_chosen_sum": -86.0} for i in range(1, 13)]
DPO_STATS = {"pairs": {"records": 2650, "kept": 1989, "malformed": 0, "tie": 0, "duplicate": 415, "too_long": 246},
             "step0": {"pairs": 4, "max_abs_margin": 0.0}, "train_pairs": 1989, "val_pairs": 0, "planned_steps": 12}


def write_lines(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run_dir = tmp / "run"
    # data stage: the real pipeline on a small corpus
    make_corpus(tmp / "raw")
    cfg = data_config(tmp, steps=["filters", "topics"], output=str(run_dir / "data"), topics={"clusters": 3})
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
    (run_dir / "grow" / "similarity.json").write_text(json.dumps({"layer_similarity": [0.5, 0.977, 0.988, 0.7],
                                                                  "duplicated": [1, 2]}))
    # sft and dpo stages: their metrics.jsonl / stats.json as those stages write them
    write_lines(run_dir / "sft" / "metrics.jsonl", SFT_METRICS)
    write_lines(run_dir / "dpo" / "metrics.jsonl", DPO_METRICS)
    (run_dir / "dpo" / "stats.json").write_text(json.dumps(DPO_STATS))
    stages = [{"name": "data", "kind": "data", "out_dir": str(run_dir / "data"), "status": "done"},
              {"name": "pretrain", "kind": "pretrain", "out_dir": str(run_dir / "pretrain"), "status": "done"},
              {"name": "grow", "kind": "grow", "out_dir": "elsewhere/grow", "status": "done", "deps": ["pretrain"]},
              {"name": "sft", "kind": "sft", "out_dir": str(run_dir / "sft"), "status": "done", "deps": ["pretrain"]},
              {"name": "dpo", "kind": "dpo", "out_dir": str(run_dir / "dpo"), "status": "done", "deps": ["sft"]},
              {"name": "eval", "kind": "eval", "out_dir": str(run_dir / "eval"), "status": "done"},
              {"name": "selfknow", "kind": "selfknow", "out_dir": str(run_dir / "selfknow"), "status": "pending"}]
    (run_dir / "recipe.json").write_text(json.dumps({"name": "tiny", "stages": stages}))
    return run_dir


def table_notes(html_text: str) -> list[tuple[list[str], list[list[str]], str]]:
    """(headers, rows, the notes after it) of every table of a report page."""
    import re
    out = []
    for m in re.finditer(r"<table>(.*?)</table>((?:<p class=\"note\">.*?</p>)*)", html_text, re.S):
        body, notes = m.group(1), m.group(2)
        heads = re.findall(r"<th[^>]*>(.*?)</th>", body)
        rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", body) if "<td" in r]
        out.append((heads, rows, notes))
    return out


def test_full_report(full_run, tmp_path):
    import html as htmllib
    import re

    summary = run_report(ReportConfig(run_dir=str(full_run), out=str(tmp_path / "rep")), progress=False)
    html_path = tmp_path / "rep" / "report.html"
    page = parse(html_path)
    assert page.sections == ["overview", "effects", "training", "data", "mixture", "eval", "grow"]   # pretrain and grow write effects
    assert summary["sections"] == page.sections and summary["problems"] == []
    names = {f"{a}.png" for a in page.alts}
    assert {"train_loss.png", "train_dynamics.png", "val_loss.png", "dpo_dpo.png", "funnel_data.png",
            "keep_data.png", "mixture_pretraining.png", "grow_grow.png"} <= names
    text = " ".join(page.text)
    for needle in ("Perplexity (val split)", "Multiple choice", "bits/byte", "selfknow", "missing", "filters",
                   "prose", "code", "unigram", "acc_norm vs chance", "Progress by stage", "dpo: pairs read",
                   "dropped: duplicate", "documents kept per domain", "Pretraining data mixture by domain",
                   "expected sd"):
        assert needle in text, needle
    raw = html_path.read_text()
    # numbers rounded for reading: no float printed with more than 5 decimals anywhere
    assert not re.search(r"\d\.\d{6,}", htmllib.unescape(re.sub(r"<[^>]+>", " ", raw))), "unrounded number"
    # bytes in human units
    assert re.search(r"\d(\.\d+)? (kB|MB)", text)
    # every table column that is all "-" is explained in a note under the table; no table is silently empty
    for heads, rows, notes in table_notes(raw):
        assert rows or "No rows:" in notes, heads
        for j, h in enumerate(heads):
            if rows and all(r[j] == "-" for r in rows if j < len(r)):
                assert f"&#x27;{htmllib.escape(h, quote=False)}&#x27; is empty" in notes, (h, heads)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "![train_loss](train_loss.png)" in md and "## Data funnel" in md
    assert (full_run / "eval" / "eval.md").read_text().count("| toy |") == 2  # 0- and 1-shot rows


def test_partial_run_and_single_stage(full_run, tmp_path):
    # only the pretrain folder, no recipe.json: one stage, its effect, training + mixture sections
    summary = run_report(ReportConfig(run_dir=str(full_run / "pretrain"), out=str(tmp_path / "r1")), progress=False)
    page = parse(tmp_path / "r1" / "report.html")
    assert page.sections == ["overview", "effects", "training", "mixture"] and summary["stages"] == ["pretrain"]
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
    from lmforge.cli import build_parser
    parser = build_parser(["report"])
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


# ------------------------------------------------------------------ reading at a glance: unit tests


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the report saves, kept open for inspection."""
    from lmforge.report import plots
    caught = []
    real = plots.save

    def keep(fig, path, rect=None):
        caught.append(fig)
        fig.tight_layout(rect=rect)
        fig.savefig(path, dpi=40)
        return Path(path)
    monkeypatch.setattr(plots, "save", keep)
    yield caught
    assert real is not None


def stage(name, kind, records, **kw):
    from lmforge.report.collect import StageFolder
    return StageFolder(name, Path(name), kind, "done", metrics=records, **kw)


def test_metric_kind_puts_each_quantity_on_its_own_axis():
    from lmforge.report.kinds import metric_kind, objective
    assert metric_kind("val/sft_ppl", "lm") == "perplexity" and metric_kind("val/ppl", "lm") == "perplexity"
    assert metric_kind("val/sft_loss", "lm") == metric_kind("val/code", "lm") == metric_kind("loss", "lm") == "lm_loss"
    assert objective("", {"dpo_loss_sum", "loss"}) == objective("dpo", set()) == "dpo"
    assert metric_kind("loss", "dpo") == metric_kind("val/dpo_loss_sum", "dpo") == "pref_loss"
    assert metric_kind("margin_sum", "dpo") == metric_kind("reward_chosen_sum", "dpo") == "reward"
    assert metric_kind("accuracy_sum", "dpo") == "pref_accuracy"
    assert metric_kind("loss", "selfknow") == "weighted_loss" and metric_kind("ce_sum", "selfknow") == "lm_loss"
    assert metric_kind("val_bpb/code", "lm") == "bpb" and metric_kind("tokens_seen", "lm") is None
    assert metric_kind("val/mystery", "dpo") == "other:val/mystery"   # unknown: its own axis, never shared


def test_no_perplexity_or_dpo_loss_on_the_nats_axis(tmp_path, figures):
    from lmforge.report import trainplots
    pre = [{"step": i, "loss": 7.0 - 0.1 * i, "lr": 1e-3} for i in range(1, 21)]
    for r in pre[4::5]:
        r.update({"val/code": r["loss"] - 0.3, "val/prose": r["loss"], "val/mean": r["loss"] - 0.15,
                  "val/ppl": 300.0})
    stages = [stage("pretrain", "pretrain", pre), stage("sft", "sft", SFT_METRICS, deps=["pretrain"]),
              stage("dpo", "dpo", DPO_METRICS, deps=["sft"])]
    for st in stages[1:]:
        st.deps = [stages[stages.index(st) - 1].name]
    groups = trainplots.series_by_kind(stages, val=True)
    assert ("sft", "val/sft_ppl") in groups["perplexity"]
    assert all(key != "val/sft_ppl" for _, key in groups["lm_loss"])
    train = trainplots.series_by_kind(stages)
    assert ("dpo", "loss") in train["pref_loss"] and all(s != "dpo" for s, _ in train["lm_loss"])
    # the drawn axes: nothing on the nats/token axes above 20 (a perplexity is ~340, DPO's loss ~0.69)
    assert trainplots.validation(stages, tmp_path / "v.png", {"code": 6.3}, 6.93)
    assert trainplots.training_loss(stages, tmp_path / "t.png")
    for fig in figures:
        ax = fig.axes[0]
        curves = [ln for ln in ax.lines if len(set(ln.get_xdata())) > 1 and len(set(ln.get_ydata())) > 1]
        ys = [y for ln in curves for y in ln.get_ydata()]        # not the reference / stage lines
        assert ys and max(ys) < 20 and min(ys) > 1, ax.get_title()
        legend = ax.get_legend()
        assert legend is not None and legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # outside
    assert trainplots.dpo(stages[2], tmp_path / "d.png")
    titles = [a.get_title() for a in figures[-1].axes]
    assert titles == ["DPO loss", "Implicit rewards", "Preference accuracy"]


def test_palette_gives_every_removal_reason_its_own_colour(tmp_path, figures):
    from matplotlib.colors import to_hex

    from lmforge.report import palette, plots
    reasons = [f"reason_{i:02d}" for i in range(30)]
    steps = [{"dir": f"{k:02d}-step{k}", "step": f"step{k}", "in": {"docs": 1000, "bytes": 10 ** 6},
              "kept": {"docs": 1000 - 6 * 5, "bytes": 10 ** 6 - 30_000},
              "removed": {r: {"docs": 5, "bytes": 1000} for r in reasons[k * 6:(k + 1) * 6]}} for k in range(5)]
    st = stage("data", "data", [], data_steps=steps)
    assert plots.funnel(st, tmp_path / "f.png")
    ax = figures[0].axes[0]
    colour_of = {}
    for container in ax.containers:
        colour_of[container.get_label()] = to_hex(container.patches[0].get_facecolor())
    assert len(colour_of) == 31 and len(set(colour_of.values())) == 31      # kept + 30 reasons, all different
    cols = [c for label, c in colour_of.items() if label != "kept"]
    # and far apart, also from the "kept" green (CIELAB delta E; ~2.3 is a just-noticeable difference)
    assert min(palette.delta_e(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]) > 20
    assert min(palette.delta_e(c, palette.KEPT) for c in cols) > 25
    assert [label.split(": ")[0] for label in colour_of if label != "kept"] == [f"step{k}" for k in range(5)
                                                                               for _ in range(6)]  # by family
    assert len(set(palette.distinct(60))) == 60


def test_units_and_rounding():
    import numpy as np

    from lmforge.report.tables import fmt
    from lmforge.report.units import Bytes, Count, Share, human_bytes, human_count, num
    assert human_bytes(1_681_255) == "1.68 MB" and human_bytes(5_099_434) == "5.10 MB" and human_bytes(679) == "679 B"
    assert human_count(24_576) == "24.6k" and human_count(833_686) == "834k" and human_count(12) == "12"
    assert num(0.123456789) == "0.1235" and num(6.479123) == "6.479" and num(4086.871) == "4,087"
    assert num(0.25) == "0.25" and num(2e-05) == "2e-05" and num(float("nan")) == "-"
    assert fmt(np.float64(0.9395691337558674)) == "0.9396" and fmt(np.int64(7)) == "7"
    assert fmt([0.4885240269923088, 0.7717346082099539]) == "[0.4885, 0.7717]"
    assert fmt(Bytes(157_238)) == "157 kB" and fmt(Count(6144)) == "6.14k" and fmt(Share(0.052)) == "5.2%"


def test_empty_tables_and_columns_say_why():
    from lmforge.report.tables import Table, contamination_table, to_html, to_markdown
    t = Table("t", ["a", "b"], [["x", None], ["y", None]], why={"b": "no train split given"})
    assert "'b' is empty: no train split given" in to_markdown(t)
    assert "No rows:" in to_html(Table("e", ["a"], empty="the eval had no MCQ sets"))
    assert "'a' is empty: no value was recorded" in to_markdown(Table("u", ["a"], [[None]]))
    cont = {"quiz": {"ppl": {"splits": {"test": {"loss": 5.6}, "reference": {"loss": 5.7}}, "gap": 0.08,
                             "threshold": 0.1, "flagged": False},
                     "ngram": {"data": {"n": 13, "unit": "word", "items": 16, "too_short": 16, "contaminated": 0,
                                        "fraction": float("nan")}}}}
    md = to_markdown(contamination_table(cont))
    assert "all 16 items shorter than 13 words" in md and "'loss train' is empty: no benchmark gave a train" in md
    assert "nan" not in md


def write_tokens(folder: Path, docs_by_domain: dict[str, list[list[int]]], val: dict | None = None,
                 vocab: int = 64) -> Path:
    from lmforge.shards import ShardWriter, write_meta
    domains = sorted(docs_by_domain)
    entries = []
    for split, docs in (("train", docs_by_domain), ("val", val or {})):
        if docs:
            w = ShardWriter(folder, f"{split}-00000", vocab, split)
            for d, items in docs.items():
                for toks in items:
                    w.add(toks, domains.index(d))
            entries.append(w.close())
    write_meta(folder, entries, vocab, domains, 0)
    return folder


def test_mixture_spread_matches_the_real_sampler(tmp_path):
    """The expected sd of each realised share (delta method) against 300 runs of the trainer's
    own sampler (lmforge.train.mixture) on documents of very uneven length."""
    import numpy as np

    from lmforge.report.mixstats import _weights_to_shares, length_moments, share_sd, verdict
    from lmforge.shards import TokenDataset
    from lmforge.train.mixture import MixtureConfig, MixtureSampler, RampConfig, shares
    rng = np.random.default_rng(0)
    docs = {"chat": [[1] * int(n) for n in rng.integers(10, 90, 400)],          # short dialogs
            "prose": [[2] * int(n) for n in rng.lognormal(7.0, 0.8, 40)],       # long, uneven pages
            "code": [[3] * int(n) for n in rng.integers(200, 600, 60)]}
    folder = write_tokens(tmp_path / "tok", docs)
    ds = TokenDataset(folder, "train")
    target = {"chat": 0.2, "prose": 0.5, "code": 0.3}
    tokens = 40_000
    lengths = length_moments(folder)
    sd, n_docs = share_sd(target, lengths, tokens)
    real = {d: [] for d in target}
    for seed in range(300):
        s = MixtureSampler(ds, seed)
        s.set_shares(target)
        got = {d: 0 for d in target}
        total = 0
        while total < tokens:
            i = s.next_doc()
            n = min(ds.doc_len(i), tokens - total)      # the loader cuts the last document at the budget
            got[ds.domain_names[ds.doc_domain[i]]] += n
            total += n
        for d in target:
            real[d].append(got[d] / total)
    for d in target:
        assert abs(np.mean(real[d]) - target[d]) < 3 * sd[d] / np.sqrt(300) + 0.01, d
        # measured 0.89-0.93: each domain's documents are drawn without replacement within a pass
        assert 0.8 < np.std(real[d]) / sd[d] < 1.2, (d, np.std(real[d]), sd[d])
    assert sd["prose"] > 3 * np.sqrt(0.25 / n_docs)     # uneven lengths: far above the binomial sd
    # equal lengths: the binomial sd sqrt(s(1-s)/N)
    from lmforge.report.mixstats import DomainLengths
    eq = {d: DomainLengths(100, 50.0, 2500.0) for d in target}
    sd_eq, n_eq = share_sd(target, eq, 5000)
    assert n_eq == pytest.approx(100) and sd_eq["prose"] == pytest.approx(np.sqrt(0.25 / 100))
    # the target shares are the trainer's (weights, repeat, ramp midpoint)
    counts = {"chat": 100, "prose": 300, "code": 600}
    # (repeat = epochs of a source over its natural count: only without weights, lmforge.train.mixture)
    for mix in ({"weights": {}, "repeat": {"code": 5.0}},
                {"weights": {"chat": 1, "prose": 2, "code": 1}},
                {"weights": {}, "repeat": {}},
                {"weights": {"chat": 1, "prose": 1, "code": 2}, "ramp": {"domain": "chat", "start": 0.1, "end": 0.5}}):
        ref = shares(MixtureConfig(weights=mix["weights"], repeat=mix.get("repeat", {}),
                                   ramp=RampConfig(**mix["ramp"]) if mix.get("ramp") else None), counts, 0.5)
        assert _weights_to_shares(mix, counts) == pytest.approx(ref)
    # reading a gap: the 5.2% against 15% with ~600 documents of tiny's data is noise; 29% against
    # 15% with a 2-point sd is not
    assert verdict(0.052, 0.15, 0.079, 613).startswith("noise")
    assert verdict(0.29, 0.15, 0.02, 5000).startswith("beyond noise")


def test_unigram_baseline_matches_brute_force(tmp_path):
    import math
    from collections import Counter

    from lmforge.report.baselines import token_baselines
    train = {"a": [[1, 2, 3, 4, 1, 1], [2, 2, 5]], "b": [[7, 8, 9, 7]]}
    val = {"a": [[1, 2, 2, 6], [3, 3]], "b": [[7, 7, 9], [8]]}
    folder = write_tokens(tmp_path / "tok", train, val, vocab=16)
    b = token_baselines(folder, "val", 0)
    counts = Counter(t for docs in train.values() for d in docs for t in d)
    total = sum(counts.values())
    logp = {t: math.log((counts[t] + 0.5) / (total + 0.5 * 16)) for t in range(16)}
    for dom in ("a", "b"):
        preds = [t for d in val[dom] for t in d[1:]]           # every token but a document's first
        assert b["domains"][dom]["tokens"] == len(preds)
        assert b["domains"][dom]["loss"] == pytest.approx(-sum(logp[t] for t in preds) / len(preds), rel=1e-12)
    assert b["uniform"] == pytest.approx(math.log(16))
    assert token_baselines(folder, "val", 1)["domains"]["a"]["docs"] == 1
    assert token_baselines(tmp_path / "missing") is None


def test_needle_heatmap_reads_right(tmp_path, figures):
    from lmforge.report import needleplot
    needle = {"checkpoint": "runs/tiny/longctx/checkpoints/step-30", "rope": {"mode": "model"},
              "config": {"distractors": 2, "value_digits": 6, "trials": 1},
              "grid": {"lengths": [256, 512, 960], "depths": [0.0, 50.0, 100.0],
                       "exact": [[0, 0, 1], [0, 0, 0], [0, 0, 0]], "rank_acc": [[0, 1, 1], [0, 0, 0], [1, 0, 0]],
                       "logprob": [[-40.1, -45.2, -13.0], [-44.0, -47.5, -46.0], [-41.0, -48.0, -45.0]]}}
    assert needleplot.plot(needle, "needle", tmp_path / "n.png")
    fig = figures[0]
    heat = [a for a in fig.axes if a.get_xlabel()]
    assert len(heat) == 3
    for ax in heat:
        assert "depth" in ax.get_xlabel() and "length" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_yticklabels()] == ["256", "512", "960"]
        assert min(t.get_fontsize() for t in ax.texts) >= 9
    assert "chance 33%" in heat[1].get_title()
    title = fig._suptitle.get_text()
    assert "longctx step 30" in title and "runs/" not in title
    cap = needleplot.caption("needle", needle)
    assert "Columns: needle depth" in cap and "rows: prompt length" in cap and "-13.8" in cap


def test_depth_upscaling_bars_zoomed_and_chosen_block_marked(tmp_path, figures):
    from matplotlib.colors import to_hex

    from lmforge.report import plots
    raw = {"layers": [{"layer": i, "cosine": c} for i, c in enumerate([0.91, 0.977, 0.988, 0.95])],
           "block_size": 2, "block_scores": [0.9435, 0.9825, 0.969], "chosen_block": [1, 3]}
    from lmforge.report.collect import find_similarity
    st = stage("grow", "grow", [], grow={"file": "similarity.json", "similarity": find_similarity(raw), "raw": raw})
    assert plots.similarity(st, tmp_path / "g.png")
    layers, blocks = figures[0].axes
    lo, hi = layers.get_ylim()
    assert lo > 0.85 and hi < 1.0                        # not from 0: 0.977 and 0.988 differ visibly
    bars = layers.patches
    h977, h988 = bars[1].get_height(), bars[2].get_height()
    assert (h988 - h977) / (hi - lo) > 0.05              # at least 5% of the axis apart
    colours = [to_hex(b.get_facecolor()) for b in bars]
    assert colours[1] == colours[2] != colours[0] == colours[3]          # layers 1-2 duplicated
    assert {t.get_text() for t in layers.texts} >= {"0.977", "0.988"}
    bcol = [to_hex(b.get_facecolor()) for b in blocks.patches]
    assert bcol[1] != bcol[0] == bcol[2]


def test_dpo_and_baselines_in_a_report(full_run, tmp_path):
    import re
    run_report(ReportConfig(run_dir=str(full_run), out=str(tmp_path / "rep")), progress=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    # pair-filter counts as the dpo stage's stats.json has them
    assert "| dropped: duplicate | 415 | 15.7% |" in md and "| kept | 1,989 | 75.1% |" in md
    assert "none dropped as malformed, tie" in md
    # every perplexity row carries the untrained and unigram scores on the same documents
    ppl = md.split("### Perplexity (val split)")[1].split("###")[0]
    rows = [r for r in ppl.splitlines() if r.startswith("| ") and not r.startswith("| domain")]
    assert rows and all(re.search(r"\| [+-]\d\.\d{3} \|$", r) for r in rows), rows
    assert "Progress by stage" in md and "untrained (ln V)" in md


def test_broken_and_partial_files_are_listed_not_fatal(tmp_path):
    run = tmp_path / "run"
    write_lines(run / "pretrain" / "metrics.jsonl", [{"step": 1, "loss": 6.9, "val/code": 6.5}])
    (run / "pretrain" / "config.json").write_text("[1, 2]")                       # not an object
    (run / "pretrain" / "mixture.json").write_text(json.dumps([{"stage": "main", "tokens": {"a": 3, "b": 1}}]))
    write_lines(run / "dpo" / "metrics.jsonl", DPO_METRICS[:2])
    (run / "dpo" / "stats.json").write_text('{"pairs": ')                           # cut by a crash
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text(json.dumps({"perplexity": {"data": str(tmp_path / "gone"), "domains": {
        "a": {"docs": 1, "tokens": 10, "bytes": 30, "loss": 5.0, "ppl": 148.4, "bpb": 3.4}}}}))
    (run / "needle").mkdir()
    (run / "needle" / "needle.json").write_text(json.dumps({"summary": {"cells": 0}}))   # no grid
    summary = run_report(ReportConfig(run_dir=str(run), out=str(tmp_path / "rep")), progress=False)
    assert summary["sections"] == ["overview", "training", "mixture", "eval"]
    probs = " ".join(summary["problems"])
    assert "config.json: not a JSON object" in probs and "dpo/stats.json: unreadable" in probs
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "No untrained / unigram baselines: the eval's token data" in md and "was not found" in md
    assert "'target' is empty: no mixture is configured" in md
    page = parse(tmp_path / "rep" / "report.html")
    assert "Problems" in " ".join(page.text)
