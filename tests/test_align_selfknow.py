"""Self-knowledge: C-RLFT per-class weights and KL term, RLCD prompts, a tiny `selfknow` run."""
import copy
import json
import random
import shutil

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.align.chat_template import encode_chat
from lmforge.align.self_knowledge import DEFAULT_FACTS, NEGATIVE_TOKEN, conditioned, facts_system_prompt, prompt_ids
from lmforge.align.sft_data import Conversation, load_conversations
from lmforge.config import ConfigError
from lmforge.io.documents import ErrorSink
from lmforge.model import Transformer
from lmforge.tokenizer.train import load_tokenizer
from lmforge.train.objectives.crlft import CRLFTObjective
from lmforge.stages.selfknow import SelfKnowConfig, run
from test_align_utils import conversation, make_sft_file, make_source, tiny_model_cfg, write_jsonl


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def f64_terms(model, ref, c: Conversation, V: int) -> tuple[float, float]:
    """(sum of CE over the conversation's targets, sum of KL(model || ref) there), float64, alone."""
    ids = torch.from_numpy(c.ids.astype(np.int64))[None]
    with torch.no_grad():
        lp = torch.log_softmax(model(ids)[0, :, :V].double(), -1)
        lq = torch.log_softmax(ref(ids)[0, :, :V].double(), -1)
    t = [i for i in range(1, len(c.ids)) if c.mask[i]]
    ce = -sum(float(lp[i - 1, c.ids[i]]) for i in t)
    kl = sum(float((lp[i - 1].exp() * (lp[i - 1] - lq[i - 1])).sum()) for i in t)
    return ce, kl


def test_crlft_class_weights_and_kl(source):
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    V = tok.get_vocab_size()
    rng = random.Random(0)
    convs = [Conversation(*encode_chat(tok, conversation(rng, 1)["messages"]), cls=k) for k in (0, 1, 0)]
    weights = [1.0, 0.1]
    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(V)).eval()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obj = CRLFTObjective(convs, [[0, 1, 2]], 128, 1, 1, class_weights=weights, reference=ref, kl_coef=0.3,
                         vocab_size=V)
    batch = obj.next_batch()
    loss, m = obj.loss(model, batch)
    terms = [f64_terms(model, ref, c, V) for c in convs]
    want_w = sum(weights[c.cls] * ce for c, (ce, _) in zip(convs, terms))
    want_kl = sum(kl for _, kl in terms)
    assert float(m["weighted_ce_sum"]) == pytest.approx(want_w, rel=1e-4)
    assert float(m["ce_sum"]) == pytest.approx(sum(ce for ce, _ in terms), rel=1e-4)
    assert float(m["kl_sum"]) == pytest.approx(want_kl, rel=1e-3) and want_kl > 0
    assert loss.item() == pytest.approx(want_w + 0.3 * want_kl, rel=1e-4)
    assert obj.weight(batch) == sum(int(c.mask[1:].sum()) for c in convs)
    # the KL term vanishes when the policy is the reference
    same = CRLFTObjective(convs, [[0, 1, 2]], 128, 1, 1, class_weights=weights, reference=copy.deepcopy(model),
                          kl_coef=1.0, vocab_size=V)
    assert float(same.loss(model, same.next_batch())[1]["kl_sum"]) == pytest.approx(0.0, abs=1e-5)


def test_crlft_logs_each_class_cross_entropy_apart_from_the_class_mix(source):
    """Issue 34: the weighted C-RLFT loss per target moves with the step's class mix (it rose
    2.28 -> 2.62 in a tiny run whose plain cross-entropy fell): each class's own CE is logged."""
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    V = tok.get_vocab_size()
    rng = random.Random(1)
    convs = [Conversation(*encode_chat(tok, conversation(rng, 1)["messages"]), cls=k) for k in (0, 1, 1, 1)]
    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(V)).eval()
    obj = CRLFTObjective(convs, [[0, 1], [0, 1, 2, 3]], 128, 1, 1, class_weights=[1.0, 0.1],
                         class_names=["positive", "negative"])
    terms = [f64_terms(model, model, c, V)[0] for c in convs]
    n_tok = [int(c.mask[1:].sum()) for c in convs]
    per_class = {}
    for batch_rows in (obj.next_batch(), obj.next_batch()):
        _, m = obj.loss(model, batch_rows)
        for name in ("positive", "negative"):
            per_class.setdefault(name, []).append(float(m[f"{name}_ce_sum"]) / max(int(m[f"{name}_targets_sum"]), 1))
        per_class.setdefault("weighted", []).append(float(m["weighted_ce_sum"]) / obj.weight(batch_rows))
    # row 1 holds conversations 0-1, row 2 all four: each class's CE per token is its own
    want_pos = terms[0] / n_tok[0]
    assert per_class["positive"] == pytest.approx([want_pos, want_pos], rel=1e-4)
    assert per_class["negative"][0] == pytest.approx(terms[1] / n_tok[1], rel=1e-4)
    assert per_class["negative"][1] == pytest.approx(sum(terms[1:]) / sum(n_tok[1:]), rel=1e-4)
    # same model, same per-class CE, yet the weighted loss per target differs by the class mix
    assert abs(per_class["weighted"][1] - per_class["weighted"][0]) > 0.1 * per_class["weighted"][0]


def test_crlft_without_kl_takes_the_one_loss_path_and_equals_the_logits_path():
    """Issue 29: with kl_coef 0 the C-RLFT cross-entropy comes from the model's fused loss path
    (a loss per token, no logits); the logits path it replaced gives the same weighted loss,
    per-class sums and gradients (fp32)."""
    import torch.nn.functional as F

    from lmforge.align.sft_data import build_row
    from lmforge.train.objectives.sft import stack_rows

    rng = np.random.default_rng(0)
    convs = [Conversation(rng.integers(1, 100, n).astype(np.int32), rng.random(n) < 0.6, cls=k)
             for n, k in ((20, 0), (31, 1), (40, 1))]
    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(100))
    weights = [1.0, 0.1]
    obj = CRLFTObjective(convs, [], 64, 2, 0, class_weights=weights, class_names=["positive", "negative"])
    batch = stack_rows([build_row(convs, [0, 1], 64, 0, weights), build_row(convs, [2], 64, 0, weights)])
    batch["is_pt"] = torch.tensor([False, False])
    params = list(model.parameters())
    loss, m = obj.loss(model, batch)
    grads = torch.autograd.grad(loss, params)
    sel = batch["labels"] != -100
    logits = model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"])
    ce = F.cross_entropy(logits[sel].float(), batch["labels"][sel], reduction="none")
    plain = (batch["token_weight"][sel] * ce).sum()
    plain_grads = torch.autograd.grad(plain, params)
    torch.testing.assert_close(loss.detach(), plain.detach(), rtol=1e-5, atol=1e-5)
    cls = batch["token_class"][sel]
    for k, name in enumerate(["positive", "negative"]):
        torch.testing.assert_close(m[f"{name}_ce_sum"], ce[cls == k].sum().detach(), rtol=1e-5, atol=1e-5)
    for a, o in zip(grads, plain_grads):
        assert float((a - o).abs().max()) <= 1e-4 * (float(o.abs().max()) or 1.0)
    assert "kl_sum" not in m and float(m["weighted_ce_sum"]) < float(m["ce_sum"])


def test_class_tags_and_rlcd_prompts(source, tmp_path):
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    rng = random.Random(0)
    path = write_jsonl(tmp_path / "c.jsonl", [{**conversation(rng, 1), "class": "positive"},
                                              {**conversation(rng, 1, system=True)},     # class from its file
                                              {**conversation(rng, 1), "class": "bogus"}])
    convs, stats = load_conversations([str(path)], tok, 256, 8, ErrorSink(None), classes={"positive": 0, "sft": 1},
                                      path_classes={str(path): "sft"})
    assert stats["kept"] == 2 and stats["unknown_class"] == 1 and [c.cls for c in convs] == [0, 1]
    system = facts_system_prompt(DEFAULT_FACTS, [{"user": "Name?", "assistant": "Forge."}])
    pos = tok.decode(prompt_ids(tok, "Who are you?", system), skip_special_tokens=False)
    neg = tok.decode(prompt_ids(tok, "Who are you?", None), skip_special_tokens=False)
    assert all(f in pos for f in DEFAULT_FACTS) and "User: Name?\nAssistant: Forge." in pos
    assert neg == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert pos.endswith(neg)
    # StableLM 2's condition: positives in plain SFT format, negatives marked by the negative token
    assert conditioned("Hi?", "Hello.", "positive", NEGATIVE_TOKEN) == [
        {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert conditioned("Hi?", "Hello.", "negative", NEGATIVE_TOKEN)[0] == {"role": "system", "content": NEGATIVE_TOKEN}


def test_tiny_selfknow_run(source, tmp_path, monkeypatch):
    """The stage's plumbing on a random tiny model: hand-written first messages (no base),
    D_c with the negative token, the extended tokenizer, the reference run, C-RLFT, resume."""
    src_run, src_tok = source
    sft = make_sft_file(tmp_path / "sft.jsonl", n=12, max_turns=1)
    out = tmp_path / "sk"
    over = [f"init.from_checkpoint={src_run}", f"out_dir={out}", f"sources.sft={sft}", "class_weights.sft=0.5",
            "prompts=['Who are you?', 'What is your name?', 'who are you', 'Who made you?']", "samples_per_prompt=2",
            "max_new_tokens=8", "temperature=1.0", "train.seq_len=128", "train.micro_batch_size=4",
            "train.optim.lr=3e-3", "epochs=1", "kl_coef=0.1", "reference.max_steps=2"]
    cfg = config.load(SelfKnowConfig, None, over)
    assert cfg.weights() == {"positive": 1.0, "negative": 0.1, "sft": 0.5}
    summary = run(cfg, progress=False)
    fm = json.loads((out / "first_messages_stats.json").read_text())
    assert fm["source"] == "prompts" and fm["given"] == 3          # "who are you" is an exact duplicate
    rlcd = [json.loads(l) for l in (out / "rlcd.jsonl").read_text().splitlines()]
    gen = json.loads((out / "rlcd_stats.json").read_text())
    assert gen["prompts_sampled"] == 6 and {r["class"] for r in rlcd} <= {"positive", "negative"}
    assert len(rlcd) == gen["kept_positive"] + gen["kept_negative"] > 0
    for r in rlcd:
        roles = [m["role"] for m in r["messages"]]
        assert roles == (["user", "assistant"] if r["class"] == "positive" else ["system", "user", "assistant"])
        assert r["class"] == "positive" or r["messages"][0]["content"] == NEGATIVE_TOKEN
    pairs = (out / "rlcd_pairs.jsonl").read_text().splitlines()
    assert len(pairs) == gen["pairs"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["conversations"]["kept"] == len(rlcd) + 12 and stats["classes"] == {"positive": 0, "negative": 1,
                                                                                      "sft": 2}
    # the negative token: one new special id, in the tokenizer saved beside the run
    old_n = json.loads((src_tok / "lmforge_tokenizer.json").read_text())["vocab_size"]
    tok = load_tokenizer(out / "tokenizer")
    assert stats["tokenizer"]["negative_id"] == tok.token_to_id(NEGATIVE_TOKEN) == old_n
    assert stats["tokenizer"]["vocab_size"] == old_n + 1 and stats["tokenizer"]["added"]
    from lmforge.model.load import load_checkpoint
    policy, _ = load_checkpoint(out)
    assert policy.cfg.vocab_size == old_n + 1
    # the reference: its own finished run, trained on D_c, which the KL term points at
    ref = json.loads((out / "reference" / "DONE.json").read_text())
    assert ref["step"] == 2 and (out / "reference" / "tokenizer" / "tokenizer.json").is_file()
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in l]
    assert len(recs) == summary["step"] and all(r["kl_sum"] > 0 and "weighted_ce_sum" in r for r in recs)
    assert run(cfg, progress=False)["skipped"]
    # resume after the reference finished: the data files and the reference are reused, not redone
    import lmforge.infer.generate as gen_mod
    (out / "DONE.json").unlink()
    for p in (out / "checkpoints").iterdir():
        shutil.rmtree(p)
    monkeypatch.setattr(gen_mod, "generate_ids", lambda *a, **k: pytest.fail("regenerated on resume"))
    ref_written = (out / "reference" / "DONE.json").stat().st_mtime_ns
    again = run(cfg, progress=False)
    assert (out / "reference" / "DONE.json").stat().st_mtime_ns == ref_written      # not retrained
    assert again["step"] == summary["step"] and again["final_loss"] == pytest.approx(summary["final_loss"])


def test_selfknow_config_errors(source):
    src_run, _ = source
    with pytest.raises(ConfigError, match="class_weights.extra"):
        config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", "sources.extra=x.jsonl"])
    with pytest.raises(ConfigError, match="negative_token"):
        config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", "negative_token=neg"])
    with pytest.raises(ConfigError, match="first_messages.opening"):
        config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", "first_messages.opening=User:"])
    with pytest.raises(ConfigError, match="base: .*no complete checkpoint"):
        run(config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", "base=/nonexistent",
                                               f"out_dir={src_run.parent / 'sk_bad'}"]), progress=False)
    with pytest.raises(ConfigError, match="few_shot"):
        config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", "few_shot=[{user: a}]"])


def test_selfknow_trains_six_epochs_by_default():
    assert SelfKnowConfig.__dataclass_fields__["epochs"].default == 6     # StableLM 2


def test_fact_questions_become_positives_and_cannot_be_held_out(source, tmp_path):
    """fact_questions: every question x every fact as a plain positive conversation beside
    rlcd.jsonl ("builtin" = the built-in identity questions); a held-out question is refused."""
    from lmforge.align.self_knowledge import DEFAULT_PROMPTS, HELDOUT_QUESTIONS
    from lmforge.stages.selfknow import conversation_files

    src_run, _ = source
    cfg = config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", f"out_dir={tmp_path}",
                                             "fact_questions=[builtin, 'Who is Forge?']"])
    files, *_ = conversation_files(cfg, tmp_path / "rlcd.jsonl")
    assert files[0] == str(tmp_path / "rlcd.jsonl") and files[1].endswith("fact_conversations.jsonl")
    recs = [json.loads(l) for l in open(files[1], encoding="utf-8")]
    assert len(recs) == (len(DEFAULT_PROMPTS) + 1) * len(DEFAULT_FACTS)
    assert {r["class"] for r in recs} == {"positive"}
    assert {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in recs} == \
        {(q, f) for q in [*DEFAULT_PROMPTS, "Who is Forge?"] for f in DEFAULT_FACTS}
    off = config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}", f"out_dir={tmp_path / 'off'}"])
    assert conversation_files(off, tmp_path / "rlcd.jsonl")[0] == [str(tmp_path / "rlcd.jsonl")]
    with pytest.raises(ConfigError, match=r"fact_questions\[1\].*held-out"):
        config.load(SelfKnowConfig, None, [f"init.from_checkpoint={src_run}",
                                           f"fact_questions=['Who is Forge?', '{HELDOUT_QUESTIONS[0].upper()}']"])
