"""Before/after effects of the stages (lmforge.eval.effect and the stages that write `effect`):
the paired noise estimate and verdict rule, and on tiny runs that the effect is measured on
held-out items and shows the change the stage trained for."""
import json
import math
import random

import numpy as np
import pytest

from lmforge import config
from lmforge.eval.effect import bootstrap_margin, paired_effect, verdict
from test_align_dpo import color_pairs
from test_align_utils import make_sft_file, make_source, write_jsonl


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def test_paired_effect_stderr_is_the_paired_one_and_the_verdict_follows_two_stderrs():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(5, 2, size=40)          # item difficulty: cancels in the paired change
    before = difficulty + rng.normal(0, 0.1, 40)
    after = difficulty - 0.3 + rng.normal(0, 0.1, 40)
    e = paired_effect("loss", before, after, higher_is_better=False)
    d = after - before
    assert e["n"] == 40 and math.isclose(e["delta"], d.mean())
    assert math.isclose(e["stderr"], d.std(ddof=1) / math.sqrt(40))
    assert e["stderr"] < 0.05 < 2 / math.sqrt(40)   # the unpaired error would be ~0.45
    assert e["verdict"] == "gain"
    assert paired_effect("loss", after, before, False)["verdict"] == "loss"
    assert paired_effect("acc", before, after, True)["verdict"] == "loss"
    noisy = paired_effect("loss", before, before + rng.normal(0, 1, 40), False)
    assert noisy["verdict"] == "within noise" and abs(noisy["delta"]) < 2 * noisy["stderr"]
    assert verdict(0.1, 0.0, 5, True) == "gain" and verdict(0.0, 0.0, 5, True) == "within noise"
    one = paired_effect("x", [1.0], [2.0], True)
    assert one["verdict"] == "too few items" and one["stderr"] is None and one["delta"] == 1.0
    with pytest.raises(ValueError):
        paired_effect("x", [1.0, 2.0], [1.0], True)


def test_target_logps_batches_equal_lengths_and_scores_each_item_as_if_alone():
    """Items of one length share forward passes (more than one batch here), items of other
    lengths and items without targets are handled apart: every sum equals the item scored alone."""
    import torch

    from lmforge.eval.effect import BATCH, target_logps
    from lmforge.model import Transformer
    from test_align_utils import tiny_model_cfg

    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(50)).eval()
    rng = np.random.default_rng(0)
    lengths = [12] * (BATCH + 3) + [7, 7, 20, 1]
    items = [(rng.integers(0, 50, n), rng.random(n) < 0.7) for n in lengths]
    items.append((rng.integers(0, 50, 9), np.zeros(9, bool)))      # no target: 0, 0
    sums, counts = target_logps(model, items)
    for (ids, mask), got, k in zip(items, sums, counts):
        want, n = 0.0, 0
        if len(ids) >= 2 and mask[1:].any():
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.as_tensor(ids[None, :-1], dtype=torch.long))[0].double(), -1)
            want = sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if mask[t])
            n = int(mask[1:].sum())
        assert k == n and got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_bootstrap_margin_flip_share():
    rng = np.random.default_rng(1)
    base = rng.normal(3, 1, 60)
    clear = bootstrap_margin(base - 0.5 + rng.normal(0, 0.1, 60), base)
    assert clear["margin"] < -0.4 and clear["flip_share"] == 0.0
    tie = bootstrap_margin(base + rng.normal(0, 0.5, 60), base + rng.normal(0, 0.5, 60))
    assert 0.05 < tie["flip_share"] < 0.95


def test_dpo_writes_a_heldout_effect_that_shows_the_learned_preference(source, tmp_path):
    from lmforge.stages.dpo import DPOConfig, run

    src_run, _ = source
    data = write_jsonl(tmp_path / "pairs.jsonl", color_pairs(80, seed=3, scrambled=True))
    out = tmp_path / "dpo"
    cfg = config.load(DPOConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{data}]", f"out_dir={out}",
                                        "train.seq_len=64", "train.micro_batch_size=8", "train.optim.lr=3e-3",
                                        "epochs=3", "beta=0.5", "val_fraction=0.3"])
    summary = run(cfg, progress=False)
    e = summary["effect"]
    stats = json.loads((out / "stats.json").read_text())
    assert e["n"] == stats["val_pairs"] > 0
    assert e["metric"].startswith("held-out log-prob margin")
    # held-out pairs: the policy raised the chosen reply's margin; it prefers the chosen reply,
    # the start model did not as often
    assert e["verdict"] == "gain" and e["delta"] > 0 and e["reward_accuracy"] >= 0.9
    acc = e["more"][0]
    assert acc["metric"].startswith("held-out preference accuracy")
    assert acc["verdict"] == "gain" and acc["after"] >= 0.9 > acc["before"]
    assert json.loads((out / "DONE.json").read_text())["effect"] == e


def test_sft_writes_heldout_reply_loss_and_turn_ending_before_after(source, tmp_path):
    from lmforge.stages.sft import SFTConfig, run

    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=160, seed=4, max_turns=1)
    out = tmp_path / "sft"
    cfg = config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{data}]", f"out_dir={out}",
                                        "train.seq_len=128", "train.micro_batch_size=8", "train.optim.lr=3e-3",
                                        "epochs=3", "val_fraction=0.15"])
    e = run(cfg, progress=False)["effect"]
    assert e["n"] == 24 and e["verdict"] == "gain" and e["after"] < e["before"] - 1.0
    fmt = e["more"][0]
    assert fmt["n"] == 24 and "end their turn" in fmt["metric"]
    # the trained model closes every turn (a random start does by chance: its greedy argmax is
    # often one fixed token, here <|im_end|> for ~70% of the prompts)
    assert fmt["after"] >= 0.9 and fmt["after"] > fmt["before"]


def test_fact_probes_target_only_the_fact_reply(source):
    from lmforge.align.self_knowledge import DEFAULT_FEW_SHOT, DEFAULT_PROMPTS, HELDOUT_QUESTIONS, fact_probe_items
    from lmforge.tokenizer.train import load_tokenizer

    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    seen = {q.lower() for q in DEFAULT_PROMPTS} | {x["user"].lower() for x in DEFAULT_FEW_SHOT}
    assert not seen & {q.lower() for q in HELDOUT_QUESTIONS}
    facts = ["My name is Forge.", "I can make mistakes."]
    probes = fact_probe_items(tok, facts, ["Who are you?", "What's your name?"])
    assert [len(q) for q in probes] == [2, 2]
    ids, mask = probes[1][0]
    assert tok.decode(ids[mask].tolist(), skip_special_tokens=False) == "My name is Forge.<|im_end|>"


def test_grid_effect_pairs_the_winner_with_the_best_distinct_mix():
    from lmforge.stages.sftgrid import winner_effect

    rng = np.random.default_rng(2)
    base = rng.normal(4, 0.5, 30)

    def point(shares, shift, noise=0.02):
        per = (base + shift + rng.normal(0, noise, 30)).tolist()
        return {"shares": shares, "label": str(shares),
                "heldout": {"en": {"loss": float(np.mean(per[:15])), "per_conversation": per[:15]},
                            "zh": {"loss": float(np.mean(per[15:])), "per_conversation": per[15:]}}}

    results = [point({"en": 1, "zh": 1}, 0.0), point({"en": 2, "zh": 2}, 0.001), point({"en": 1, "zh": 0}, 0.4)]
    e = winner_effect(results, 0, "mean_loss")
    # 2:2 is the winner's own mix; the runner-up is en only, clearly worse
    assert e["runner_up"] == str({"en": 1, "zh": 0}) and e["verdict"] == "gain" and e["n"] == 30
    results[2] = point({"en": 1, "zh": 0}, 0.001, noise=0.3)
    assert winner_effect(results, 0, "mean_loss")["verdict"] == "within noise"
    assert winner_effect(results[:2], 0, "mean_loss") is None   # one distinct mix: nothing to compare


def test_report_effects_section_lists_every_effect_and_the_stages_without_one(tmp_path):
    from lmforge.report.build import build_report
    from lmforge.report.effects import effects_section
    from lmforge.report.collect import StageFolder
    from lmforge.report.tables import fmt

    dpo = paired_effect("held-out preference accuracy", [0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 1, 1], True)
    dpo["more"] = [paired_effect("margin", [0.1, -0.2, 0.3, 0.0], [0.1, -0.2, 0.3, 0.01], True)]
    stages = [StageFolder("dpo", tmp_path, kind="dpo", done={"effect": dpo}),
              StageFolder("sft", tmp_path, kind="sft", done={"step": 3}),
              StageFolder("export", tmp_path, kind="export", done={"ok": 1})]
    sec = effects_section(stages)
    table = sec.blocks[0]
    assert [r[0] for r in table.rows] == ["dpo", ""] and table.rows[0][5] == dpo["verdict"]
    assert table.rows[0][3] == f"{fmt(dpo['delta'])} ± {fmt(2 * dpo['stderr'])}"
    assert "No before/after measurement recorded for: sft." in sec.blocks
    assert effects_section([StageFolder("sft", tmp_path, kind="sft", done={"step": 3})]) is None
    # in a built report: the section comes right after the overview
    run = tmp_path / "run"
    (run / "dpo").mkdir(parents=True)
    (run / "dpo" / "DONE.json").write_text(json.dumps({"step": 2, "effect": dpo}))
    (run / "dpo" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.69, "lr": 1e-6}) + "\n")
    res = build_report(run, tmp_path / "rep")
    assert res["sections"][:2] == ["overview", "effects"]
    assert "What each stage did" in (tmp_path / "rep" / "report.md").read_text()


def test_selfknow_facts_effect_is_specific_to_the_taught_facts(source):
    """Trained on the facts as replies to the built-in (not held-out) questions, a model makes
    the true facts likelier than the false ones on the held-out questions: a gain; the start
    model against itself: no change."""
    import types

    import torch

    from lmforge.align.chat_template import encode_chat
    from lmforge.align.self_knowledge import DEFAULT_FACTS, DEFAULT_PROMPTS
    from lmforge.model.load import load_checkpoint
    from lmforge.stages.selfknow import SelfKnowConfig, facts_effect
    from lmforge.tokenizer.train import load_tokenizer

    src_run, tok_dir = source
    cfg = config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}"])
    start, _ = load_checkpoint(src_run)
    same = facts_effect(cfg, types.SimpleNamespace(model=start))
    assert same["n"] == 16 and same["delta"] == pytest.approx(0.0, abs=1e-9) and same["verdict"] == "within noise"
    tok = load_tokenizer(tok_dir)
    model, _ = load_checkpoint(src_run)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(40):
        q, f = DEFAULT_PROMPTS[step % len(DEFAULT_PROMPTS)], DEFAULT_FACTS[step % len(DEFAULT_FACTS)]
        ids, mask = encode_chat(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": f}], "last")
        x = torch.as_tensor(ids.astype(np.int64))[None]
        logp = torch.log_softmax(model(x[:, :-1]).float()[0], -1)
        loss = -logp.gather(1, x[0, 1:, None])[:, 0][torch.as_tensor(mask[1:])].mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    e = facts_effect(cfg, types.SimpleNamespace(model=model))
    assert e["metric"].startswith("taught facts vs false ones") and e["higher_is_better"]
    assert e["verdict"] == "gain" and e["after"] > e["before"] + 0.3
    assert e["more"][0]["verdict"] == "gain"   # the true facts' own loss fell too
