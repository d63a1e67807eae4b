"""Recipes as a checked graph: cross-stage --check (each planted violation refused in one line
before any work), --target and branch reuse, --smoke shrinking by common factors, the run-folder
lock and stage-order errors."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.config import ConfigError
from lmforge.recipe import load_recipe, run_recipe
from lmforge.recipe.check import check_recipe
from lmforge.stagekit.lock import RunLock
from lmforge.cli import main as cli_main

sys.path.insert(0, str(Path(__file__).parent))
from test_recipe import LATER_STAGES, MODEL, REPO, mini_stages, write_recipe  # noqa: E402


def run_main(argv: list[str]) -> int:
    """`lmforge run ARGV` through the one entry point and error boundary."""
    return cli_main(["run", *argv])


def later(name: str) -> dict:
    return copy.deepcopy(next(st for _, st in LATER_STAGES if st["name"] == name))


def graph_stages() -> list[dict]:
    """corpus .. pretrain, longctx from pretrain, sft from longctx, needle on longctx."""
    longctx = later("longctx")
    longctx["config"]["init"]["from_checkpoint"] = "${pretrain}"
    needle = later("needle")
    return mini_stages() + [longctx, later("sft"), needle]


def problems_of(tmp_path, stages, **top) -> list[str]:
    path = write_recipe(tmp_path, stages, **top)
    problems = check_recipe(load_recipe(path))
    assert all("\n" not in p and p.startswith(str(path)) for p in problems)
    return problems


def only_problem(tmp_path, stages, pattern: str) -> str:
    import re
    problems = problems_of(tmp_path, stages)
    assert len(problems) == 1 and re.search(pattern, problems[0]), problems
    return problems[0]


def test_the_mini_graph_fits(tmp_path):
    assert problems_of(tmp_path, graph_stages()) == []


def test_needle_length_at_the_model_maximum_is_refused(tmp_path):
    stages = graph_stages()
    stages[-1]["config"]["lengths"] = [128, 256]        # longctx max_seq_len is 256: no room for the answer
    only_problem(tmp_path, stages, r"stages\.needle\.config\.lengths: 256 \(\+ up to \d+ answer tokens\) exceeds "
                                   r"max_seq_len 256")
    stages[-1]["config"]["rope"] = "dynamic"              # extending without training: allowed past the window
    assert problems_of(tmp_path, stages) == []


def test_training_length_against_the_model_it_loads(tmp_path):
    stages = graph_stages()
    stages[6]["config"]["train"] = {**stages[6]["config"]["train"], "seq_len": 512}   # sft after a 256 model
    only_problem(tmp_path, stages, r"stages\.sft\.config\.train\.seq_len: 512 exceeds max_seq_len 256")


def test_model_vocabulary_against_the_tokenizer(tmp_path):
    stages = mini_stages()
    stages[2]["config"]["vocab_size"] = 400
    only_problem(tmp_path, stages, r"stages\.pretrain\.config\.model\.vocab_size: 300 is smaller than the "
                                   r"tokenizer's vocabulary 400")


def test_mixture_domain_missing_from_the_token_data(tmp_path):
    stages = mini_stages()
    stages[4]["config"]["stages"][1]["mixture"]["weights"]["wiki"] = 0.1
    only_problem(tmp_path, stages, r"stages\.pretrain\.config\.stages\[1\]\.mixture: domain 'wiki' is not in")
    stages = mini_stages()
    stages[3]["config"]["inputs"] = ["${data}/final"]    # instruct documents no longer encoded
    only_problem(tmp_path, stages, r"domain 'instruct' is not in the token data")


def test_declared_model_differs_from_the_source_checkpoint(tmp_path):
    grown = later("grown")
    grown["config"]["init"]["from_checkpoint"] = "${pretrain}"   # a 2-layer source, not the grown 3
    only_problem(tmp_path, mini_stages() + [grown], r"stages\.grown\.config\.model: differs from the source "
                                                    r"checkpoint's architecture .* in n_layers")
    assert problems_of(tmp_path, mini_stages() + [later("grow"), later("grown")]) == []


def test_grow_block_and_rope_base_checked_against_the_source(tmp_path):
    grow = later("grow")
    grow["config"] = {"init": {"from_checkpoint": "${pretrain}"}, "block": [1, 4]}
    only_problem(tmp_path, mini_stages() + [grow], r"stages\.grow\.config\.block: \[1, 4\] is outside the 2 layers")
    longctx = later("longctx")
    longctx["config"]["init"]["from_checkpoint"] = "${pretrain}"
    longctx["config"]["model"] = {"rope_theta": 10.0, "max_seq_len": 256}
    only_problem(tmp_path, mini_stages() + [longctx], r"stages\.longctx\.config\.model\.rope_theta: 10 is too small")


def test_validation_budget_the_data_cannot_fill(tmp_path):
    stages = mini_stages()
    stages[3]["config"]["val_docs_per_domain"] = 50
    assert problems_of(tmp_path, stages) == []           # unknown until the corpus has run
    corpus = tmp_path / "run" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "DONE.json").write_text(json.dumps({"domain_docs": {"instruct": 400, "prose": 30}}))
    msg = only_problem(tmp_path, stages, r"stages\.tokens\.config\.val_docs_per_domain: 50 validation documents "
                                         r"asked for domain 'prose', which has only 30")
    assert "none would be left" in msg


def test_run_refuses_a_bad_graph_before_any_work(tmp_path, capsys):
    stages = graph_stages()
    stages[-1]["config"]["lengths"] = [256]
    path = write_recipe(tmp_path, stages)
    assert run_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "stages.needle.config.lengths" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
    assert run_main([str(path), "--check"]) == 2
    assert "1 problem(s); nothing was run" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_shipped_recipes_pass_check_full_and_smoke(recipe, tmp_path):
    for smoke in (False, True):   # in an empty run folder: what an earlier local run left must not count
        r = load_recipe(REPO / "recipes" / recipe, [f"out_dir={tmp_path / 'run'}"], smoke=smoke)
        assert check_recipe(r) == [], (recipe, smoke)


# ---------------------------------------------------------------- graph, target, reuse


def branch_stages() -> list[dict]:
    """Two continued-pretraining branches from one pretraining checkpoint (Index's pure/boost)."""
    def branch(name, weights):
        return {"name": name, "kind": "pretrain", "config": {
            "data": "${tokens}", "init": {"from_checkpoint": "${pretrain}", "load_optimizer": True},
            "mixture": {"weights": weights},
            "train": {"steps": 2, "seq_len": 64, "micro_batch_size": 2, "eval_batches": 1,
                      "schedule": {"kind": "linear", "min_ratio": 0.01}}}}
    return mini_stages() + [branch("pure", {"prose": 1}),
                            branch("boost", {"zh": 1, "instruct": 0.5})]


def test_deps_come_from_references(tmp_path):
    r = load_recipe(write_recipe(tmp_path, branch_stages()))
    assert r.stage("pure").deps == ["tokens", "pretrain"] and r.stage("boost").deps == ["tokens", "pretrain"]
    assert r.needs("boost") == ["corpus", "data", "tokenizer", "tokens", "pretrain", "boost"]
    assert "pure" not in r.needs("boost")


def test_target_runs_what_it_needs_and_branches_reuse_it(tmp_path):
    path = write_recipe(tmp_path, branch_stages())
    lines: list[str] = []
    run_recipe(load_recipe(path), target="pure", progress=False, log=lines.append)
    ran = [ln.split()[1].rstrip(":") for ln in lines if ln.startswith("-- ") and "done in" in ln]
    assert ran == ["corpus", "data", "tokenizer", "tokens", "pretrain", "pure"]
    assert not (tmp_path / "run" / "boost").exists()
    lines.clear()
    run_recipe(load_recipe(path), target="boost", progress=False, log=lines.append)
    done = [ln.split()[1].rstrip(":") for ln in lines if ln.startswith("-- ")]
    skipped = [ln.split()[1].rstrip(":") for ln in lines if "already done, skipped" in ln]
    assert done[-1] == "boost" and set(skipped) == {"corpus", "data", "tokenizer", "tokens", "pretrain"}
    pure = json.loads((tmp_path / "run" / "pure" / "DONE.json").read_text())
    boost = json.loads((tmp_path / "run" / "boost" / "DONE.json").read_text())
    assert pure["final_loss"] != boost["final_loss"]     # two different mixtures from one checkpoint


def test_stage_order_error_names_what_to_run_first(tmp_path, capsys):
    path = write_recipe(tmp_path, branch_stages())
    with pytest.raises(ConfigError, match=r"stage pure needs tokens, which has not finished .*\(--target pure runs"):
        run_recipe(load_recipe(path), only=["pure"], progress=False, log=lambda *a: None)
    assert not (tmp_path / "run" / "pure").exists()
    # --check says the same before anything runs (it listed the stage as `run` and said ok)
    assert run_main([str(path), "--only", "pure", "--check"]) == 2
    err = capsys.readouterr().err
    assert "stage pure needs tokens, which has not finished" in err and "1 problem(s); nothing was run" in err
    assert run_main([str(path), "--target", "pure", "--check"]) == 0
    assert not (tmp_path / "run" / "pure").exists()


# ---------------------------------------------------------------- smoke


def test_smoke_shrinks_by_common_factors_and_keeps_every_ratio():
    full = load_recipe(REPO / "recipes" / "index-1.9b.yaml")
    smoke = load_recipe(REPO / "recipes" / "index-1.9b.yaml", smoke=True)
    assert smoke.run_dir == full.run_dir + "-smoke" and smoke.smoke["length"] == 128 / 4096
    assert [s.name for s in smoke.stages] == [s.name for s in full.stages]        # every stage and branch
    f, s = full.stage, smoke.stage
    L = smoke.smoke["length"]
    assert s("stable").config.train.seq_len == 128 and s("longctx").config.train.seq_len == 32768 * L
    assert s("longctx").config.train.seq_len // s("stable").config.train.seq_len == 8     # the 8x context kept
    assert all(n <= s("long_sft").config.train.seq_len for n in s("needle").config.lengths)
    # mixtures, LR, beta, mix share: unchanged
    assert s("decay_boost").config.mixture == f("decay_boost").config.mixture
    assert s("stable").config.stages[0].mixture == f("stable").config.stages[0].mixture
    assert s("dpo").config.beta == 1.0 and s("sft").config.mix.share == 0.4
    assert s("longctx").config.train.optim.lr == f("longctx").config.train.optim.lr
    # the decay share of the steps stays ~14%
    stable, decay = s("stable").config.stages[0].steps, s("decay_boost").config.train.steps
    assert abs(decay / (stable + decay) - 3500 / 25000) < 0.03
    # width/depth/vocab shrink, the shape flags stay
    m = s("stable").config.model
    assert (m.d_model, m.vocab_size, m.norm_head, m.tie_embeddings) == (64, 1024, True, False)
    assert m.n_layers == round(36 * smoke.smoke["depth"])


def test_smoke_keeps_grow_block_and_batch_growth_shape():
    s = load_recipe(REPO / "recipes" / "yi-9b-growth.yaml", smoke=True).stage
    grow = s("grow").config                              # 32 -> 48 as 8 -> 12, the block chosen by similarity
    assert s("base").config.model.n_layers == 8 and grow.block is None and grow.add_layers == 4 and grow.data
    bg = s("phase1").config.train.batch_growth
    assert (bg.plateau_patience, bg.factor) == (3, 2)
    assert bg.carry and s("phase2").config.train.batch_growth.carry     # phase 2 keeps phase 1's grown batch
    assert s("sft").config.neftune_alpha == 5.0 and s("sft").config.train.optim.betas == [0.9, 0.999]


# ---------------------------------------------------------------- one writer per run folder


def test_second_run_on_the_same_folder_is_refused(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(ConfigError, match=rf"{tmp_path} is in use by another lmforge run \(pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire()                           # free again


def test_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                "since": 0}))
    notes: list[str] = []
    lock = RunLock(tmp_path, notes.append)
    lock.acquire()
    assert lock.held and "stale lock" in notes[0]
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()
