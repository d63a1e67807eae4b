"""The stage descriptor and its contract: `lmforge X` and a recipe's stage X run the same code
(same outputs), every stage command takes its out_dir's lock, a missing input is one line before
any work, a single path is accepted where a list is expected."""
from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.recipe import load_recipe, run_recipe
from lmforge.stagekit.lock import LockError, RunLock
from lmforge.stagekit.stage import DONE, Stage

ROOT = Path(__file__).resolve().parents[1]


def stdlib_docs(folder: Path, n: int = 60) -> Path:
    """Real, mostly unique text: docstrings of Python standard-library modules, one document each,
    plus near-duplicates (a few words edited) the minhash step should remove."""
    import collections
    import email
    import json as json_mod
    import pathlib
    import textwrap
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for mod in (collections, email, json_mod, pathlib, textwrap, inspect, subprocess, socket, os):
        for name, obj in vars(mod).items():
            doc = inspect.getdoc(obj) if not name.startswith("_") else None
            if doc and len(doc) > 300:
                docs.append(doc)
    docs = list(dict.fromkeys(docs))[:n]
    near = [d.replace(" the ", " a ", 3) for d in docs[:5]]   # ~1-3% of words edited
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(docs + near):
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    return folder


def data_config(tmp_path: Path, raw: Path) -> dict:
    return {"input": [str(raw)], "workers": 1, "progress": False, "steps": ["filters", "minhash"],
            "filters": {"min_units": 5}}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lmforge_data_and_the_recipe_data_stage_write_the_same_outputs(tmp_path, capsys):
    raw = stdlib_docs(tmp_path / "raw")
    cfg = data_config(tmp_path, raw)
    (tmp_path / "data.yaml").write_text(json.dumps(cfg))
    cli_out = tmp_path / "cli"
    assert main(["data", str(tmp_path / "data.yaml"), "--out", str(cli_out), "--quiet"]) == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "r", "out_dir": str(tmp_path / "run"),
                                  "stages": [{"name": "data", "config": cfg}]}))
    capsys.readouterr()
    assert main(["run", str(recipe), "--check"]) == 0
    assert capsys.readouterr().out.startswith("run  data ")      # selected, not finished
    run_recipe(load_recipe(recipe), progress=False, log=lambda m: None)
    assert main(["run", str(recipe), "--check"]) == 0
    assert capsys.readouterr().out.startswith("done data ")      # recipe.json and DONE.json say so
    rec_out = tmp_path / "run" / "data"
    for out in (cli_out, rec_out):
        assert (out / DONE).is_file() and (out / "final").is_dir() and not (out / ".lock").exists()
    cli_final, rec_final = tree(cli_out / "final"), tree(rec_out / "final")
    assert cli_final and cli_final == rec_final                    # the same shards, byte for byte
    cli_done, rec_done = json.loads((cli_out / DONE).read_text()), json.loads((rec_out / DONE).read_text())
    assert cli_done.keys() == rec_done.keys()
    assert {k: v for k, v in cli_done.items() if k not in ("final", "account")} == \
           {k: v for k, v in rec_done.items() if k not in ("final", "account")}
    assert cli_done["steps"]["minhash"] < cli_done["steps"]["filters"]   # the near-duplicates went
    capsys.readouterr()
    assert main(["data", str(tmp_path / "data.yaml"), "--out", str(cli_out), "--quiet"]) == 0
    assert "[data] already done" in capsys.readouterr().out        # nothing changed: reported skipped


def test_a_stage_command_refuses_a_locked_out_dir_and_names_the_lock(tmp_path, capsys):
    raw = stdlib_docs(tmp_path / "raw", n=10)
    (tmp_path / "data.yaml").write_text(json.dumps(data_config(tmp_path, raw)))
    out = tmp_path / "out"
    holder = RunLock(out)
    holder.acquire()                                  # another live process holds it (this one)
    try:
        code = main(["data", str(tmp_path / "data.yaml"), "--out", str(out), "--quiet"])
    finally:
        holder.release()
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("lmforge data: locked: ") and "config error" not in err
    assert f"{out} is in use by another lmforge run (pid {os.getpid()}" in err and "\n" not in err
    assert not (out / DONE).exists()


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    raw = stdlib_docs(tmp_path / "raw", n=10)
    (tmp_path / "data.yaml").write_text(json.dumps(data_config(tmp_path, raw)))
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0}))
    assert main(["data", str(tmp_path / "data.yaml"), "--out", str(out), "--quiet"]) == 0
    assert "taking over a stale lock" in capsys.readouterr().err
    assert (out / DONE).is_file() and not (out / ".lock").exists()


def test_contract_skips_a_finished_stage_and_checks_inputs_first(tmp_path):
    calls = []

    class Cfg:
        out_dir = str(tmp_path / "o")
        data = [str(tmp_path / "in.jsonl")]

    stage = Stage(kind="t", config=Cfg, body=lambda cfg, progress: calls.append(1) or {"n": 1}, help="t",
                  example="n=1", inputs=("data",))
    with pytest.raises(ConfigError, match=f"^data: {tmp_path / 'in.jsonl'}: no such file or folder$"):
        stage.run(Cfg())
    assert calls == []                                                     # before any work
    (tmp_path / "in.jsonl").write_text("{}\n")
    assert stage.run(Cfg()) == {"n": 1} and json.loads((tmp_path / "o" / DONE).read_text()) == {"n": 1}
    assert stage.run(Cfg()) == {"n": 1, "skipped": True} and calls == [1]
    with RunLock(tmp_path / "o"), pytest.raises(LockError):
        (tmp_path / "o" / DONE).unlink()
        stage.run(Cfg())


def test_missing_sft_data_is_one_line_before_any_model_loading(tmp_path, capsys):
    code = main(["sft", "--set", "data=nope.jsonl", "--set", f"init.from_checkpoint={tmp_path / 'no-run'}",
                 "--set", f"out_dir={tmp_path / 'sft'}"])       # a single path where a list is expected
    out = capsys.readouterr()
    assert code == 2 and out.err.strip() == "lmforge sft: config error: data: nope.jsonl: no such file or folder"
    assert out.out == ""                                            # no progress bar, no summary


def test_a_set_typo_is_blamed_on_set():
    with pytest.raises(ConfigError, match=r"^--set trian\.lr=1: trian: unknown key"):
        from lmforge.cli.common import load_config
        from lmforge.stages.sft import SFTConfig

        class Args:
            config, overrides = None, ["trian.lr=1"]
        load_config(SFTConfig, Args())


def test_a_recipe_set_typo_names_the_stage_and_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "r", "out_dir": str(tmp_path / "run"),
                                  "stages": [{"name": "corpus", "config": {"from_sample": True}},
                                             {"name": "clean", "kind": "data",
                                              "config": {"input": ["${corpus}/docs"]}}]}))
    with pytest.raises(ConfigError) as e:
        load_recipe(recipe, ["stages.clean.config.minhash.treshold=0.5"])
    assert str(e.value).startswith("--set stages.clean.config.minhash.treshold=0.5: stage clean: minhash.treshold: "
                                   "unknown key")
    with pytest.raises(ConfigError, match=r"r\.yaml: stages\[1\]\.config\.minhash\.treshold: unknown key"):
        recipe.write_text(recipe.read_text().replace('"input"', '"minhash": {"treshold": 1}, "input"'))
        load_recipe(recipe)


def test_a_set_typo_with_a_config_file_is_blamed_on_set_not_the_file(tmp_path):
    from lmforge.cli.common import load_config
    from lmforge.stages.sft import SFTConfig
    (tmp_path / "sft.yaml").write_text("data: [a.jsonl]\ninit: {from_checkpoint: runs/x}\n")

    class Args:
        config, overrides = str(tmp_path / "sft.yaml"), ["train.optim.lr=fast"]
    with pytest.raises(ConfigError, match=r"^--set train\.optim\.lr=fast: train\.optim\.lr: expected a number"):
        load_config(SFTConfig, Args())
    Args.overrides = []
    (tmp_path / "sft.yaml").write_text("data: [a.jsonl]\ninit: {from_checkpoint: runs/x}\ntrain: {optim: {lr: fast}}\n")
    with pytest.raises(ConfigError, match=r"sft\.yaml: train\.optim\.lr: expected a number"):
        load_config(SFTConfig, Args())


def test_a_rerun_sweeps_the_temp_files_a_killed_attempt_left(tmp_path):
    """kill -9 mid-write leaves `.NAME.tmp-PID` (io.atomic); the rerun writes under its own PID,
    so the stage contract removes a dead writer's temps (the whole-recipe soak found one left in
    corpus/) and leaves a live writer's alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o"
    (out / "sub").mkdir(parents=True)
    (out / f".quality_positives.jsonl.tmp-{dead.pid}").write_text("half")
    (out / "sub" / f".part.tmp-{dead.pid}").mkdir()
    (out / f".live.json.tmp-{os.getpid()}").write_text("being written")
    (out / "kept.jsonl.tmp").write_text("a data step's shard temp: overwritten by the rerun")

    class Cfg:
        out_dir = str(out)

    stage = Stage(kind="t", config=Cfg, body=lambda cfg, progress: {"n": 1}, help="t", example="n=1")
    assert stage.run(Cfg()) == {"n": 1}
    left = sorted(p.name for p in out.rglob("*"))
    assert left == sorted([".live.json.tmp-" + str(os.getpid()), DONE, "kept.jsonl.tmp", "sub"])
