"""DPO: loss vs an independent float64 computation, pair filters, a tiny run, pairs built from SFT."""
import json
import math
import random

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.align.preference_data import encode_pair, load_pairs
from lmforge.io.documents import ErrorSink
from lmforge.model import Transformer
from lmforge.model.load import load_checkpoint
from lmforge.tokenizer.train import load_tokenizer
from lmforge.stages.dpo import DPOConfig, run
from lmforge.train.objectives.dpo import DPOObjective, dpo_terms, pair_batch, reference_logps, sequence_logps
from test_align_utils import COLORS, THINGS, color_of, losses, make_sft_file, make_source, tiny_model_cfg, write_jsonl


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def color_pairs(n: int, seed: int = 0, scrambled: bool = False) -> list[dict]:
    """chosen = the right color; rejected = a wrong one, or (scrambled) the reply's words
    backwards with a wrong color (a preference a tiny model learns in a few steps)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.choice(THINGS)
        wrong = rng.choice([c for c in COLORS if c != color_of(t)])
        rejected = f"{wrong} is {t} the" if scrambled else f"The {t} is {wrong}."
        out.append({"prompt": f"What color is the {t}?", "chosen": f"The {t} is {color_of(t)}.",
                    "rejected": rejected, "score_chosen": 9, "score_rejected": 3})
    return out


def f64_logp(model, ids: np.ndarray, mask: np.ndarray) -> float:
    """log p(reply) in float64, straight from the logits: sum over target tokens t of log p(ids[t] | ids[<t])."""
    with torch.no_grad():
        logits = model(torch.from_numpy(ids.astype(np.int64))[None])[0].double()
    logp = torch.log_softmax(logits[:, :model.cfg.vocab_size], dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if mask[t])


@pytest.mark.parametrize("beta,sft_coef", [(1.0, 0.0), (0.1, 0.5)])
def test_dpo_loss_matches_float64_formula(source, beta, sft_coef):
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    pairs = []
    for r in color_pairs(5):
        pairs.append(encode_pair(tok, [{"role": "user", "content": r["prompt"]}], r["chosen"], r["rejected"]))
    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(tok.get_vocab_size())).eval()
    ref = np.random.default_rng(0).normal(-40, 3, size=(5, 2))
    obj = DPOObjective(pairs, 5, 1, 0, pad_id=1, beta=beta, sft_coef=sft_coef, ref_logps=ref)
    batch = obj.next_batch()
    loss, metrics = obj.loss(model, batch)
    want, rc, rr, acc, sft = 0.0, 0.0, 0.0, 0.0, 0.0
    for i, k in enumerate(batch["pair_index"].tolist()):
        p = pairs[k]
        pc, pr = f64_logp(model, p.chosen, p.chosen_mask), f64_logp(model, p.rejected, p.rejected_mask)
        z = beta * ((pc - ref[k, 0]) - (pr - ref[k, 1]))
        want += -math.log(1 / (1 + math.exp(-z)))
        sft += -pc / (p.chosen_mask[1:].sum())
        rc, rr, acc = rc + beta * (pc - ref[k, 0]), rr + beta * (pr - ref[k, 1]), acc + (z > 0)
    want += sft_coef * sft
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert float(metrics["reward_chosen_sum"]) == pytest.approx(rc, rel=1e-5)
    assert float(metrics["reward_rejected_sum"]) == pytest.approx(rr, rel=1e-5)
    assert float(metrics["margin_sum"]) == pytest.approx(rc - rr, rel=1e-4, abs=1e-4)
    assert float(metrics["accuracy_sum"]) == acc
    # the frozen-model reference gives the same terms as precomputed log-probs
    ref_lp = reference_logps(model, pairs, pad_id=1, batch_size=2)
    a = DPOObjective(pairs, 5, 1, 0, 1, beta, sft_coef, ref_logps=ref_lp)
    b = DPOObjective(pairs, 5, 1, 0, 1, beta, sft_coef, reference=Transformer(model.cfg))
    b.reference.load_state_dict(model.state_dict())
    la, lb = a.loss(model, a.next_batch())[0], b.loss(model, b.next_batch())[0]
    assert la.item() == pytest.approx(lb.item(), rel=1e-5)
    if sft_coef == 0:
        assert la.item() == pytest.approx(5 * math.log(2), rel=1e-5)   # policy == reference


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_dpo_through_the_one_loss_path_equals_the_plain_logits_path(source, amp):
    """Issue 29: DPO's log-probs come from the model's fused loss path (a loss per token); the
    path it replaced (full logits, then cross-entropy) gives the same log-probs, DPO loss and
    gradients to floating tolerance, in fp32 and under the bf16 autocast CUDA training uses."""
    import torch.nn.functional as F

    from lmforge.device import autocast

    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    pairs = [encode_pair(tok, [{"role": "user", "content": r["prompt"]}], r["chosen"], r["rejected"])
             for r in color_pairs(4, seed=7)]
    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(tok.get_vocab_size()))
    b = pair_batch(pairs, [0, 1, 2, 3], pad_id=1)
    ref = torch.from_numpy(np.random.default_rng(1).normal(-40, 3, size=(4, 2)))
    params = [p for p in model.parameters() if p.requires_grad]

    def run(logps):
        with autocast("cpu", amp):
            lp = logps()
        loss = dpo_terms(lp.view(2, -1).t(), ref, beta=0.5)["loss"].sum()
        return lp.detach(), loss.detach(), torch.autograd.grad(loss, params)

    def plain():
        logits = model(b["input_ids"])
        ce = F.cross_entropy(logits.float().transpose(1, 2), b["labels"], ignore_index=-100, reduction="none")
        return -ce.sum(-1)

    old_lp, old_loss, old_grads = run(plain)
    new_lp, new_loss, new_grads = run(lambda: sequence_logps(model, b["input_ids"], b["labels"]))
    tol = 1e-5 if amp is None else 2e-3
    torch.testing.assert_close(new_lp, old_lp, rtol=tol, atol=tol)
    torch.testing.assert_close(new_loss, old_loss, rtol=tol, atol=tol)
    for a, o in zip(new_grads, old_grads):
        scale = float(o.abs().max()) or 1.0
        assert float((a - o).abs().max()) <= (1e-4 if amp is None else 3e-2) * scale


def test_pair_filters_counted(source, tmp_path):
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    good = color_pairs(3, seed=1)
    recs = [*good,
            good[0],                                                              # duplicate
            {**good[1], "rejected": good[1]["chosen"] + " "},                     # tie (same text)
            {**good[2], "score_rejected": 9},                                     # tie (same score)
            {**good[2], "score_chosen": 2},                                       # inverted (2 < 3)
            {**good[2], "score_chosen": 7, "score_rejected": 1},                  # low score (< 8 of 10)
            {**good[0], "chosen": "purple " * 300},                               # too long
            "not json", {"prompt": "x", "chosen": "y"},                           # malformed x2
            {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
             "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go."}]}]
    path = write_jsonl(tmp_path / "p.jsonl", recs)
    errors = ErrorSink(tmp_path / "rejects.jsonl")
    pairs, stats = load_pairs([str(path)], tok, 128, errors, min_score_chosen=8)
    errors.close()
    assert stats == {"records": 12, "kept": 4, "duplicate": 1, "tie": 2, "inverted": 1, "low_score": 1,
                     "rejected_kind": 0, "too_long": 1, "malformed": 2, "invalid_utf8": 0, "empty_reply": 0}
    assert len(pairs) == 4
    rej = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rej] == [10, 11] and "rejected" in rej[1]["detail"]
    # the message-list form: prompt = the messages before the reply, only the reply is a target
    last = pairs[-1]
    assert tok.decode(last.chosen[last.chosen_mask].tolist(), skip_special_tokens=False) == "Hello.<|im_end|>"


def test_rejected_kinds_keeps_only_the_named_kinds(source, tmp_path):
    """rejected_kinds: pairs whose meta.rejected_kind is not listed (or that have none) are dropped
    and counted; without it every kind is kept."""
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    recs = color_pairs(6, seed=2)
    for r, kind in zip(recs, ["other", "truncated", "shuffled", "other", None, "truncated"]):
        r["chosen"] += f" {kind}"   # distinct pairs: no duplicates
        if kind:
            r["meta"] = {"rejected_kind": kind}
    recs[4]["meta"] = "not a dict"
    path = write_jsonl(tmp_path / "k.jsonl", recs)
    errors = ErrorSink(tmp_path / "rejects.jsonl")
    kept, stats = load_pairs([str(path)], tok, 128, errors, rejected_kinds=["truncated", "shuffled"])
    every, every_stats = load_pairs([str(path)], tok, 128, errors)
    errors.close()
    assert (stats["kept"], stats["rejected_kind"]) == (3, 3) and len(kept) == 3
    assert (every_stats["kept"], every_stats["rejected_kind"]) == (6, 0)


def test_tiny_dpo_run_preference_accuracy_rises(source, tmp_path):
    src_run, tok_dir = source
    tok = load_tokenizer(tok_dir)
    recs = color_pairs(24, scrambled=True)
    data = write_jsonl(tmp_path / "pairs.jsonl", recs)
    out = tmp_path / "dpo"
    cfg = config.load(DPOConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{data}]", f"out_dir={out}",
                                        "train.seq_len=64", "train.micro_batch_size=8", "train.optim.lr=3e-3",
                                        "epochs=3", "beta=0.5", "min_score_chosen=8"])
    assert DPOConfig.__dataclass_fields__["epochs"].default == 1
    summary = run(cfg, progress=False)
    acc = losses(out, "accuracy_sum")
    stats = json.loads((out / "stats.json").read_text())
    n = stats["pairs"]["kept"]
    assert stats["pairs"]["duplicate"] == 24 - n and n >= 16
    assert len(acc) == summary["step"] == stats["planned_steps"] == math.ceil(3 * n / 8)
    for key in ("reward_chosen_sum", "reward_rejected_sum", "margin_sum", "dpo_loss_sum"):
        assert all(math.isfinite(v) for v in losses(out, key))
    # on its training pairs, the final policy prefers chosen far more often than at the start
    pairs, _ = load_pairs([str(data)], tok, 64, ErrorSink(None))
    policy, _ = load_checkpoint(out)
    start, _ = load_checkpoint(src_run)
    margin = (reference_logps(policy, pairs, 1) - reference_logps(start, pairs, 1)) @ np.array([1.0, -1.0])
    assert (margin > 0).mean() >= 0.9          # at the start policy == reference: margin 0, accuracy 0
    assert acc[0] < 0.5 and np.mean(acc[-3:]) >= 0.9
    margins = losses(out, "margin_sum")
    assert np.mean(margins[-3:]) > margins[0] + 0.5
    assert run(cfg, progress=False)["skipped"]


def test_build_pairs_from_sft_cli_with_model_samples(source, tmp_path):
    from lmforge.cli import build_parser

    src_run, _ = source
    sft = make_sft_file(tmp_path / "sft.jsonl", n=6)
    parser = build_parser(["dpo"])
    out = tmp_path / "dpo"
    args = parser.parse_args(["dpo", "--quiet", "--build-pairs", str(sft), "--set", f"init.from_checkpoint={src_run}",
                              "--set", f"out_dir={out}", "--set", "train.seq_len=128", "--set",
                              "train.micro_batch_size=4", "--set", "pairs_from_sft.rejected=model", "--set",
                              "pairs_from_sft.max_new_tokens=6", "--set", "max_steps=2", "--set",
                              "reference=model"])
    assert args.func(args) == 0
    built = [json.loads(l) for l in (out / "pairs_from_sft.jsonl").read_text().splitlines()]
    assert built and all(r["meta"]["rejected_kind"] == "model_sample" for r in built)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["pairs_from_sft"]["conversations"] == 6 and stats["pairs_from_sft"]["rejected"] == "model"
    assert json.loads((out / "DONE.json").read_text())["step"] == 2
    assert (out / "tokenizer" / "tokenizer.json").exists()
    # synthetic pairs (default): real reply vs another conversation's / truncated / shuffled reply
    cfg = config.load(DPOConfig, None, [f"init.from_checkpoint={src_run}", f"pairs_from_sft.files=[{sft}]",
                                        f"out_dir={tmp_path / 'syn'}", "train.seq_len=128", "max_steps=1"])
    assert cfg.train.optim.lr == 1e-6 and cfg.train.schedule.kind == "cosine" and cfg.beta == 1.0
    run(cfg, progress=False)
    kinds = {json.loads(l)["meta"]["rejected_kind"] for l in (tmp_path / "syn" / "pairs_from_sft.jsonl").open()}
    assert kinds <= {"other", "truncated", "shuffled"} and "other" in kinds


def test_reference_logps_follow_the_policy_precision(source, tmp_path):
    """Issue 17 item 8: precomputed reference log-probs go through the same autocast as the
    policy, so the margin at step 0 is ~0; fp32 references under a bf16 policy are not."""
    from lmforge.train.objectives.dpo import pair_logps, step0_check

    src_run, tok_dir = source
    tok = load_tokenizer(tok_dir)
    pairs, _ = load_pairs([str(write_jsonl(tmp_path / "p.jsonl", color_pairs(16, seed=3)))], tok, 64, ErrorSink(None))
    model, _ = load_checkpoint(src_run)
    bf16 = torch.bfloat16
    ref_amp = reference_logps(model, pairs, 1, batch_size=4, autocast=bf16)
    ref_f32 = reference_logps(model, pairs, 1, batch_size=4)
    # the training loop's view of the same pairs: a shuffled micro-batch under bf16 autocast (CPU)
    obj_amp = DPOObjective(pairs, 4, 1, 0, 1, beta=1.0, ref_logps=ref_amp)
    obj_f32 = DPOObjective(pairs, 4, 1, 0, 1, beta=1.0, ref_logps=ref_f32)
    good, bad = step0_check(model, obj_amp, "cpu", bf16), step0_check(model, obj_f32, "cpu", bf16)
    assert good["precision"] == "bfloat16" and good["pairs"] == 4
    assert good["max_abs_margin"] < 1e-4 and bad["max_abs_margin"] > max(10 * good["max_abs_margin"], 3e-4)
    # the autocast path really ran in bf16 (the same batch in fp32 differs), and fp32 stays exact
    lp32 = pair_logps(model, pairs, [0, 1], 1)
    assert float((lp32.double() - torch.from_numpy(ref_f32[[0, 1]])).abs().max()) < 1e-4
    assert float((lp32.double() - torch.from_numpy(ref_amp[[0, 1]])).abs().max()) > 3e-4


def test_dpo_stage_records_step0_margin_in_bf16(source, tmp_path):
    src_run, _ = source
    data = write_jsonl(tmp_path / "pairs.jsonl", color_pairs(12, seed=5))
    out = tmp_path / "dpo"
    cfg = config.load(DPOConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{data}]", f"out_dir={out}",
                                        "train.seq_len=64", "train.micro_batch_size=4", "train.precision=bf16",
                                        "train.device=cpu", "max_steps=1"])
    run(cfg, progress=False)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["step0"]["precision"] == "bfloat16" and stats["step0"]["max_abs_margin"] < 1e-4
    first = losses(out, "margin_sum")[0]          # logged margin of step 1, before its update
    assert abs(first) < 1e-4
    assert any(k.endswith("_bfloat16") for k in np.load(out / "ref_logps.npz").files)


def test_refusal_pairs_use_the_model_written_refusal_as_chosen():
    from lmforge.align.refusals import REFUSAL_SYSTEM, refusal_pairs

    recs = [{"prompt": [{"role": "user", "content": "steal a car?"}], "refusal": "No.", "rejected": None},
            {"prompt": [{"role": "user", "content": "pick a lock?"}], "refusal": None, "rejected": "Sure: ..."},
            {"prompt": [{"role": "user", "content": "same?"}], "refusal": None, "rejected": "I refuse."}]

    def sample(texts, call):       # a scripted SFT model: refuses when told to, complies otherwise
        return ["I refuse." if REFUSAL_SYSTEM in t else "Here is how." for t in texts]
    pairs, info = refusal_pairs(recs, sample, lambda p, r: float(len(r)))
    assert [p["chosen"] for p in pairs] == ["I refuse.", "I refuse."]
    assert [p["rejected"] for p in pairs] == ["Here is how.", "Sure: ..."]   # own answer, else the given one
    assert info["stats"]["tie"] == 1 and info["pairs"] == 2
    assert info["summary"]["human"] == {"n": 1, "mean_ppl": 3.0, "median_ppl": 3.0}
    assert all("system" not in json.dumps(p["prompt"]) for p in pairs)        # trained without the instruction


def test_dpo_stage_builds_refusal_pairs_and_the_report_shows_them(source, tmp_path):
    from lmforge.report.build import build_report

    src_run, _ = source
    out = tmp_path / "dpo"
    cfg = config.load(DPOConfig, None, [f"init.from_checkpoint={src_run}", f"out_dir={out}", "refusals.prompts=[builtin]",
                                        "refusals.max_new_tokens=12", "refusals.temperature=0.5", "train.seq_len=128",
                                        "train.micro_batch_size=4", "max_steps=2"])
    run(cfg, progress=False)
    info = json.loads((out / "refusals.json").read_text())
    pairs = [json.loads(l) for l in (out / "refusal_pairs.jsonl").read_text().splitlines()]
    assert info["pairs"] == len(pairs) >= 15 and info["summary"]["human"]["n"] == len(pairs)
    assert all(p["meta"]["source"] == "model_refusal" and p["meta"]["human_refusal"] for p in pairs)
    # the report's point, even for this untrained model: its own replies are likelier under it
    assert info["summary"]["model"]["mean_ppl"] < info["summary"]["human"]["mean_ppl"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["refusals"]["pairs"] == len(pairs)
    res = build_report(out, tmp_path / "rep")
    assert "refusals" in res["sections"] and "Refusal perplexity" in (tmp_path / "rep" / "report.md").read_text()
