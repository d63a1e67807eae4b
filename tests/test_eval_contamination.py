"""Contamination: a tiny model trained on a planted test split is flagged by the perplexity
gap (Skywork) and by n-gram overlap; without the plant it is not."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.eval.contamination import (item_text, load_texts, ngram_hashes, ngram_overlap_text,
                                        ngram_overlap_tokens)
from lmforge.stages.eval import EvalConfig, run as run_eval
from lmforge.shards import ShardWriter, TokenDataset, write_dataset, write_meta
from lmforge.tokenizer.train import load_tokenizer, save_tokenizer, train_bpe, vocab_len
from lmforge.stages.pretrain import PretrainConfig, run as pretrain

SYL = "ka lo mi ne tu ra si po ve da gu fe zo bi".split()


STEPS = 300


def split(seed, n=16):
    """A made-up benchmark: each item pairs two random words, so only memorising helps."""
    r = random.Random(seed)
    word = lambda: "".join(r.choice(SYL) for _ in range(3))  # noqa: E731
    return [{"question": f"Q: {word()}?", "answer": word()} for _ in range(n)]


TRAIN, TEST, REF, GENERAL = split(1), split(2), split(3), split(4, 100)


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def train_model(tmp: Path, plant: bool) -> Path:
    texts = [item_text(r) for r in TRAIN + TEST + REF]
    tok = train_bpe(texts, vocab_size=200, special_tokens=["<|endoftext|>"], min_frequency=1)
    save_tokenizer(tok, tmp / "tok", special_tokens=["<|endoftext|>"], bos_token=None,
                   eos_token="<|endoftext|>", pad_token=None, chat_template=None)
    tok = load_tokenizer(tmp / "tok")
    vocab, eos = vocab_len(tok), tok.token_to_id("<|endoftext|>")
    w = ShardWriter(tmp / "data", "train-00000", vocab, "train")
    # general text of the same kind (so unseen items all look alike), the train split, the plant
    docs = [item_text(r) for r in GENERAL] + [item_text(r) for r in TRAIN] * 2 + ([item_text(r) for r in TEST] * 8 if plant else [])
    for t in docs:
        w.add(tok.encode(t).ids + [eos])
    write_meta(tmp / "data", [w.close()], vocab, ["bench"], eos, extra={"tokenizer": str(tmp / "tok/tokenizer.json")})
    cfg = config.load(PretrainConfig, None, [
        f"data={tmp / 'data'}", f"out_dir={tmp / 'run'}", f"model.vocab_size={vocab}", "model.d_model=64",
        "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.max_seq_len=64", "train.seq_len=64",
        "train.micro_batch_size=8", "train.grad_accum=1", "train.optim.lr=1e-2", "train.eval_every=0",
        "train.schedule.kind=constant", f"train.steps={STEPS}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest and immune to a busy machine
    try:
        torch.manual_seed(0)
        pretrain(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


@pytest.mark.parametrize("plant", [True, False])
def test_planted_test_split_is_flagged(tmp_path, plant):
    run_dir = train_model(tmp_path, plant)
    # the look-alike set sits beside the test file as TEST_reference.jsonl: found without being named
    bench = {k: write_jsonl(tmp_path / f"{k}.jsonl", v)
             for k, v in (("train", TRAIN), ("test", TEST), ("test_reference", REF))}
    cfg = config.load(EvalConfig, data={
        "checkpoint": str(run_dir), "out_dir": str(tmp_path / "eval"),
        "contamination": {"ppl_gap_threshold": 0.1, "ngram": 20, "training_data": [str(tmp_path / "data")],
                          "benchmarks": [{"name": "made-up", "test": str(bench["test"]),
                                          "train": str(bench["train"])}]}})
    run_eval(cfg, progress=False)
    res = json.loads((tmp_path / "eval" / "eval.json").read_text())["contamination"]["made-up"]
    assert res["reference_auto"] and res["reference"] == str(bench["test_reference"])
    gap = res["ppl"]["gap"]
    sp = res["ppl"]["splits"]
    ngram = res["ngram"][str(tmp_path / "data")]
    assert res["ppl"]["flagged"] is plant, gap
    if plant:
        assert gap > 0.3 and ngram["fraction"] == 1.0
    else:
        assert abs(gap) < 0.1 and ngram["fraction"] == 0.0
        assert sp["train"]["loss"] < sp["test"]["loss"]  # the train split it did see is easier
    assert ngram["too_short"] == 0
    assert "| made-up |" in (tmp_path / "eval" / "eval.md").read_text()


def test_ngram_overlap_tokens_respects_documents(tmp_path):
    # docs: [1..20], [30..40]; an n-gram spanning the boundary between them must not count
    write_dataset(tmp_path, [list(range(1, 21)), list(range(30, 41))], vocab_size=64)
    ds = TokenDataset(tmp_path, "train")
    items = [list(range(5, 10)),          # inside doc 0: hit
             [19, 20, 30, 31, 32],        # only across the boundary: no hit
             [33, 34, 35, 36, 37, 50],    # contains 33..37: hit
             [1, 2, 3],                   # shorter than n: counted apart
             [7, 6, 5, 4, 3]]             # reversed: no hit
    for chunk in (4, 1 << 20):            # chunked streaming finds the same windows
        r = ngram_overlap_tokens(ds, items, n=5, chunk=chunk)
        assert r["contaminated_items"] == [0, 2] and r["too_short"] == 1
        assert r["fraction"] == pytest.approx(2 / 4)


def test_ngram_overlap_text_and_hashes():
    train = ["The quick brown fox jumps over the lazy dog near the river bank today.",
             "Completely unrelated words appear in this training document only."]
    bench = ["the QUICK brown fox, jumps over!", "a fox jumps over the quick brown", "too short"]
    r = ngram_overlap_text(train, bench, n=5)
    assert r["contaminated_items"] == [0] and r["too_short"] == 1 and r["fraction"] == 0.5
    h = ngram_hashes(np.array([1, 2, 3, 1, 2, 3]), 3)
    assert h[0] == h[3] and len(set(h.tolist())) == 3


def test_load_texts_reports_bad_lines(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text('{"text": "a"}\n{"question": "q", "choices": ["x", "y"], "answer": 1}\n{"foo": 1}\nnot json\n')
    texts, errors = load_texts(f)
    assert texts == ["a", "q\nAnswer: y"]
    assert [e.split(": ")[0] for e in errors] == [f"{f}:3", f"{f}:4"]


def test_every_mcq_set_with_a_reference_set_is_checked(tmp_path):
    """contamination.auto: an MCQ set given for evaluation is also a contamination benchmark when
    the corpus wrote its held-out look-alike set beside it; a set without one is not."""
    from lmforge.stages.eval import contamination_benchmarks
    item = {"question": "q?", "choices": ["a", "b", "c", "d"], "answer": 0}
    for name in ("mcq_quiz.jsonl", "mcq_quiz_reference.jsonl", "mcq_poems.jsonl"):
        write_jsonl(tmp_path / name, [item])
    cfg = config.load(EvalConfig, data={"checkpoint": "x", "mcq": {"corpus": str(tmp_path)}})
    got = {b.name: b.reference_path() for b in contamination_benchmarks(cfg)}
    assert got == {"quiz": str(tmp_path / "mcq_quiz_reference.jsonl")}
    off = config.load(EvalConfig, data={"checkpoint": "x", "mcq": {"corpus": str(tmp_path)},
                                        "contamination": {"auto": False}})
    assert contamination_benchmarks(off) == []


def test_text_loss_puts_one_bos_before_a_text_with_a_bos_adding_tokenizer(tmp_path):
    """A Hugging Face tokenizer whose post-processor adds a BOS (Llama 3's) must not give the
    perplexity-gap texts a second BOS after the one text_loss puts first."""
    from tokenizers import processors

    from lmforge.eval.contamination import text_loss
    from lmforge.model import ModelConfig, Transformer

    texts = [p.read_text()[:400] for p in sorted(Path(json.__file__).parent.glob("*.py"))[:3]]
    tok = train_bpe(texts * 3, vocab_size=300, special_tokens=["<|endoftext|>"])
    bos = tok.token_to_id("<|endoftext|>")
    assert bos is not None
    torch.manual_seed(0)
    model = Transformer(config.from_dict(ModelConfig, {"preset": "tiny", "vocab_size": 320, "max_seq_len": 512}))
    plain = text_loss(model, tok, texts, 512, bos_id=bos)
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    assert tok.encode("x").ids[0] == bos                     # the tokenizer now adds a BOS itself
    with_bos = text_loss(model, tok, texts, 512, bos_id=bos)
    assert with_bos["tokens"] == plain["tokens"] and abs(with_bos["nats"] - plain["nats"]) < 1e-6, (plain, with_bos)
