"""`lmforge run RECIPE.yaml`: a miniature end-to-end run of the stages, skip/resume after an
interrupt, and bad recipes refused before any work."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from lmforge.config import ConfigError
from lmforge.recipe import load_recipe, run_recipe
from lmforge.recipe import registry as stage_mod
from lmforge.stages.corpus import dialog_text
from lmforge.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
MODEL = {"vocab_size": 300, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 64}


def run_main(argv: list[str]) -> int:
    """`lmforge run ARGV` through the one entry point and error boundary."""
    return cli_main(["run", *argv])


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def mini_stages() -> list[dict]:
    """corpus -> data -> tokenizer -> encode -> pretrain (WSD with a decay-stage mix), tiny sizes."""
    return [
        {"name": "corpus", "config": {"from_sample": True, "max_mb": 0.2, "instruct_docs": True,
                                      "sources": ["pydocs", "poetry", "chatterbot"]}},
        {"name": "data", "config": {"input": ["${corpus}/docs"], "steps": ["extract", "filters", "minhash"],
                                    "workers": 1, "progress": False, "filters": {"min_units": 20}}},
        {"name": "tokenizer", "config": {"inputs": ["${data}/final"], "vocab_size": 300}},
        {"name": "tokens", "kind": "encode",
         "config": {"inputs": ["${data}/final", "${corpus}/instruct"], "tokenizer": "${tokenizer}",
                    "workers": 1, "val_docs_per_domain": 2}},
        {"name": "pretrain", "config": {
            "data": "${tokens}", "model": MODEL,
            "train": {"seq_len": 64, "micro_batch_size": 2, "ckpt_every": 5, "eval_batches": 1},
            "stages": [  # WSD: stable without instruction data, decay shifts the mix
                {"name": "stable", "steps": 6, "mixture": {"weights": {"prose": 1, "zh": 1, "code": 1}},
                 "schedule": {"kind": "constant", "warmup_steps": 2}},
                {"name": "decay", "steps": 4,
                 "mixture": {"weights": {"prose": 1, "zh": 1, "code": 0.5, "instruct": 0.2}},
                 "schedule": {"kind": "linear", "min_ratio": 0.01}}]}},
    ]


SMALL_TRAIN = {"seq_len": 64, "micro_batch_size": 2, "eval_batches": 1}
LATER_STAGES = [  # (kind, stage): every stage after pretraining, seconds-scale
    ("grow", {"name": "grow", "config": {"init": {"from_checkpoint": "${pretrain}"}, "data": "${tokens}",
                                         "add_layers": 1, "calib_tokens": 512, "seq_len": 64}}),
    ("pretrain", {"name": "grown", "kind": "pretrain", "config": {
        "data": "${tokens}", "init": {"from_checkpoint": "${grow}"}, "model": {**MODEL, "n_layers": 3},
        "train": {**SMALL_TRAIN, "steps": 3}}}),
    ("longctx", {"name": "longctx", "config": {
        "data": "${tokens}", "init": {"from_checkpoint": "${grown}"},
        "model": {"rope_theta": 320000.0, "max_seq_len": 256},
        "train": {"steps": 2, "seq_len": 256, "micro_batch_size": 1, "eval_batches": 1}}}),
    ("sft", {"name": "sft", "config": {
        "data": ["${corpus}/sft.jsonl"], "init": {"from_checkpoint": "${longctx}", "load_optimizer": True},
        "train": SMALL_TRAIN, "max_steps": 2, "neftune_alpha": 5.0, "mix": {"data": "${tokens}", "share": 0.4}}}),
    ("dpo", {"name": "dpo", "config": {
        "data": ["${corpus}/dpo.jsonl"], "init": {"from_checkpoint": "${sft}"}, "train": SMALL_TRAIN,
        "max_steps": 2, "reference": "model"}}),
    ("selfknow", {"name": "selfknow", "config": {
        "init": {"from_checkpoint": "${dpo}"}, "base": "${pretrain}", "train": SMALL_TRAIN, "samples_per_prompt": 1,
        "first_messages": {"count": 4, "max_new_tokens": 24, "batch_size": 8},
        "max_new_tokens": 4, "max_steps": 2}}),
    ("eval", {"name": "eval", "config": {
        "checkpoint": "${selfknow}", "perplexity": {"data": "${tokens}", "seq_len": 64, "max_docs_per_domain": 2},
        "mcq": {"corpus": "${corpus}", "shots": [0, 1], "max_items": 4},
        "contamination": {"benchmarks": [{"name": "poems", "test": "${corpus}/mcq_poems.jsonl"}],
                          "training_data": ["${data}/final"], "max_items": 10}}}),
    ("needle", {"name": "needle", "config": {"checkpoint": "${longctx}", "haystack": "${tokens}",
                                             "lengths": [200], "depths": [0.0, 100.0]}}),
    ("export", {"name": "export", "config": {"checkpoint": "${selfknow}"}}),
    ("report", {"name": "report", "config": {"run_dir": "${run}"}}),
]


def all_stages() -> list[dict]:
    """Every stage kind, in recipe order: a stage that breaks fails this test."""
    return mini_stages() + [st for _, st in LATER_STAGES]


def write_recipe(tmp_path: Path, stages: list[dict], name: str = "mini", **top) -> Path:
    path = tmp_path / f"{name}.yaml"
    data = {"name": name, "out_dir": str(tmp_path / "run"), "device": "cpu", "stages": stages, **top}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def statuses(run_dir: Path) -> dict[str, str]:
    data = json.loads((run_dir / "recipe.json").read_text())
    return {s["name"]: s["status"] for s in data["stages"]}


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The whole recipe run once, at seconds-scale sizes; (recipe path, run dir, log lines)."""
    tmp = tmp_path_factory.mktemp("full")
    path = write_recipe(tmp, all_stages())
    lines: list[str] = []
    run_recipe(load_recipe(path), progress=False, log=lines.append)
    return path, tmp / "run", lines


def test_end_to_end_all_stages(full_run):
    path, run, lines = full_run
    names = [s["name"] for s in all_stages()]
    assert statuses(run) == {n: "done" for n in names}
    ledger = json.loads((run / "recipe.json").read_text())
    assert [s["out_dir"] for s in ledger["stages"]] == [str(run / n) for n in names]
    assert all(s["seconds"] is not None and s["cpu_seconds"] is not None for s in ledger["stages"])
    assert f"== [{len(names)}/{len(names)}] {names[-1]}" in "\n".join(lines)
    # references resolved: the encode stage read the data stage's final shards + instruct docs
    assert "instruct" in (run / "tokens" / "meta.json").read_text()
    assert json.loads((run / "pretrain" / "DONE.json").read_text())["step"] == 10
    # the report shows every kind of stage output, the SFT mixture included
    html = (run / "report" / "report.html").read_text()
    for section in ("Data funnel", "Data mixture", "Evaluation", "Depth up-scaling", "needle"):
        assert section in html, section
    mix = json.loads((run / "pretrain" / "mixture.json").read_text())
    assert "instruct" in json.dumps(mix)  # the decay stage added instruction data
    for n in names:
        if n not in ("data",):
            assert (run / n / "DONE.json").is_file() or n in ("tokenizer", "tokens"), n
    if "export" in names:
        assert (run / "export" / "config.json").is_file()
    if "eval" in names:
        assert (run / "eval" / "eval.json").is_file()
    if "needle" in names:
        assert (run / "needle" / "needle.json").is_file()
    if "report" in names:
        assert (run / "report" / "report.md").is_file()


def test_rerun_skips_every_finished_stage(full_run):
    path, run, _ = full_run
    metrics = (run / "pretrain" / "metrics.jsonl").read_text()
    lines: list[str] = []
    run_recipe(load_recipe(path), progress=False, log=lines.append)
    # every stage, the report too: its inputs are unchanged (issue 34: a rerun redrew it)
    assert sum("already done, skipped" in ln for ln in lines) == len(all_stages())
    assert (run / "pretrain" / "metrics.jsonl").read_text() == metrics
    assert set(statuses(run).values()) == {"done"}


def test_torchrun_two_processes(full_run, tmp_path):
    """Under torchrun the data stages run on rank 0 only and pretraining on both ranks, with the
    losses of the one-process run (same global batches)."""
    import os
    import subprocess
    import sys
    path = write_recipe(tmp_path, mini_stages())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lmforge", "run", str(path), "--quiet"]
    p = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    assert set(statuses(run).values()) == {"done"}
    # --quiet: one closing line, from rank 0 (which runs the data stages and keeps recipe.json)
    assert p.stdout.count("mini: 5/5 stage(s) done") == 1 and len(p.stdout.splitlines()) == 1, p.stdout

    def losses(d):
        return [json.loads(x)["loss"] for x in (d / "pretrain" / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in x]
    assert losses(run) == pytest.approx(losses(full_run[1]), rel=1e-4)


def test_interrupted_stage_resumes_and_finished_ones_skip(tmp_path, capsys, monkeypatch):
    path = write_recipe(tmp_path, mini_stages())
    run = tmp_path / "run"
    # first only the data stages (as if the run had been stopped after them)
    run_recipe(load_recipe(path), until="tokens", progress=False)
    assert statuses(run) == {"corpus": "done", "data": "done", "tokenizer": "done", "tokens": "done",
                             "pretrain": "pending"}
    capsys.readouterr()

    # then a full run killed right after pretraining's step-5 checkpoint
    from lmforge.train.trainer import Trainer
    real_save = Trainer.save_checkpoint

    def save_then_interrupt(self):
        path_ = real_save(self)
        if self.step == 5:
            raise KeyboardInterrupt
        return path_

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(path), progress=False)
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    assert statuses(run)["pretrain"] == "failed"
    assert "KeyboardInterrupt" in json.loads((run / "recipe.json").read_text())["stages"][4]["error"]
    assert not (run / "pretrain" / "DONE.json").exists()
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 4

    # the rerun skips the four finished stages and resumes pretraining at step 5
    run_recipe(load_recipe(path), progress=False)
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 4 and "resuming from" in out and "step 5" in out
    steps = [json.loads(line)["step"] for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert steps[:5] == [1, 2, 3, 4, 5] and steps[-1] == 10 and 6 in steps
    assert set(statuses(run).values()) == {"done"}

    # a stage whose DONE.json is gone (deleted mid-way) resumes from its own checkpoints
    (run / "pretrain" / "DONE.json").unlink()
    run_recipe(load_recipe(path), only=["pretrain"], progress=False)
    out = capsys.readouterr().out
    assert "resuming from" in out and "step 10" in out
    assert (run / "pretrain" / "DONE.json").exists()


def test_only_and_from_select_stages(tmp_path, capsys):
    path = write_recipe(tmp_path, mini_stages()[:2])
    run_recipe(load_recipe(path), only=["corpus"], progress=False)
    assert statuses(tmp_path / "run") == {"corpus": "done", "data": "pending"}
    run_recipe(load_recipe(path), start="data", progress=False)
    out = capsys.readouterr().out
    assert "[1/2] corpus" in out and out.count("[1/2] corpus") == 1  # the --from run did not touch it
    assert statuses(tmp_path / "run") == {"corpus": "done", "data": "done"}
    assert (tmp_path / "run" / "data" / "final").is_dir()


# ---------------------------------------------------------------- bad recipes fail up front


def bad(tmp_path, stages, match, overrides=None, **top):
    path = write_recipe(tmp_path, stages, **top)
    with pytest.raises(ConfigError, match=match) as e:
        load_recipe(path, overrides)
    assert str(path) in str(e.value) or "--set" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written
    return str(e.value)


def test_unknown_kind(tmp_path):
    bad(tmp_path, [{"name": "x", "kind": "pretrian", "config": {}}], r"stages\[0\] \(x\): unknown kind 'pretrian'")


def test_unknown_config_key_names_the_stage_and_key(tmp_path):
    stages = mini_stages()
    stages[4]["config"]["train"]["learning_rate"] = 1e-3
    msg = bad(tmp_path, stages, r"stages\[4\]\.config\.train\.learning_rate: unknown key")
    assert "known keys" in msg


def test_bad_value_fails_before_work(tmp_path):
    stages = mini_stages()
    stages[2]["config"]["vocab_size"] = 10
    bad(tmp_path, stages, r"stages\[2\]\.config\.vocab_size: 10 is below")


def test_bad_reference(tmp_path):
    stages = mini_stages()
    stages[3]["config"]["tokenizer"] = "${tokeniser}"
    bad(tmp_path, stages, r"stages\[3\]\.config\.tokenizer: \$\{tokeniser\} names no earlier stage")
    stages = mini_stages()  # a reference to a LATER stage is as wrong as a typo
    stages[1]["config"]["input"] = ["${tokens}"]
    bad(tmp_path, stages, r"stages\[1\]\.config\.input\[0\]: \$\{tokens\}")


def test_missing_module_named_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_mod, "STAGES", [*stage_mod.STAGES, "future"])
    stages = mini_stages() + [{"name": "later", "kind": "future", "config": {}}]
    bad(tmp_path, stages, r"stages\[5\] \(later\): kind 'future' needs module lmforge.stages.future")


def test_duplicate_names_and_top_level_keys(tmp_path):
    bad(tmp_path, mini_stages()[:1] * 2, r"stages\[1\]\.name: stage 'corpus' appears twice")
    bad(tmp_path, mini_stages()[:1], r"devcie: unknown key", devcie="cpu")
    bad(tmp_path, [{"name": "corpus", "confg": {}}], r"stages\[0\]\.confg: unknown key")


def test_overrides_reach_stage_configs(tmp_path):
    path = write_recipe(tmp_path, mini_stages())
    r = load_recipe(path, ["stages.pretrain.config.train.micro_batch_size=4", "device=cpu",
                           "stages.tokens.config.out_dir=" + str(tmp_path / "elsewhere")])
    pre = r.stages[r.index("pretrain")].config
    assert pre.train.micro_batch_size == 4 and pre.train.device == "cpu"
    assert pre.data == str(tmp_path / "elsewhere")  # the reference follows the moved out_dir
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        load_recipe(path, ["stages.nope.config.x=1"])


def test_cli_run_and_check(tmp_path, capsys):
    from lmforge.cli.recipe import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    path = write_recipe(tmp_path, mini_stages())
    args = parser.parse_args(["run", str(path), "--check", "--only", "corpus,data,tokenizer"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "run  tokenizer" in out and "skip tokens" in out and "ok (5 stages" in out
    # a selected stage whose input is neither selected nor finished: refused as the run refuses it
    args = parser.parse_args(["run", str(path), "--check", "--only", "tokenizer,tokens"])
    assert args.func(args) == 2
    cap = capsys.readouterr()
    assert "stage tokenizer needs data, which has not finished" in cap.out + cap.err, cap
    bad_path = write_recipe(tmp_path, [{"name": "x", "kind": "nope"}], name="bad")
    assert run_main([str(bad_path)]) == 2
    assert "unknown kind 'nope'" in capsys.readouterr().err


def test_shipped_recipes_parse():
    """recipes/*.yaml are valid as far as the stage modules in this tree go."""
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        kinds = [s.get("kind", s["name"]) for s in data["stages"]]
        present = all(has(stage_mod.module_of(k)) for k in kinds)
        if present:
            load_recipe(path)
        else:
            with pytest.raises(ConfigError, match="not in this tree yet|does not provide"):
                load_recipe(path)


def test_instruct_docs_are_plain_text():
    text = dialog_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert text == "User: hi\nAssistant: hello" and "<|im_" not in text
