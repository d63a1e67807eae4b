"""Recipe fidelity (lmforge.recipe.fidelity): the realised mixture per stage and the languages kept,
checked against what each recipe declares from its report. Each bug an audit found is planted
back into the shipped recipe and must be caught by `--check` in one line."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lmforge.config import ConfigError, read_yaml
from lmforge.recipe import fidelity
from lmforge.recipe.config import build_recipe, load_recipe
from lmforge.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def shipped(name: str) -> dict:
    return read_yaml(REPO / "recipes" / f"{name}.yaml")


def stage(data: dict, name: str) -> dict:
    return next(s for s in data["stages"] if s["name"] == name)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_check_prints_the_realised_mixture_of_every_recipe(path, capsys):
    assert cli_main(["run", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    recipe = load_recipe(path)
    trains = any(st.kind == "pretrain" for st in recipe.stages)    # findings.yaml pretrains inside its findings
    assert ("mixture (token shares the sampler realises" in out if trains else "mixture: no pretraining stage" in out)
    assert "languages kept:" in out
    for st in recipe.stages:
        if st.kind == "pretrain":
            assert f"  {st.name}" in out          # one row (or one per curriculum stage) per pretraining stage


def test_skywork_stage1_realises_its_header_table_and_no_sudden_drop():
    recipe = load_recipe(REPO / "recipes" / "skywork-13b.yaml")
    rows = {r.stage: r for r in fidelity.mixture_rows(recipe)}
    for name in ("stage1/cosine", "stage1/constant"):
        s = rows[name].start
        assert s["prose"] + s["curated"] == pytest.approx(0.522, abs=0.005)
        assert (s["zh"], s["code"]) == (pytest.approx(0.396, abs=0.005), pytest.approx(0.08, abs=0.005))
    end1, start2 = rows["stage1/constant"].end, rows["stage2"].start
    # the stage-2 ramp starts at 10% code; every other domain keeps its stage-1 ratio (no jump of curated)
    assert start2["code"] == pytest.approx(0.1)
    assert abs(start2["curated"] - end1["curated"]) < 0.01
    assert start2["curated"] / start2["prose"] == pytest.approx(end1["curated"] / end1["prose"])
    # the 1T-token constant-LR segment after the cosine one: 2:1, at the cosine's floor 6e-5
    st1 = recipe.stage("stage1").config
    assert [s.steps for s in st1.stages] == [16000, 8000]
    assert st1.stages[1].schedule.kind == "constant" and st1.stages[1].schedule.lr == 6.0e-5
    assert st1.stages[0].schedule.min_ratio * st1.train.optim.lr == pytest.approx(6.0e-5)


def test_the_old_skywork_mixture_is_refused_and_a_wrong_share_is_caught():
    data = shipped("skywork-13b")
    old = copy.deepcopy(data)   # as shipped before: final weights x repeat 5 (curated .488)
    stage(old, "stage1")["config"]["stages"][0]["mixture"] = {
        "weights": {"prose": 0.362, "curated": 0.16, "zh": 0.396, "code": 0.08}, "repeat": {"curated": 5}}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.mixture\.repeat: .*final"):
        build_recipe(old, "skywork-13b.yaml")
    off = copy.deepcopy(data)   # a share that no longer matches the declared table
    stage(off, "stage1")["config"]["stages"][1]["mixture"] = {
        "weights": {"prose": 0.221, "curated": 0.488, "zh": 0.242, "code": 0.049}}
    problems = fidelity.check(build_recipe(off, "skywork-13b.yaml"))
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith("skywork-13b.yaml: declares.mixture.stage1: stage1/constant realises")
    assert "prose+curated 0.709 (declared 0.522)" in problems[0] and "zh 0.242 (declared 0.396)" in problems[0]


def test_stablelm_keeps_its_reports_languages_and_a_filter_that_drops_them_is_caught():
    recipe = load_recipe(REPO / "recipes" / "stablelm2-1.6b.yaml")
    assert set(recipe.stage("data").config.langid.allowed) == {"en", "de", "es", "fr", "it", "nl", "pt"}
    assert fidelity.check(recipe) == []
    from lmforge.data.langid import detect, supported_languages
    assert {"en", "de", "es", "fr", "it", "nl", "pt"} <= supported_languages()
    assert detect("Der schnelle braune Fuchs springt über den faulen Hund und läuft davon.")[0] == "de"
    data = shipped("stablelm2-1.6b")
    del stage(data, "data")["config"]["langid"]           # the default [en, zh], as shipped before
    problems = fidelity.check(build_recipe(data, "stablelm2-1.6b.yaml"))
    assert problems == ["stablelm2-1.6b.yaml: stages.data.config.langid.allowed: ['en', 'zh'] vs the recipe's "
                        "declared languages ['en', 'de', 'es', 'fr', 'it', 'nl', 'pt'] (drops de, es, fr, it, nl, "
                        "pt) (keeps zh, not declared)"]
    stage(data, "data")["config"]["langid"] = {"allowed": ["en", "de", "es", "fr", "it", "nl", "pt", "xx"]}
    (problem,) = [p for p in fidelity.check(build_recipe(data, "s.yaml")) if "cannot be detected" in p]
    assert problem.startswith("s.yaml: stages.data.config.langid.allowed: xx cannot be detected")


def test_declares_is_typed_and_names_real_stages():
    data = shipped("yi-9b-growth")
    data["declares"]["mixture"] = {"phase3": {"prose": 1.0}}
    (problem,) = fidelity.check(build_recipe(data, "yi.yaml"))
    assert problem.startswith("yi.yaml: declares.mixture.phase3: no pretraining stage of that name")
    data["declares"] = {"langauges": ["en"]}
    with pytest.raises(ConfigError, match="langauges"):
        fidelity.check(build_recipe(data, "yi.yaml"))


def test_yi_recipe_grows_by_similarity_and_carries_the_batch():
    recipe = load_recipe(REPO / "recipes" / "yi-9b-growth.yaml")
    grow = recipe.stage("grow").config
    assert grow.block is None and grow.add_layers == 16 and grow.data     # chosen from calibration text
    assert recipe.stage("phase2").config.init.from_checkpoint == recipe.stage("phase1").out_dir
    assert recipe.stage("phase2").config.train.batch_growth.carry
