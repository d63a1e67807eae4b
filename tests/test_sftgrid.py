"""`lmforge sftgrid`: the task-mix grid search picks the planted best mix; grid arithmetic;
rules; resume; config errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge import config
from lmforge.align import task_mix
from lmforge.config import ConfigError
from lmforge.stages.sftgrid import SFTGridConfig, run
from test_align_utils import COLORS, THINGS, color_of, make_source, write_jsonl


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def grid_cfg(src_run, data, out, *extra) -> SFTGridConfig:
    return config.load(SFTGridConfig, None, [
        f"init.from_checkpoint={src_run}", f"data={[str(d) for d in data]}", f"out_dir={out}", "task_key=task",
        "train.seq_len=64", "train.micro_batch_size=8", "train.optim.lr=1e-2", "max_steps=16", "epochs=3",
        "heldout=6", *extra])


def two_tasks(path: Path) -> Path:
    """Two tasks with disjoint replies: colour answers ("The sky is blue.") and spelling
    ("s k y"). A model trained on one task only has never seen the other's replies."""
    recs = []
    for ask, spell in (("What color is the {}?", "Spell {}."), ("Which color is the {}?", "Spell the word {}."),
                       ("Tell me the color of the {}.", "How do you spell {}?")):
        for t in THINGS:
            recs.append({"messages": [{"role": "user", "content": ask.format(t)},
                                      {"role": "assistant", "content": f"The {t} is {color_of(t)}."}],
                         "task": "colors"})
            recs.append({"messages": [{"role": "user", "content": spell.format(t)},
                                      {"role": "assistant", "content": " ".join(t)}], "task": "spell"})
    return write_jsonl(path, recs)


def test_grid_points_and_counts():
    pts = task_mix.grid_points(["a", "b"], {"a": [1, 3], "b": [1, 3]})
    assert pts == [{"a": 0.5, "b": 0.5}, {"a": 0.25, "b": 0.75}, {"a": 0.75, "b": 0.25}]   # (3, 3) = (1, 1)
    assert task_mix.grid_points(["a", "b", "c"], {"a": [0, 1]}) == [{"a": 0, "b": 0.5, "c": 0.5},
                                                                     {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}]
    assert task_mix.grid_points(["a", "b"], points=[{"a": 0, "b": 0}, {"a": 2}]) == [{"a": 1.0, "b": 0.0}]
    assert task_mix.counts_for({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10) == {"a": 4, "b": 3, "c": 3}
    assert sum(task_mix.counts_for({"a": 0.123, "b": 0.877}, 997).values()) == 997
    import numpy as np
    rng = np.random.default_rng(0)
    got = task_mix.draw(list(range(5)), 12, rng)
    assert sorted(got) == sorted(list(range(5)) * 2 + got[10:]) and len(set(got[10:])) == 2   # 2 passes + 2


def test_rules_choose():
    def res(losses, mcq=None):
        return {"heldout": {t: {"loss": v} for t, v in losses.items()}, "mcq": mcq or {}}
    results = [res({"a": 1.0, "b": 3.0}), res({"a": 2.0, "b": 1.5}), res({"a": 1.5, "b": 2.0})]
    assert task_mix.choose(results, "mean_loss") == 1        # means 2.0, 1.75, 1.75: the earlier
    assert task_mix.choose(results, "max_loss") == 1         # worst 3.0, 2.0, 2.0: the earlier
    results[0]["mcq"] = {"a": {"acc_norm": 0.9}}
    results[1]["mcq"] = {"a": {"acc_norm": 0.5}}
    results[2]["mcq"] = {"a": {"acc_norm": 0.9}}
    assert task_mix.choose(results, "mcq") == 2              # 0.9 twice: the lower mean loss
    ties = [res({"a": 1.0}), res({"a": 1.0})]
    assert task_mix.choose(ties, "mean_loss") == 0


def test_grid_search_picks_the_planted_best_mix(source, tmp_path):
    """Pure colours, pure spelling, and half-half: every point trains on the same number of
    conversations from the same start. Held out per task, each pure point is best on its own
    task and far off on the other, so the half-half mix must win on mean loss (and on the
    worst task). A wrong held-out split, per-task bookkeeping or rule direction fails this."""
    src_run, _ = source
    data = two_tasks(tmp_path / "tasks.jsonl")
    mcq = write_jsonl(tmp_path / "mcq.jsonl", [
        {"question": f"What color is the {t}?", "choices": [color_of(t), *[c for c in COLORS if c != color_of(t)][:3]],
         "answer": 0} for t in THINGS[:6]])
    out = tmp_path / "grid"
    points = [{"colors": 1, "spell": 0}, {"colors": 0, "spell": 1}, {"colors": 1, "spell": 1}]
    summary = run(grid_cfg(src_run, [data], out, f"points={json.dumps(points)}", "size=48",
                           f"mcq.colors={mcq}", "keep_checkpoints=best"), progress=False)
    grid = json.loads((out / "grid.json").read_text())
    res = grid["points"]
    loss = [[r["heldout"][t]["loss"] for t in ("colors", "spell")] for r in res]
    assert loss[0][0] < loss[2][0] < loss[1][0]          # colours: pure colours best, pure spelling worst
    assert loss[1][1] < loss[2][1] < loss[0][1]          # spelling: the other way round
    assert grid["best"] == 2 and summary["best"] == 2 and grid["best_shares"] == {"colors": 0.5, "spell": 0.5}
    assert grid["rule"] == "mean_loss" and "lowest mean" in grid["rule_text"]
    assert task_mix.choose(res, "max_loss") == 2
    assert [r["counts"] for r in res] == [{"colors": 48, "spell": 0}, {"colors": 0, "spell": 48},
                                          {"colors": 24, "spell": 24}]
    assert all(r["heldout"][t]["conversations"] == 6 for r in res for t in ("colors", "spell"))
    assert all(r["mcq"]["colors"]["n"] == 6 and 0 <= r["mcq"]["colors"]["acc_norm"] <= 1 for r in res)
    # held-out conversations (6 per task) are never trained on
    held = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    assert sorted(r["task"] for r in held) == ["colors"] * 6 + ["spell"] * 6
    held_msgs = {json.dumps(r["messages"]) for r in held}
    for k in range(3):
        trained = {json.dumps(json.loads(line)["messages"])
                   for line in (out / "points" / f"{k:02d}" / "data.jsonl").read_text().splitlines()}
        assert trained and not trained & held_msgs
    best = (out / "best.jsonl").read_text()
    assert best == (out / "points" / "02" / "data.jsonl").read_text()
    assert json.loads((out / "best_mix.json").read_text())["shares"] == {"colors": 0.5, "spell": 0.5}
    assert (out / "points" / "02" / "checkpoints").is_dir() and not (out / "points" / "00" / "checkpoints").exists()
    # a rerun skips; an interrupted search keeps the points already evaluated
    assert run(grid_cfg(src_run, [data], out, f"points={json.dumps(points)}", "size=48", f"mcq.colors={mcq}"),
               progress=False)["skipped"]
    (out / "DONE.json").unlink()
    before = (out / "points" / "01" / "heldout.json").read_text()
    again = run(grid_cfg(src_run, [data], out, f"points={json.dumps(points)}", "size=48", f"mcq.colors={mcq}"),
                progress=False)
    assert again["best"] == 2 and (out / "points" / "01" / "heldout.json").read_text() == before


def test_config_errors(source, tmp_path):
    src_run, _ = source
    data = two_tasks(tmp_path / "tasks.jsonl")
    with pytest.raises(ConfigError, match="weights"):
        grid_cfg(src_run, [data], tmp_path / "o")                       # neither weights nor points
    with pytest.raises(ConfigError, match="rule"):
        grid_cfg(src_run, [data], tmp_path / "o", "weights={colors: [1, 2]}", "rule=mcq")
    with pytest.raises(ConfigError, match="train.steps"):
        grid_cfg(src_run, [data], tmp_path / "o", "weights={colors: [1, 2]}", "train.steps=5")
    with pytest.raises(ConfigError, match="task 'chat' is not in the data"):
        run(grid_cfg(src_run, [data], tmp_path / "o", "weights={chat: [1, 2]}"), progress=False)
    with pytest.raises(ConfigError, match="holding out 40 leaves none"):
        run(grid_cfg(src_run, [data], tmp_path / "o2", "weights={colors: [1, 2]}", "heldout=40"), progress=False)
