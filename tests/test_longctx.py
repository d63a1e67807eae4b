"""Long-context continued pretraining (Index-1.9B-32K) on the tiny model: new RoPE base and
length over the checkpoint's config, long-document subset, resume/skip, bad input, loading
the result for long SFT; middle truncation of over-long prompts."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge import config
from lmforge.config import ConfigError
from lmforge.truncate import truncate_middle
from lmforge.model.load import load_checkpoint
from lmforge.shards import TokenDataset
from lmforge.stages.longctx import LongCtxConfig, doc_lengths, run
from lmforge.train.objectives.lm import LMObjective

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_helpers import tiny_run  # noqa: E402

ARGS = ["model.rope_theta=40000", "train.seq_len=128", "train.micro_batch_size=2", "train.steps=4",
        "train.ckpt_every=2", "train.keep_last=3", "train.eval_batches=1", "train.optim.lr=1e-3",
        "train.schedule.warmup_steps=1", "min_doc_tokens=38"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.set_num_threads(2)
    return tiny_run(tmp_path_factory.mktemp("src"), steps=2)


def cfg_for(source, out, *extra) -> LongCtxConfig:
    return config.load(LongCtxConfig, None, [f"data={source.parent / 'tokens'}", f"init.from_checkpoint={source}",
                                             f"out_dir={out}", *ARGS, *extra])


def test_defaults_are_index_32k():
    cfg = config.load(LongCtxConfig, None, ["data=x", "init.from_checkpoint=y", "train.optim.weight_decay=0.0"])
    assert cfg.model.rope_theta == 320000.0 and cfg.train.seq_len == 32768
    assert cfg.train.optim.lr == 1e-5 and cfg.train.schedule.kind == "cosine" and cfg.train.schedule.warmup_steps > 0
    assert cfg.train.optim.weight_decay == 0.0 and cfg.min_tokens == 32768 // 4


@pytest.fixture(scope="module")
def finished(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("long") / "run"
    summary = run(cfg_for(source, out), progress=False)
    return out, summary


def test_longctx_run(source, finished):
    out, summary = finished
    model, step_dir = load_checkpoint(out)
    assert step_dir.name == "step-4"
    # the new RoPE base and length over the source's config; the shape unchanged
    assert (model.cfg.rope_theta, model.cfg.max_seq_len) == (40000.0, 128)
    assert (summary["rope_theta"], summary["max_seq_len"]) == (40000.0, 128)
    src, _ = load_checkpoint(source)
    assert (src.cfg.rope_theta, src.cfg.max_seq_len) == (10000.0, 64) and src.cfg.d_model == model.cfg.d_model
    # started from the source's weights, then trained
    assert not torch.equal(model.embed_tokens.weight, src.embed_tokens.weight)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(1e-3)            # warmup 1: the peak from step 0, then cosine down
    assert (out / "tokenizer" / "tokenizer.json").is_file() and (out / "DONE.json").is_file()
    # length report: the subset is exactly the documents of >= 38 tokens
    rep = json.loads((out / "lengths.json").read_text())
    lengths = doc_lengths(TokenDataset(source.parent / "tokens", "train"))
    assert rep["all"]["docs"] == len(lengths) and rep["used"]["docs"] == int((lengths >= 38).sum())
    assert sum(rep["used"]["histogram"]) == rep["used"]["docs"] and rep["used"]["tokens"] == int(
        lengths[lengths >= 38].sum())
    assert (out / "lengths.png").stat().st_size > 1000 and "| used |" in (out / "lengths.md").read_text()
    # rerun: skipped
    again = run(cfg_for(source, out), progress=False)
    assert again["skipped"] and again["step"] == 4


def test_objective_uses_long_docs_packed_with_resets(source):
    ds = TokenDataset(source.parent / "tokens", "train")
    lengths = doc_lengths(ds)
    ids = (lengths >= 38).nonzero()[0]
    obj = LMObjective(str(source.parent / "tokens"), 128, 2, 0, doc_subset=ids)
    b = obj.next_batch()
    row_docs, pos = b["doc_ids"][0], b["position_ids"][0]
    assert row_docs.max() >= 2                        # several documents packed in one row
    starts = (row_docs[1:] != row_docs[:-1]).nonzero()[:, 0] + 1
    assert all(pos[s] == 0 for s in starts.tolist())  # positions reset at each document
    kept = {tuple(ds.doc(i).tolist()) for i in ids}
    first_doc = b["input_ids"][0][: int(starts[0])].tolist()
    assert any(d[:len(first_doc)] == tuple(first_doc) or d[-len(first_doc):] == tuple(first_doc) for d in kept)


def test_interrupted_run_resumes_to_the_same_weights(source, finished, tmp_path):
    out, _ = finished
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    (cut / "DONE.json").unlink()
    shutil.rmtree(cut / "checkpoints" / "step-4")        # killed after the step-2 checkpoint
    summary = run(cfg_for(source, cut), progress=False)
    assert summary["step"] == 4 and not summary.get("skipped")
    a = load_file(str(out / "checkpoints" / "step-4" / "model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "step-4" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_long_checkpoint_loads_for_long_sft(finished):
    pytest.importorskip("lmforge.stages.sft")
    from lmforge.stagekit.source import InitConfig
    from lmforge.stagekit.source import load_source
    out, _ = finished
    src = load_source(InitConfig(from_checkpoint=str(out)), "")
    assert (src.model_cfg.max_seq_len, src.model_cfg.rope_theta) == (128, 40000.0)


@pytest.mark.parametrize("extra,key", [
    (["model.rope_theta=1.0"], "model.rope_theta"),
    (["model.rope_theta=3"], "model.rope_theta"),                 # slowest wavelength < 128 positions
    (["model.max_seq_len=64"], "train.seq_len"),                   # 128 > 64
    (["model.max_seq_len=33554432"], "model.max_seq_len"),         # beyond float32 RoPE positions
    (["min_doc_tokens=1000"], "min_doc_tokens"),
    (["domains=[poetry]"], "domains"),
    (["init.from_checkpoint=/nonexistent"], "init.from_checkpoint"),
])
def test_bad_input_is_one_line_config_error_before_work(source, tmp_path, extra, key):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match=rf"^{key}: ") as e:
        run(cfg_for(source, out, *extra), progress=False)
    assert "\n" not in str(e.value) and not out.exists()


def test_missing_checkpoint_key_refused_at_load():
    with pytest.raises(ConfigError, match=r"init\.from_checkpoint"):
        config.load(LongCtxConfig, None, ["data=x"])


def test_cli_registers_longctx_and_needle(source, tmp_path):
    from lmforge.cli import build_parser
    args = build_parser(["longctx"]).parse_args(["longctx", "--set", "data=x"])
    assert callable(args.func)
    assert callable(build_parser(["needle"]).parse_args(["needle"]).func)


# ------------------------------------------------------------------ middle truncation


def test_truncate_middle_keeps_first_and_last_halves():
    ids = list(range(100))
    assert truncate_middle(ids, 100) == ids and truncate_middle(ids, 200) == ids
    got = truncate_middle(ids, 10)
    assert got == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert truncate_middle(ids, 7) == [0, 1, 2, 3, 97, 98, 99]      # odd: the extra token goes to the head
    assert truncate_middle("abcdefgh", 4) == ["a", "b", "g", "h"]  # any sequence
    with pytest.raises(ValueError):
        truncate_middle(ids, -1)


def test_fit_to_window_keeps_the_continuation():
    from lmforge.truncate import fit_to_window
    prompt = list(range(20))
    assert fit_to_window(prompt, 30, keep_after=5) == prompt
    got = fit_to_window(prompt, 12, keep_after=4)        # 8 prompt tokens: first 4 and last 4
    assert got == [0, 1, 2, 3, 16, 17, 18, 19]
    with pytest.raises(ValueError, match="no room"):
        fit_to_window(prompt, 4, keep_after=4)


# ------------------------------------------------------------------ ablation switches (issue 17 item 3)


def test_seq_warmup_schedule_and_exact_resume(source):
    from lmforge.train.seqlen import SeqWarmupConfig

    w = SeqWarmupConfig(start=32, steps=4, multiple=16)
    assert [w.length_at(s, 128) for s in range(6)] == [32, 48, 80, 96, 128, 128]
    assert [w.rows_at(s, 128, 2) for s in (0, 1, 4)] == [8, 5, 2]   # ~256 tokens per micro-batch
    data = str(source.parent / "tokens")
    ids = (doc_lengths(TokenDataset(data, "train")) >= 38).nonzero()[0]

    def objective():
        return LMObjective(data, 128, 2, 0, doc_subset=ids, seq_warmup=w)

    def batches(obj, steps):
        out = []
        for s in steps:
            obj.on_step(s)
            out.append(obj.next_batch())
        return out

    whole = batches(objective(), range(7))
    assert [tuple(b["input_ids"].shape) for b in whole[:5]] == [(8, 32), (5, 48), (3, 80), (2, 96), (2, 128)]
    first = objective()
    batches(first, range(3))
    resumed = objective()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))   # as a checkpoint stores it
    for a, b in zip(whole[3:], batches(resumed, range(3, 7))):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert objective().fingerprint() != LMObjective(data, 128, 2, 0, doc_subset=ids).fingerprint()


def test_seq_warmup_run_logs_growing_rows(source, tmp_path):
    out = tmp_path / "warm"
    run(cfg_for(source, out, "seq_warmup.start=32", "seq_warmup.steps=3", "seq_warmup.multiple=32"), progress=False)
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in l]
    assert [r["tokens"] for r in recs] == [256, 256, 2 * 96, 256]        # rows x length per step
    with pytest.raises(ConfigError, match="seq_warmup.start"):
        cfg_for(source, tmp_path / "x", "seq_warmup.start=128", "seq_warmup.steps=2")


def test_packing_off_puts_one_document_per_row(source, tmp_path):
    data = str(source.parent / "tokens")
    ds = TokenDataset(data, "train")
    obj = LMObjective(data, 128, 4, 0, packing=False)
    docs = {tuple(ds.doc(i).tolist()) for i in range(ds.n_docs)}
    for _ in range(5):
        b = obj.next_batch()
        for row in range(b["input_ids"].shape[0]):
            seg = b["doc_ids"][row]
            real = seg >= 0
            assert set(seg[real].tolist()) == {0}                     # one document (piece) per row
            assert bool(real[: int(real.sum())].all())                # padding only at the end
            toks = tuple(b["input_ids"][row][real].tolist())
            assert any(toks == d[k:k + len(toks)] for d in docs for k in range(0, len(d), 128))
            assert bool((b["labels"][row][~real] == -100).all())
    packed = LMObjective(data, 128, 4, 0).next_batch()
    assert int((packed["doc_ids"] >= 0).sum()) > int((b["doc_ids"] >= 0).sum())
    out = tmp_path / "nopack"
    summary = run(cfg_for(source, out, "packing=false"), progress=False)
    assert summary["step"] == 4 and json.loads((out / "config.json").read_text())["packing"] is False


def test_longctx_effect_compares_the_unextended_source_past_its_window(source, finished, tmp_path):
    """The effect: held-out windows of the new length, loss past the source's window, the
    source run there with its own RoPE (before) vs the trained long model (after)."""
    import dataclasses
    import inspect
    import textwrap

    import numpy as np

    from lmforge.eval.effect import mean_target_nll
    from lmforge.model import Transformer
    from lmforge.model.load import load_weights
    from lmforge.stages.longctx import long_context_effect
    from test_eval_helpers import make_text_dataset

    out, _ = finished
    # real, mostly unique text long enough for windows of 128 tokens: stdlib source
    texts = [textwrap.dedent(inspect.getsource(m)) for m in (json.decoder, shutil, subprocess)]
    data = make_text_dataset(tmp_path / "tokens", source / "tokenizer", {"prose": texts[:1]},
                             val={"prose": texts[1:], "code": texts[:1]})
    long, step_dir = load_checkpoint(out)
    src_step = sorted((source / "checkpoints").glob("step-*"))[-1]
    e = long_context_effect(cfg_for(source, out, f"data={data}"), src_step, long)
    assert e["n"] >= 2 and "positions 64-128" in e["metric"] and not e["higher_is_better"]
    src, _ = load_checkpoint(source)
    wide = Transformer(dataclasses.replace(src.cfg, max_seq_len=128))
    load_weights(source, wide)
    val = TokenDataset(data, "val")
    wins = [np.asarray(val.doc(i), dtype=np.int64)[a:a + 128] for i in range(val.n_docs)
            for a in range(0, max(len(val.doc(i)) - 128, 0) + 1, 128)]
    wins = [w for w in wins if len(w) > 64 + 16]
    wins = [wins[k] for k in np.linspace(0, len(wins) - 1, min(len(wins), 48)).round().astype(int)]
    items = [(w, np.arange(len(w)) >= 64) for w in wins]
    assert e["n"] == len(items)
    assert e["before"] == pytest.approx(float(mean_target_nll(wide, items).mean()), rel=1e-5)
    assert e["after"] == pytest.approx(float(mean_target_nll(long, items).mean()), rel=1e-5)
    # the un-extended source really is the source: its own positions agree with the wide copy
    x = torch.as_tensor(wins[0][:64])[None]
    assert torch.allclose(src(x), wide(x), atol=1e-5)
