"""Reliability limits (issue 33): alias bombs refused, truncated checkpoints are corrupt (not
unfinished saves), one oversized record costs bounded memory, zstd damage costs only the
damaged frames, compressed conversation files, strict JSON out, and every input-caused failure
an exit 2 or 5 naming the file (a fuzz over the cases the soak found)."""
import json
import time
from pathlib import Path

import pytest

from lmforge import config
from lmforge.cli import main
from lmforge.config import ConfigError
from test_reliability_runs import BASE, cli_args, cfg_for, curve, run_cli, train_records
from lmforge.stages.pretrain import run as pretrain


def run_quiet(capsys, argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ YAML


def bomb(depth: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_in_a_recipe_is_refused_at_once_in_one_line(tmp_path, capsys):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("name: bomb\n" + bomb(9) + "stages: []\n")
    t0 = time.process_time()
    code, _, err = run_quiet(capsys, ["run", str(recipe), "--check"])
    assert time.process_time() - t0 < 5          # today: minutes and gigabytes (not a speed claim: a hang)
    assert code == 2 and err.count("\n") == 1 and "bomb.yaml" in err and "aliases" in err


def test_alias_bomb_in_a_stage_config_and_in_set_is_refused(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(bomb(8))
    with pytest.raises(ConfigError, match="sft.yaml.*aliases"):
        config.read_yaml(cfg)
    # a few aliases are fine: the expanded tree is small
    small = tmp_path / "ok.yaml"
    small.write_text("base: &b {lr: 1.0e-3, steps: 10}\none: *b\ntwo: *b\n")
    assert config.read_yaml(small)["two"] == {"lr": 1.0e-3, "steps": 10}


def test_python_tag_in_set_and_non_utf8_config_are_config_errors(tmp_path, capsys):
    code, _, err = run_quiet(capsys, ["pretrain", "--set", "data=!!python/object/apply:os.system ['true']"])
    assert code == 2 and err.count("\n") == 1 and "--set" in err
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("system_prompt: caf\xe9\n".encode("latin-1"))
    code, _, err = run_quiet(capsys, ["pretrain", str(bad)])
    assert code == 2 and err.count("\n") == 1 and "latin1.yaml" in err and "UTF-8" in err


def test_integer_from_an_absurd_float_is_refused():
    with pytest.raises(ConfigError, match="steps"):
        config.load(__import__("lmforge.train.trainer", fromlist=["TrainConfig"]).TrainConfig, None,
                    ["steps=1.0e+30"])


# ------------------------------------------------------------------ truncated checkpoints


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_truncated_latest_checkpoint_falls_back_with_the_corrupt_warning(token_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, cli_args(token_data, out, "train.steps=6"))
    assert code == 0
    before = train_records(out)
    (out / "DONE.json").unlink()
    truncate(out / "checkpoints" / "step-6" / "optimizer.pt")
    code, stdout, err = run_cli(capsys, cli_args(token_data, out, "train.steps=6"))
    assert code == 0, err
    said = stdout + err
    assert "step-6/optimizer.pt" in said and "truncated" in said and "falling back" in said and "step-4" in said
    assert curve(train_records(out)) == curve(before)


def test_every_checkpoint_truncated_is_exit_5_not_a_silent_restart(token_data, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(cfg_for(token_data, out, "train.steps=4"), progress=False)
    (out / "DONE.json").unlink()
    for p in (out / "checkpoints").glob("step-*/optimizer.pt"):
        truncate(p)
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 5 and err.count("\n") == 1 and "optimizer.pt" in err and "truncated" in err
    assert (out / "checkpoints" / "step-2").is_dir()     # nothing deleted: the user decides


def test_init_from_a_run_with_truncated_checkpoints_warns_then_exit_5(token_data, tmp_path, capsys):
    src = tmp_path / "src"
    pretrain(cfg_for(token_data, src, "train.steps=4"), progress=False)
    truncate(src / "checkpoints" / "step-4" / "optimizer.pt")
    code, stdout, err = run_cli(capsys, cli_args(token_data, tmp_path / "a", "train.steps=2",
                                                 f"init.from_checkpoint={src}"))
    assert code == 0, err
    assert "step-4/optimizer.pt" in stdout + err and "step-2" in stdout + err
    truncate(src / "checkpoints" / "step-2" / "model.safetensors")
    code, _, err = run_cli(capsys, cli_args(token_data, tmp_path / "b", "train.steps=2",
                                            f"init.from_checkpoint={src}"))
    assert code == 5 and err.count("\n") == 1 and "truncated" in err and "step-2/model.safetensors" in err
