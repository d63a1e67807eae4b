"""The findings suite: the verdict rule, the plan guard, and one finding run end to end on
a toy token set (a few steps per arm: the machinery, not the claim)."""
import json

import pytest

from lmforge import config
from lmforge.config import ConfigError
from lmforge.findings import catalog
from lmforge.findings.stage import FindingsConfig, run
from lmforge.findings.verdict import compare, rule

TOY = ["steps=4", "workers=1"]   # one process: the tests' monkeypatched scale holds (a spawned worker would not see it)


@pytest.mark.parametrize("expect,diff,se,hib,want", [
    ("better", -0.10, 0.02, False, "agrees"),        # lower loss, beyond 2 SE
    ("better", -0.03, 0.02, False, "inconclusive"),  # inside 2 SE
    ("better", 0.10, 0.02, False, "disagrees"),      # higher loss, beyond 2 SE
    ("better", 0.10, 0.02, True, "agrees"),          # higher accuracy
    ("worse", 0.10, 0.02, False, "agrees"),
    ("equal", 0.01, 0.004, False, "agrees"),         # 0.01 + 0.008 <= 0.02
    ("equal", 0.01, 0.008, False, "inconclusive"),   # 0.01 + 0.016 > 0.02 but 0.01 - 0.016 < 0.02
    ("equal", 0.10, 0.01, False, "disagrees"),       # 0.10 - 0.02 > 0.02
])
def test_rule(expect, diff, se, hib, want):
    assert rule(expect, diff, se, hib, tolerance=0.02) == want


def test_compare_is_paired_by_seed():
    base = {0: 5.0, 1: 6.0, 2: 7.0}            # large spread between seeds ...
    var = {0: 4.9, 1: 5.91, 2: 6.89}           # ... a steady 0.1 gain within each seed
    c = compare(base, var, "better", higher_is_better=False)
    assert c["n"] == 3 and c["diff"] == pytest.approx(-0.1, abs=1e-9)
    assert c["stderr"] < 0.01 and c["verdict"] == "agrees"
    assert compare({0: 1.0}, {0: 0.5}, "better", False)["verdict"] == "too few seeds"


def test_catalog_declares_every_listed_finding():
    for name in catalog.available():
        f = catalog.get(name)
        assert f.name == name and f.claim and f.expect and f.baseline not in f.expect
    from lmforge.findings.stage import STAGE
    assert all(n in STAGE.args[0].help for n in catalog.NAMES)     # the command's help lists them all
    with pytest.raises(ConfigError, match="unknown finding"):
        config.load(FindingsConfig, None, ["name=nope"])


def test_zloss_end_to_end_and_resume(token_data, tmp_path, monkeypatch):
    out = tmp_path / "zl"
    cfg = config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                             "seeds=[0,1]", *TOY])
    monkeypatch.setitem(__import__("lmforge.findings.context", fromlist=["SCALES"]).SCALES, "toy",
                        _tiny_scale())
    summary = run(cfg, progress=False)
    assert summary["finding"] == "zloss" and set(summary["verdicts"]) == {"z-loss"}
    result = json.loads((out / "result.json").read_text())
    assert result["arms"]["off"]["val_loss"]["n"] == 2 and (out / "finding.png").stat().st_size > 5000
    assert result["claim"].startswith("z-loss") and result["expect"] == {"z-loss": "equal"}
    assert not list(out.glob("work/*/*/checkpoints/step-*"))     # weights dropped once recorded
    # a rerun skips; a changed plan after results is refused without a reason, kept with one
    assert run(cfg, progress=False)["skipped"]
    (out / "DONE.json").unlink()
    changed = config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                                 "seeds=[0,1,2]", *TOY])
    with pytest.raises(ConfigError, match="plan changed"):
        run(changed, progress=False)
    amended = config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                                 "seeds=[0,1,2]", "amend=a third seed", *TOY])
    summary = run(amended, progress=False)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["amendments"][0]["reason"] == "a third seed" and plan["amendments"][0]["changed"] == ["seeds"]
    assert json.loads((out / "result.json").read_text())["arms"]["off"]["val_loss"]["n"] == 3


def _tiny_scale():
    from lmforge.findings.context import Scale
    return Scale("toy", dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2), seq_len=32, micro_batch_size=2,
                 steps=4, lr=3e-3, device="cpu", eval_batches=2)


def test_schedules_branch_resumes_the_wsd_stream(token_data, tmp_path, monkeypatch):
    """The wsd-branch arm continues the wsd arm's own run at 60% (same documents, same optimizer
    state) under a decaying schedule: up to the branch point its LRs are the wsd run's."""
    from lmforge.findings import context
    monkeypatch.setitem(context.SCALES, "toy", _tiny_scale())
    out = tmp_path / "sched"
    cfg = config.load(FindingsConfig, None, ["name=schedules", f"data={token_data}", f"out_dir={out}",
                                             "seeds=[0,1]", "steps=10", "workers=1"])
    summary = run(cfg, progress=False)
    assert set(summary["verdicts"]) == {"linear", "wsd", "wsd-branch"}
    rows = lambda arm: [json.loads(l) for l in (out / "work" / arm / "seed0" / "metrics.jsonl").read_text().splitlines()]
    branch = [r for r in rows("wsd-branch") if "lr" in r]
    assert [r["step"] for r in branch] == list(range(7, 11))          # resumed after step 6
    wsd = {r["step"]: r for r in rows("wsd") if "lr" in r}
    assert branch[0]["lr"] == wsd[7]["lr"] and branch[1]["lr"] < wsd[8]["lr"] == wsd[6]["lr"]   # decays where wsd is stable
    assert not list(out.glob("work/*/*/checkpoints/step-*"))


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    """A small corpus from the committed sample (with the dialogs as instruct documents, the
    SFT/DPO/MCQ files), a 512-token BPE and its encoding by domain: what the findings that
    read documents, dialogs or questions need."""
    from lmforge.stages import corpus, encode, tokenizer
    root = tmp_path_factory.mktemp("toyset")
    c, t, d = root / "corpus", root / "tokenizer", root / "tokens"
    corpus.run(config.from_dict(corpus.CorpusConfig, {"out_dir": str(c), "from_sample": True, "instruct_docs": True,
                                                      "max_mb": 0.15, "max_mcq": 100}), progress=False)
    for f, n in (("sft.jsonl", 200), ("dpo.jsonl", 200)):      # a few dialogs keep SFT/DPO's data loading short
        lines = (c / f).read_text(encoding="utf-8").splitlines(keepends=True)
        (c / f).write_text("".join(lines[:n]), encoding="utf-8")
    inputs = [str(c / "docs"), str(c / "instruct")]
    tokenizer.run(config.from_dict(tokenizer.STAGE.config, {"inputs": inputs, "out_dir": str(t), "vocab_size": 512,
                                                            "model_max_length": 256}), progress=False)
    encode.run(config.from_dict(encode.EncodeConfig, {"inputs": inputs, "tokenizer": str(t), "out_dir": str(d),
                                                      "workers": 1, "val_docs_per_domain": 4}), progress=False)
    return {"corpus": c, "tokenizer": t, "data": d}


@pytest.mark.parametrize("name,key,arms", [
    ("decaydata", "mcq_poems", {"pure", "curated", "instruct"}),
    ("stemramp", "jump", {"step", "ramp"}),
    ("dedup", "heldout_loss", {"raw", "dedup", "filtered"}),
    ("alignment", "reply_loss", {"start", "sft", "sft+dpo"}),
])
def test_staged_findings_end_to_end(name, key, arms, toy_set, tmp_path, monkeypatch):
    """Each finding built from several stages runs every arm x 2 seeds at the tiny scale and
    records the primary metric per arm and a verdict per variant (the machinery, not the claim)."""
    monkeypatch.setitem(__import__("lmforge.findings.context", fromlist=["SCALES"]).SCALES, "toy", _tiny_scale())
    if name == "decaydata":
        monkeypatch.setattr("lmforge.findings.catalog.decaydata.MCQ_ITEMS", 8)
    if name == "dedup":       # no worker processes to start for a 0.6 MB corpus
        monkeypatch.setattr("lmforge.findings.catalog.dedup.WORKERS", 1)
    out = tmp_path / name
    sets = [f"{k}={v}" for k, v in toy_set.items()]
    cfg = config.load(FindingsConfig, None, [f"name={name}", f"out_dir={out}", "seeds=[0,1]", *sets, *TOY])
    summary = run(cfg, progress=False)
    result = json.loads((out / "result.json").read_text())
    assert set(result["arms"]) == arms and summary["verdict"] in ("agrees", "disagrees", "mixed", "inconclusive")
    for arm in arms:
        stats = result["arms"][arm][key]
        assert stats["n"] == 2 and all(v == v for v in stats["values"])       # a number, not NaN
    assert set(result["comparisons"]) == arms - {result["baseline"]}
    assert all(c["verdict"] in ("agrees", "disagrees", "inconclusive") for c in result["comparisons"].values())
    assert not list(out.glob("work/**/checkpoints/step-*"))     # shared phases' weights dropped too


def test_variants_compared_with_their_own_reference_on_their_own_key():
    """A finding of several experiments (longfails): each variant is compared with the arm and
    on the metric its declaration names, the other arms run too, and the plan records both."""
    from lmforge.findings.run import summarise
    from lmforge.findings.spec import Finding
    f = Finding(name="t", source="s", claim="c", metric="m", key="a", higher_is_better=False, baseline="base",
                expect={"v1": "equal", "v2": "better"}, against={"v2": "ref"}, keys={"v2": "b"}, run=None,
                tolerance=0.5)
    assert f.arms == ("base", "ref", "v1", "v2") and f.metric_keys() == ("a", "b")
    rec = lambda a, b: {"metrics": {"a": a, "b": b}}
    results = {"base": {0: rec(1.0, 9.0), 1: rec(2.0, 9.0)}, "ref": {0: rec(5.0, 3.0), 1: rec(5.0, 4.0)},
               "v1": {0: rec(1.1, 0.0), 1: rec(2.1, 0.0)}, "v2": {0: rec(0.0, 2.0), 1: rec(0.0, 3.0)}}
    plan = f.plan([0, 1], "toy", 4)
    assert plan["against"] == {"v2": "ref"} and plan["keys"] == {"v2": "b"}
    result = summarise(f, plan, results)
    c = result["comparisons"]
    assert c["v1"]["against"] == "base" and c["v1"]["key"] == "a" and c["v1"]["diff"] == pytest.approx(0.1)
    assert c["v2"]["against"] == "ref" and c["v2"]["key"] == "b" and c["v2"]["diff"] == pytest.approx(-1.0)
    from types import SimpleNamespace
    from lmforge.report.findingsection import summary_rows
    assert [r[1] for r in summary_rows([SimpleNamespace(finding=result)])] == ["v1 vs base", "v2 vs ref (b)"]
    assert "against" not in catalog.get("zloss").plan([0], "toy", 4)     # single-baseline plans unchanged
    with pytest.raises(ValueError, match="not a variant"):
        Finding(name="t", source="s", claim="c", metric="m", key="a", higher_is_better=False, baseline="base",
                expect={"v1": "equal"}, against={"ref": "base"}, run=None)


def test_long_instructions_from_the_token_set(toy_set, tmp_path):
    """longfails' SFT sets: long instructions over passages of the train split's documents (and,
    held out, of the val split's), each longer than the pretraining length and fitting the long
    one; the held-out short dialogs are the val split's instruct documents, parsed back, and
    left out of the general SFT sets."""
    from lmforge.align.chat_template import encode_chat
    from lmforge.findings.catalog import longinstruct
    from lmforge.findings.context import Ctx
    from lmforge.stages.corpus import dialog_text
    from lmforge.tokenizer.train import load_tokenizer
    cfg = config.load(FindingsConfig, None, ["name=longfails", f"data={toy_set['data']}",
                                             f"corpus={toy_set['corpus']}", f"out_dir={tmp_path}"])
    sizes = {"long_train": 6, "long_heldout": 4, "general_long": 10, "general_permille": 1000, "context": (0.45, 0.8)}
    files = longinstruct.build(Ctx(cfg, tmp_path), tmp_path / "sets", sizes, 512)
    rows = {k: [json.loads(l) for l in p.read_text().splitlines()] for k, p in files.items()}
    assert len(rows["long_train"]) == 6 and len(rows["long_heldout"]) == 4 and len(rows["general_long"]) == 10
    tok = load_tokenizer(toy_set["tokenizer"])
    val_text = "\n".join(t for _, t, _ in longinstruct.decoded(str(toy_set["data"]), "val", tok))
    for r in rows["long_train"] + rows["long_heldout"]:
        prompt, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert 230 <= len(encode_chat(tok, r["messages"])[0]) <= 512      # 0.45-1 x the long length, whole
        assert answer in prompt                                              # retrieval: the answer is there
    assert all(r["messages"][1]["content"] in val_text for r in rows["long_heldout"] if r["meta"]["task"] == "quote")
    train_dialogs = {t for d, t, _ in longinstruct.decoded(str(toy_set["data"]), "train", tok) if d == "instruct"}
    assert 1 <= len(rows["short_heldout"]) <= 4       # of val_docs_per_domain=4 instruct dialogs: those not
    assert not {dialog_text(r["messages"]) for r in rows["short_heldout"]} & train_dialogs   # pretrained on
    held = {dialog_text(r["messages"]) for r in rows["short_heldout"]}
    assert not held & {dialog_text(r["messages"]) for r in rows["general_permille"]}
    assert 196 <= len(rows["general_permille"]) <= 200      # sft.jsonl's 200 less the held-out ones among them
    m = [{"role": "user", "content": "a\nUser b"}, {"role": "assistant", "content": "x\n\ny"}]
    assert longinstruct.parse_dialog(dialog_text(m)) == m and longinstruct.parse_dialog("no dialog") is None


def test_longfails_end_to_end(toy_set, tmp_path, monkeypatch):
    """Finding 6's six arms x 2 seeds at the tiny scale (long length 16 x 32 = 512 for the long
    instructions to fit): context-length warmup vs straight on held-out long loss, long SFT
    packed vs not and 1 per mille long instructions vs none on held-out long-instruction reply
    loss; unpacked SFT takes more steps over the same conversations; weights dropped."""
    from lmforge.findings import context
    monkeypatch.setitem(context.SCALES, "toy", _tiny_scale())
    monkeypatch.setattr("lmforge.findings.catalog.longrun.MAX_SEQS", 2)
    monkeypatch.setattr("lmforge.findings.catalog.longrun.LONG", 16)
    monkeypatch.setattr("lmforge.findings.catalog.longfails.SETS", {"long_train": 6, "long_heldout": 4,
                        "general_long": 10, "general_permille": 1000, "context": (0.45, 0.8)})
    out = tmp_path / "lf"
    sets = [f"{k}={v}" for k, v in toy_set.items()]
    cfg = config.load(FindingsConfig, None, ["name=longfails", f"out_dir={out}", "seeds=[0,1]", *sets, *TOY])
    summary = run(cfg, progress=False)
    assert set(summary["verdicts"]) == {"seq-warmup", "sft-nopack", "sft-permille"}
    result = json.loads((out / "result.json").read_text())
    assert list(result["arms"]) == ["straight", "sft-pack", "sft-none", "seq-warmup", "sft-nopack", "sft-permille"]
    c = result["comparisons"]
    assert (c["seq-warmup"]["against"], c["seq-warmup"]["key"]) == ("straight", "long_loss")
    assert (c["sft-nopack"]["against"], c["sft-nopack"]["key"]) == ("sft-pack", "long_reply_loss")
    assert (c["sft-permille"]["against"], c["sft-permille"]["key"]) == ("sft-none", "long_reply_loss")
    for arm, stats in result["arms"].items():
        for k in ("long_loss", "long_reply_loss", "short_reply_loss", "loss_at_pretrain_len"):
            assert stats[k]["n"] == 2 and all(0 < v < 20 for v in stats[k]["values"]), (arm, k)
    notes = result["notes"]
    assert all(p < s for p, s in zip(notes["sft-pack"]["steps"], notes["sft-nopack"]["steps"]))
    assert notes["sft-pack"]["long_used"] == [6, 6] and notes["sft-none"]["long_used"] == [0, 0]
    assert notes["sft-permille"]["long_used"] == [1, 1]    # 1 per mille of 196 rounds up to one
    assert (out / "finding.png").stat().st_size > 5000
    assert not list(out.glob("work/**/checkpoints/step-*"))     # every arm's weights dropped once recorded


def test_seeds_in_worker_processes_give_the_numbers_of_one_process(token_data, tmp_path):
    """workers=2 runs the seeds in spawned processes, one torch thread each, as workers=1 does in
    this process: the recorded numbers are identical (toy scale, 3 steps per arm)."""
    got = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        run(config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                               "seeds=[0,1]", "steps=3", f"workers={w}"]), progress=False)
        got[w] = {p.relative_to(out).as_posix(): json.loads(p.read_text())["metrics"]
                  for p in sorted(out.glob("arms/*/seed*.json"))}
    assert len(got[1]) == 4 and got[1] == got[2]


# ropebase (6 arms, 3 of them long stages) is the costliest: in the nightly slow run; longfails
# (test_longfails_end_to_end) exercises the same long-stage helpers (catalog/longrun.py) in the default run
@pytest.mark.parametrize("name", [pytest.param("ropebase", marks=pytest.mark.slow), "growth"])
def test_stage_built_findings_end_to_end(name, token_data, tmp_path, monkeypatch):
    """Findings whose arms chain stages (a shared base model per seed, then longctx or grow and
    continued training): every arm x seed recorded with the primary metric, a verdict per
    variant, the shared base's weights dropped after the last arm."""
    out = tmp_path / name
    cfg = config.load(FindingsConfig, None, [f"name={name}", f"data={token_data}", f"out_dir={out}",
                                             "seeds=[0,1]", *TOY])
    monkeypatch.setitem(__import__("lmforge.findings.context", fromlist=["SCALES"]).SCALES, "toy",
                        _tiny_scale())
    monkeypatch.setattr("lmforge.findings.catalog.longrun.MAX_SEQS", 2)   # held-out sequences per length
    summary = run(cfg, progress=False)
    finding = catalog.get(name)
    assert set(summary["verdicts"]) == set(finding.expect)
    result = json.loads((out / "result.json").read_text())
    for arm in finding.arms:
        st = result["arms"][arm][finding.key]
        assert st["n"] == 2 and all(v == v and 0 < v < 20 for v in st["values"])   # finite losses
    assert all(c["verdict"] in ("agrees", "disagrees", "inconclusive") for c in result["comparisons"].values())
    assert (out / "finding.png").stat().st_size > 5000
    assert (out / "work" / "base" / "seed1" / "DONE.json").exists()
    assert not list(out.glob("work/**/checkpoints/step-*"))     # every arm's weights dropped once recorded
