"""SFT: ChatML masking, packing, NEFTune, pretraining mix, stats, a tiny run, resume/skip."""
import json
import math
import random

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.align.chat_template import encode_chat, render
from lmforge.align.sft_data import Conversation, build_row, load_conversations
from lmforge.config import ConfigError
from lmforge.io.documents import ErrorSink
from lmforge.model import Transformer
from lmforge.tokenizer.train import load_tokenizer
from lmforge.train.objectives.lm import token_loss_sum
from lmforge.train.objectives.sft import NEFTune, SFTObjective, stack_rows
from lmforge.stages.sft import SFTConfig, build, run
from test_align_utils import conversation, losses, make_sft_file, make_source, tiny_model_cfg, write_jsonl
from conftest import make_token_dataset


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def sft_cfg(src_run, data, out, *extra):
    return config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}", f"data={[str(d) for d in data]}",
                                         f"out_dir={out}", "train.seq_len=128", "train.micro_batch_size=4",
                                         "train.optim.lr=3e-3", *extra])


MSGS = [{"role": "system", "content": "You answer questions about colors."},
        {"role": "user", "content": "What color is the sky?"},
        {"role": "assistant", "content": "The sky is blue."},
        {"role": "user", "content": "And  the grass?"},
        {"role": "assistant", "content": "  The grass is green.\nYes."}]


def expected_mask(tok, ids, train_on="all"):
    """Independent token-by-token walk: inside <|im_start|>ROLE\\n ... <|im_end|>, the content
    tokens and the closing <|im_end|> of assistant turns are targets."""
    start, end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    out, role, state, header = [], None, "outside", ""
    n_assist = sum(tok.decode([i], skip_special_tokens=False) == "assistant" for i in ids)
    seen = 0
    for i in ids:
        piece = tok.decode([int(i)], skip_special_tokens=False)
        if i == start:
            state, header = "header", ""
            out.append(False)
        elif state == "header":
            header += piece
            out.append(False)
            if header.endswith("\n"):
                role, state = header[:-1], "content"
                seen += role == "assistant"
        elif state == "content":
            target = role == "assistant" and (train_on == "all" or seen == n_assist)
            out.append(target)
            if i == end:
                state = "outside"
        else:
            out.append(False)
    return np.array(out)


def test_chatml_ids_match_transformers_template_and_mask_token_by_token(source):
    from transformers import PreTrainedTokenizerFast

    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    ids, mask = encode_chat(tok, MSGS)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    text = hf.apply_chat_template(MSGS, tokenize=False)
    assert text == render(MSGS)
    assert ids.tolist() == hf(text, add_special_tokens=False)["input_ids"]
    assert mask.tolist() == expected_mask(tok, ids).tolist()
    im_end = "<|im_end|>"
    assert tok.decode(ids[mask].tolist(), skip_special_tokens=False) == \
        f"The sky is blue.{im_end}  The grass is green.\nYes.{im_end}"
    last_ids, last = encode_chat(tok, MSGS, "last")
    assert last_ids.tolist() == ids.tolist() and last.tolist() == expected_mask(tok, ids, "last").tolist()
    assert not encode_chat(tok, MSGS, "none")[1].any()


def test_packed_row_resets_attention_and_positions(source):
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    rng = random.Random(1)
    convs = [Conversation(*encode_chat(tok, conversation(rng, k)["messages"])) for k in (1, 2, 1)]
    T = 128
    assert sum(len(c.ids) for c in convs) <= T
    row = build_row(convs, [0, 1, 2], T, pad_id=1)
    at = 0
    for k, c in enumerate(convs):
        n = len(c.ids)
        assert (row["doc_ids"][at:at + n] == k).all() and (row["position_ids"][at:at + n] == np.arange(n)).all()
        # labels: next token where it is a target, never the first token of the next conversation
        want = np.where(c.mask[1:], c.ids[1:], -100)
        assert (row["labels"][at:at + n - 1] == want).all() and row["labels"][at + n - 1] == -100
        at += n
    assert (row["doc_ids"][at:] == -1).all() and (row["labels"][at:] == -100).all()
    # attention reset: each conversation's logits in the packed row equal those of the conversation alone
    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(tok.get_vocab_size())).eval()
    with torch.no_grad():
        packed = model(torch.from_numpy(row["input_ids"])[None], torch.from_numpy(row["position_ids"])[None],
                       torch.from_numpy(row["doc_ids"])[None])[0]
        at = 0
        for c in convs:
            alone = model(torch.from_numpy(c.ids.astype(np.int64))[None])[0]
            V = tok.get_vocab_size()
            torch.testing.assert_close(packed[at:at + len(c.ids), :V], alone[:, :V], atol=1e-4, rtol=1e-4)
            at += len(c.ids)


def test_neftune_scale_and_train_only():
    torch.manual_seed(0)
    cfg = tiny_model_cfg(100)
    model = Transformer(cfg)
    neft = NEFTune(alpha=5.0, pad_id=0)
    neft.attach(model)
    ids = torch.randint(1, 100, (2, 64))
    ids[1, 40:] = 0                                    # padding: L = 40 in row 1
    clean = torch.nn.functional.embedding(ids, model.embed_tokens.weight)
    model.eval()
    assert torch.equal(model.embed_tokens(ids), clean)  # no noise in eval / generation
    model.train()
    noise = model.embed_tokens(ids) - clean
    for row, L in ((0, 64), (1, 40)):
        bound = 5.0 / math.sqrt(L * cfg.d_model)
        n = noise[row].detach()
        assert n.abs().max() <= bound * (1 + 1e-5) and n.abs().max() > 0.95 * bound
        assert n.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # uniform(-b, b)
    assert torch.equal(NEFTune(0.0, 0)(model.embed_tokens, (ids,), clean), clean)


def test_neftune_length_is_each_packed_samples_own():
    """NEFTune's alpha / sqrt(L * d) takes L per sample: in a row packing a 12- and a 40-token
    conversation, the short one's tokens get the larger noise (the row's length, 52 + padding,
    would shrink both: Yi's noise level would depend on how many samples share a row)."""
    torch.manual_seed(0)
    cfg = tiny_model_cfg(100)
    model = Transformer(cfg)
    NEFTune(alpha=5.0, pad_id=0).attach(model)
    seen = []
    model.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    ids = torch.randint(1, 100, (1, 64))
    doc = torch.full((1, 64), -1)
    doc[0, :12], doc[0, 12:52] = 0, 1
    ids[0, 52:] = 0
    pos = torch.cat([torch.arange(12), torch.arange(40), torch.zeros(12, dtype=torch.long)])[None]
    model.train()
    model(ids, position_ids=pos, doc_ids=doc)
    noise = seen[-1] - torch.nn.functional.embedding(ids, model.embed_tokens.weight).detach()
    for span, L in ((slice(0, 12), 12), (slice(12, 52), 40)):
        bound = 5.0 / math.sqrt(L * cfg.d_model)
        n = noise[0, span]
        assert n.abs().max() <= bound * (1 + 1e-5) and n.abs().max() > 0.9 * bound
        assert n.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def mixed_sft_batch(vocab: int, seq_len: int = 64) -> tuple[list[Conversation], dict]:
    """Two packed SFT rows (three conversations, targets on ~60% of tokens) and one pretraining row."""
    rng = np.random.default_rng(0)
    convs = [Conversation(rng.integers(1, vocab, n).astype(np.int32), rng.random(n) < 0.6) for n in (20, 31, 40)]
    ids = rng.integers(1, vocab, seq_len)
    pt = {"input_ids": ids, "labels": np.append(ids[1:], -100), "position_ids": np.arange(seq_len),
          "doc_ids": np.zeros(seq_len, dtype=np.int64)}
    batch = stack_rows([build_row(convs, [0, 1], seq_len, 0), build_row(convs, [2], seq_len, 0), pt])
    batch["is_pt"] = torch.tensor([False, False, True])
    return convs, batch


def plain_sft_loss(model, batch):
    """The path SFT took before issue 29: full logits, the summed cross-entropy of them and each
    segment's sum from the logits of its rows."""
    logits = model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"])
    loss, metrics = token_loss_sum(logits, batch["labels"])
    for name, sel in (("sft", ~batch["is_pt"]), ("pt", batch["is_pt"])):
        metrics[f"{name}_ce_sum"] = token_loss_sum(logits[sel], batch["labels"][sel])[0].detach()
    return loss, metrics


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_sft_through_the_one_loss_path_equals_the_plain_logits_path(amp):
    """Issue 29: SFT's loss and its per-segment sums come from the model's fused loss path (a
    loss per token; no full logits). With NEFTune noising the embeddings (the same noise: same
    seed), the logits path it replaced gives the same loss, metrics and gradients to floating
    tolerance, in fp32 and under the bf16 autocast CUDA training uses; and the noise reaches
    the fused path (its loss moves by far more than that tolerance without it)."""
    from lmforge.device import autocast

    torch.manual_seed(0)
    model = Transformer(tiny_model_cfg(100))           # padded vocab: 28 columns of padding
    NEFTune(alpha=5.0, pad_id=0).attach(model)
    convs, batch = mixed_sft_batch(100)
    obj = SFTObjective(convs, [], 64, 3, 0)
    params = list(model.parameters())

    def run(loss_fn):
        torch.manual_seed(1)                           # NEFTune's noise
        with autocast("cpu", amp):
            loss, metrics = loss_fn(model, batch)
        return loss.detach(), metrics, torch.autograd.grad(loss, params)

    old_loss, old_m, old_grads = run(plain_sft_loss)
    new_loss, new_m, new_grads = run(obj.loss)
    tol = 1e-5 if amp is None else 2e-3
    torch.testing.assert_close(new_loss, old_loss, rtol=tol, atol=tol)
    for key in ("ce_sum", "sft_ce_sum", "pt_ce_sum"):
        torch.testing.assert_close(new_m[key], old_m[key], rtol=tol, atol=tol)
    assert float(new_m["sft_ce_sum"] + new_m["pt_ce_sum"]) == pytest.approx(float(new_loss), rel=1e-6)
    assert int(new_m["sft_targets_sum"]) == sum(int(c.mask[1:].sum()) for c in convs)
    assert int(new_m["pt_targets_sum"]) == 63
    for a, o in zip(new_grads, old_grads):
        scale = float(o.abs().max()) or 1.0
        assert float((a - o).abs().max()) <= (1e-4 if amp is None else 3e-2) * scale
    model.eval()                                       # no noise
    with torch.no_grad(), autocast("cpu", amp):
        clean = float(obj.loss(model, batch)[0])
    assert abs(clean - float(new_loss)) > 50 * max(abs(float(new_loss - old_loss)), 1e-6 * clean)


def test_stats_count_every_drop(source, tmp_path):
    _, tok_dir = source
    tok = load_tokenizer(tok_dir)
    rng = random.Random(0)
    long_text = " ".join(["purple"] * 200)
    recs = [conversation(rng, 1), conversation(rng, 8), conversation(rng, 9),     # kept, kept, >8 turns
            "{not json", {"messages": [{"role": "robot", "content": "x"}]},        # malformed x2
            {"messages": [{"role": "user", "content": "hi"}]},                    # no assistant reply
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": long_text}]}]
    path = write_jsonl(tmp_path / "d.jsonl", recs)
    errors = ErrorSink(tmp_path / "rejects.jsonl")
    convs, stats = load_conversations([str(path)], tok, 200, 8, errors)   # 8 turns: ~170 tokens; long: ~210
    errors.close()
    assert stats == {"records": 7, "kept": 2, "too_many_turns": 1, "malformed": 2, "no_assistant": 1,
                     "too_long": 1, "invalid_utf8": 0, "empty_reply": 0}
    assert len(convs) == 2
    _, stats = load_conversations([str(path)], tok, 128, 0, ErrorSink(None))  # no turn limit, shorter context
    assert stats["too_many_turns"] == 0 and stats["too_long"] == 3 and stats["kept"] == 1
    rej = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rej] == [(4, "malformed"), (5, "malformed")]
    assert all(r["file"] == str(path) for r in rej)


EXTRA = ["epochs=3", "neftune_alpha=5", "train.micro_batch_size=2", "train.optim.lr=1e-2", "train.seq_len=96"]


def test_tiny_sft_run_response_loss_falls_and_skips(source, tmp_path):
    from lmforge.model.load import load_checkpoint

    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=40, max_turns=2)
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{oops", conversation(random.Random(3), 9)])
    out = tmp_path / "sft"
    summary = run(sft_cfg(src_run, [data, bad], out, *EXTRA), progress=False)
    ls = losses(out)
    assert len(ls) == summary["step"] and sum(ls[-3:]) / 3 < 0.7 * sum(ls[:3]) / 3
    stats = json.loads((out / "stats.json").read_text())["conversations"]
    assert stats == {"records": 42, "kept": 40, "malformed": 1, "too_many_turns": 1, "no_assistant": 0,
                     "too_long": 0, "invalid_utf8": 0, "empty_reply": 0}
    assert (out / "DONE.json").exists() and (out / "tokenizer" / "tokenizer.json").exists()
    model, _ = load_checkpoint(out)                       # run_config carries the "model" key
    assert model.cfg.d_model == 32
    again = run(sft_cfg(src_run, [data, bad], out, *EXTRA), progress=False)
    assert again["skipped"] and again["step"] == summary["step"]


def test_pretraining_mix_ratio_realised(source, tmp_path):
    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=60)
    tokens = make_token_dataset(tmp_path / "tokens", n_docs=40, vocab=128)
    trainer = build(sft_cfg(src_run, [data], tmp_path / "out", f"mix.data={tokens}", "mix.share=0.4"), progress=False)
    obj = trainer.objective
    shares = []
    while (b := obj.next_batch()) is not None:
        m = obj.realised_mixture()
        shares.append(m["pretraining_share"])
        assert set(b) >= {"input_ids", "labels", "position_ids", "doc_ids", "is_pt"}
    assert obj.realised_mixture()["pretraining_share"] == pytest.approx(0.4, abs=0.03)  # Index: 4:6
    assert all(abs(s - 0.4) < 0.15 for s in shares[3:])  # tracks the target all along
    planned_micro = trainer.cfg.steps * trainer.cfg.grad_accum
    assert len(shares) <= planned_micro  # the planned steps cover the whole mixed run


def test_exact_resume_with_mix_and_neftune(source, tmp_path):
    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=16, max_turns=2)
    tokens = make_token_dataset(tmp_path / "tokens", n_docs=30, vocab=128)
    extra = ["epochs=2", f"mix.data={tokens}", "neftune_alpha=5", "train.ckpt_every=3", "train.seq_len=64"]
    run(sft_cfg(src_run, [data], tmp_path / "straight", *extra), progress=False)
    cfg = sft_cfg(src_run, [data], tmp_path / "split", *extra)
    trainer = build(cfg, progress=False)
    for _ in range(3):
        trainer.train_step()
        trainer.step += 1
    trainer.save_checkpoint()
    del trainer                                           # "crash" after the step-3 checkpoint
    (tmp_path / "split" / "metrics.jsonl").write_text("")
    summary = run(cfg, progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert summary["step"] == len(a) and a[3:] == b
    mix = json.loads((tmp_path / "split" / "mixture.json").read_text())
    assert mix == json.loads((tmp_path / "straight" / "mixture.json").read_text())
    assert mix["pretraining_share"] == pytest.approx(0.4, abs=0.05)


def test_load_optimizer_keeps_stage_hyperparameters(source, tmp_path):
    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=8)
    cfg = config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{data}]",
                                        f"out_dir={tmp_path / 'o'}", "train.seq_len=128", "init.load_optimizer=true"])
    assert cfg.train.optim.lr == 1e-5 and cfg.train.schedule.kind == "constant" and cfg.epochs == 2
    assert cfg.max_turns == 8
    trainer = build(cfg, progress=False)
    state = trainer.optimizer.state_dict()["state"]
    assert state and all("exp_avg" in s for s in state.values())   # the pretraining moments
    assert all(g["lr"] == 1e-5 for g in trainer.optimizer.param_groups)


def test_bad_config_is_one_line(source, tmp_path):
    src_run, _ = source
    with pytest.raises(ConfigError, match="data"):
        config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}"])
    with pytest.raises(ConfigError, match="train.steps"):
        config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}", "data=[x]", "train.steps=5"])
    with pytest.raises(ConfigError, match="data: .*no such file"):
        build(sft_cfg(src_run, [tmp_path / "missing.jsonl"], tmp_path / "o"), progress=False)


def test_long_instruction_share(source, tmp_path):
    """Issue 17 item 3: long instructions at a set share of the SFT conversations."""
    src_run, tok_dir = source
    rng = random.Random(7)
    general = make_sft_file(tmp_path / "sft.jsonl", n=40, max_turns=1)
    long = write_jsonl(tmp_path / "long.jsonl", [conversation(rng, 6) for _ in range(8)])   # 6 turns: long
    trainer = build(sft_cfg(src_run, [general], tmp_path / "a", f"long.data=[{long}]", "long.share=0.2"),
                    progress=False)
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["long"]["used"] == 10 and stats["long"]["repeats"] == 2          # 10 / (10 + 40) = 0.2
    assert stats["long"]["share"] == pytest.approx(0.2) and stats["train_conversations"] == 50
    tok = load_tokenizer(tok_dir)
    lengths = sorted(len(c.ids) for c in trainer.objective.convs)
    assert lengths[-10] > 2 * lengths[-11] and stats["long"]["mean_tokens"] > 2 * np.mean(lengths[:40])
    # 1 per mille of 40 rounds up to one long conversation; no share = every long one once
    build(sft_cfg(src_run, [general], tmp_path / "b", f"long.data=[{long}]", "long.share=0.001"), progress=False)
    assert json.loads((tmp_path / "b" / "stats.json").read_text())["long"]["used"] == 1
    build(sft_cfg(src_run, [general], tmp_path / "c", f"long.data=[{long}]"), progress=False)
    assert json.loads((tmp_path / "c" / "stats.json").read_text())["long"]["used"] == 8
    # too long for the context: refused with the key named
    with pytest.raises(ConfigError, match="long.data"):
        build(sft_cfg(src_run, [general], tmp_path / "d", f"long.data=[{long}]", "train.seq_len=40"), progress=False)
    with pytest.raises(ConfigError, match="long.share"):
        sft_cfg(src_run, [general], tmp_path / "e", f"long.data=[{long}]", "long.share=1.5")
    assert tok.token_to_id("<|im_start|>") is not None


def test_packing_off_puts_one_conversation_per_row(source, tmp_path):
    """Index-32K's packing ablation in SFT: `packing: false` gives each conversation a row of its
    own (the rest padding, attention and positions as in a packed row), the same conversations in
    the same order per epoch, so more rows and steps than packed."""
    src_run, _ = source
    general = make_sft_file(tmp_path / "sft.jsonl", n=30, max_turns=1)
    packed = build(sft_cfg(src_run, [general], tmp_path / "p", "epochs=2"), progress=False)
    single = build(sft_cfg(src_run, [general], tmp_path / "s", "epochs=2", "packing=false"), progress=False)
    rows_p, rows_s = packed.objective.rows, single.objective.rows
    assert all(len(r) == 1 for r in rows_s) and len(rows_s) == 60 and len(rows_p) < 30
    assert [i for r in rows_p for i in r] == [r[0] for r in rows_s]            # same order, epoch by epoch
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert stats["packing"] is False and stats["rows"] == 60 and stats["planned_steps"] == 15   # 60 rows / 4
    row = build_row(single.objective.convs, rows_s[0], 128, pad_id=1)
    n = len(single.objective.convs[rows_s[0][0]].ids)
    assert (row["doc_ids"][:n] == 0).all() and (row["doc_ids"][n:] == -1).all() and (row["labels"][n:] == -100).all()
