"""sftdata -> sftgrid -> sft -> report as recipe stages: references resolve, the report shows the
SFT data funnel (with the distributions before/after) and the grid (table + heatmap)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from lmforge.recipe import load_recipe, run_recipe
from test_align_utils import color_of, make_source, THINGS, write_jsonl


def chat_data(path: Path) -> Path:
    recs = []
    for ask, spell in (("What color is the {}?", "Spell {}."), ("Which color is the {}?", "Spell the word {}."),
                       ("Tell me the color of the {}.", "How do you spell {}?"), ("Name the colour of the {}.",
                                                                                 "Write {} letter by letter.")):
        for t in THINGS:
            recs.append({"messages": [{"role": "user", "content": ask.format(t)},
                                      {"role": "assistant", "content": f"The {t} is {color_of(t)}."}],
                         "meta": {"source": "colors-set", "category": "colors"}})
            recs.append({"messages": [{"role": "user", "content": spell.format(t)},
                                      {"role": "assistant", "content": " ".join(t)}],
                         "meta": {"source": "spelling-set", "category": "spell"}})
    recs += recs[:10]                                                  # exact duplicates to remove
    return write_jsonl(path, recs)


def test_recipe_sftdata_sftgrid_sft_report(tmp_path):
    src_run, _ = make_source(tmp_path / "src")
    data = chat_data(tmp_path / "chat.jsonl")
    train = {"seq_len": 64, "micro_batch_size": 8, "optim": {"lr": 1.0e-2}, "eval_batches": 1}
    stages = [
        {"name": "sftdata", "config": {
            "data": [str(data)], "task_key": "meta.category", "dedup": {"near": False},
            "diversity": {"target": 80, "clusters": 4},
            "system": {"prompts": ["Be brief.", "Answer carefully."], "assign_share": 0.5, "max_share": 0.6}}},
        {"name": "sftgrid", "config": {
            "data": ["${sftdata}/sft.jsonl"], "init": {"from_checkpoint": str(src_run)},
            "weights": {"colors": [1, 3], "spell": [1, 3]}, "size": 32, "heldout": 4, "max_steps": 4,
            "train": train}},
        {"name": "sft", "config": {"data": ["${sftgrid}/best.jsonl"], "init": {"from_checkpoint": str(src_run)},
                                   "max_steps": 2, "train": train}},
        {"name": "report", "config": {"run_dir": "${run}"}},
    ]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "chat", "out_dir": str(tmp_path / "run"), "device": "cpu",
                                    "stages": stages}, sort_keys=False))
    run_recipe(load_recipe(path), progress=False, log=lambda line: None)
    run = tmp_path / "run"
    ledger = json.loads((run / "recipe.json").read_text())
    assert {s["name"]: s["status"] for s in ledger["stages"]} == {n: "done" for n in ("sftdata", "sftgrid", "sft",
                                                                                       "report")}
    grid = json.loads((run / "sftgrid" / "grid.json").read_text())
    assert len(grid["points"]) == 3 and grid["axes"] == {"colors": [1, 3], "spell": [1, 3]}
    report = run / "report"
    html = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    for title in ("SFT data funnel", "SFT task-mix grid search"):
        assert title in html and title in md
    images = {p.name for p in report.glob("*.png")}
    assert {"sft_funnel_sftdata.png", "sftgrid_sftgrid.png", "sft_sftdata_diversity.png",
            "sft_sftdata_system_balance.png", "sft_sftdata_system_assign.png"} <= images, images
    assert "exact_duplicate 10" in md and "diversity_sampling" in md
    assert "prompt clusters (tfidf)" in md and "most central prompt" in md   # clusters named two ways
    assert "rule mean_loss" in md and md.count("| yes |") == 1       # one chosen point in the grid table
    # rerunning the finished recipe: every stage skips, the report too (its inputs are unchanged)
    stamp = (report / "report.html").stat().st_mtime_ns
    lines = []
    run_recipe(load_recipe(path), progress=False, log=lines.append)
    assert any(line.startswith("-- report: already done, skipped") for line in lines), lines
    assert (report / "report.html").stat().st_mtime_ns == stamp
