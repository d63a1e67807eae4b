import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge import checkpoint as ckpt
from lmforge.stages.pretrain import PretrainConfig, build, run
from lmforge.train.trainer import TrainingDiverged

TINY = ["model.vocab_size=128", "model.d_model=32", "model.n_layers=2", "model.n_heads=4",
        "model.n_kv_heads=2", "model.max_seq_len=64", "train.seq_len=32", "train.micro_batch_size=2",
        "train.grad_accum=2", "train.optim.lr=3e-3", "train.schedule.kind=wsd",
        "train.schedule.warmup_steps=2", "train.eval_batches=2"]


def cfg_for(data, out, *extra):
    return config.load(PretrainConfig, None, [f"data={data}", f"out_dir={out}", *TINY, *extra])


def losses(out):
    lines = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


def test_exact_resume(token_data, tmp_path):
    straight = tmp_path / "straight"
    run(cfg_for(token_data, straight, "train.steps=8", "train.ckpt_every=4"), progress=False)
    split = tmp_path / "split"
    cfg = cfg_for(token_data, split, "train.steps=8", "train.ckpt_every=4")
    trainer = build(cfg, progress=False)
    for _ in range(4):
        trainer.train_step()
        trainer.step += 1
    trainer.save_checkpoint()
    del trainer  # "crash" after the checkpoint at step 4
    (split / "metrics.jsonl").write_text("")  # the half run logged nothing we keep
    summary = run(cfg, progress=False)
    assert summary["step"] == 8
    a, b = losses(straight), losses(split)
    assert len(a) == 8 and len(b) == 4
    assert a[4:] == b  # bit-identical after resume


def test_metrics_and_validation(token_data, tmp_path):
    out = tmp_path / "run"
    summary = run(cfg_for(token_data, out, "train.steps=6", "train.eval_every=3"), progress=False)
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    step3 = [r for r in recs if r["step"] == 3][0]
    for key in ("loss", "lr", "grad_norm", "head_grad_share", "tokens_per_s", "val/prose", "val/code"):
        assert key in step3 and math.isfinite(step3[key])
    assert 0 < step3["head_grad_share"] <= 1
    assert "val/mean" in summary and (out / "DONE.json").exists()
    assert run(cfg_for(token_data, out, "train.steps=6"), progress=False)["skipped"]


def test_loss_falls(token_data, tmp_path):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=40", "train.schedule.kind=constant", "train.optim.lr=1e-2"), progress=False)
    ls = losses(out)
    assert sum(ls[-5:]) / 5 < 0.6 * sum(ls[:5]) / 5


def test_grad_accumulation_matches_big_batch(token_data, tmp_path):
    a = run(cfg_for(token_data, tmp_path / "a", "train.steps=3", "train.micro_batch_size=4", "train.grad_accum=1"),
            progress=False)
    b = run(cfg_for(token_data, tmp_path / "b", "train.steps=3", "train.micro_batch_size=1", "train.grad_accum=4"),
            progress=False)
    # Same rows in the same order; the loss is normalised by the step's total token count.
    assert losses(tmp_path / "a") == pytest.approx(losses(tmp_path / "b"), rel=1e-4)


def test_non_finite_steps_skipped_then_stop(token_data, tmp_path):
    out = tmp_path / "run"
    trainer = build(cfg_for(token_data, out, "train.steps=20", "train.max_bad_steps=3", "train.ckpt_every=2"),
                    progress=False)
    real_loss = trainer.objective.loss
    calls = {"n": 0}

    def flaky(model, batch):
        calls["n"] += 1
        loss, m = real_loss(model, batch)
        step = trainer.step
        return (loss * float("nan"), m) if step == 2 or step >= 5 else (loss, m)

    trainer.objective.loss = flaky
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row"):
        trainer.fit()
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in recs] == [False, False, True, False, False, True, True, True]
    assert trainer.bad_steps == 4
    # skipped steps leave weights untouched, so the step-6 checkpoint is still a good one
    assert ckpt.latest(out / "checkpoints").name == "step-6"
    # the skipped step changed no weight
    w = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.bad_in_a_row = 0
    trainer.train_step()
    assert all(torch.equal(w[k], v) for k, v in trainer.model.state_dict().items())


def test_truncated_checkpoint_is_skipped(token_data, tmp_path):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=4", "train.ckpt_every=2", "train.keep_last=5"), progress=False)
    d = out / "checkpoints"
    assert [p.name for p in ckpt.list_complete(d)] == ["step-2", "step-4"]
    f = d / "step-4" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])  # truncated file
    # a finished save with a truncated file is corrupt (named, with a warning), not an unfinished
    # save: the resume skips it for step-2 (issue 33: it used to pass silently for one)
    assert not ckpt.is_complete(d / "step-4")
    (d / "step-6").mkdir()  # a folder without its meta.json: an unfinished save, never used
    (d / "step-6" / "model.safetensors").write_bytes(b"x")
    assert ckpt.latest(d).name == "step-4"
    (out / "DONE.json").unlink()
    trainer = build(cfg_for(token_data, out, "train.steps=4", "train.ckpt_every=2", "train.keep_last=5"),
                    progress=False)
    assert trainer.resume_latest().name == "step-2" and trainer.step == 2


def test_resume_refuses_other_data(token_data, tmp_path):
    from conftest import make_token_dataset
    out = tmp_path / "run"
    cfg = cfg_for(token_data, out, "train.steps=4", "train.ckpt_every=2")
    trainer = build(cfg, progress=False)
    trainer.train_step(); trainer.step += 1
    trainer.save_checkpoint()
    other = make_token_dataset(tmp_path / "other", n_docs=30, seed=5)
    with pytest.raises(ValueError, match="other data"):
        run(cfg_for(other, out, "train.steps=4"), progress=False)


def test_init_from_weights_fresh_schedule(token_data, tmp_path):
    src = tmp_path / "src"
    run(cfg_for(token_data, src, "train.steps=3"), progress=False)
    dst = tmp_path / "dst"
    cfg = cfg_for(token_data, dst, "train.steps=2", f"init.from_checkpoint={src}", "init.load_optimizer=true")
    trainer = build(cfg, progress=False)
    trainer.init_from(ckpt.latest(src / "checkpoints"), load_optimizer=True)
    assert trainer.step == 0
    assert trainer.objective.loader.state_dict()["sampler"] == {"epoch": 0, "pos": 0}
    from safetensors.torch import load_file
    saved = load_file(str(ckpt.latest(src / "checkpoints") / "model.safetensors"))
    for k, v in trainer.model.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k])
    assert trainer.optimizer.state  # AdamW moments came along


def test_bad_config_refused_before_work(tmp_path, token_data):
    with pytest.raises(ConfigError, match="train.seq_len"):
        cfg_for(token_data, tmp_path / "x", "train.seq_len=128")
    with pytest.raises(ConfigError, match="data"):
        config.load(PretrainConfig, None, [])
    cfg = cfg_for(tmp_path / "missing", tmp_path / "x")
    with pytest.raises(ConfigError, match="data: .*(no meta.json|no such file)"):   # the stage's input check
        run(cfg, progress=False)
    assert not (tmp_path / "x").exists()


def test_kill_9_then_resume_matches_straight_run(token_data, tmp_path):
    """`lmforge pretrain` killed with SIGKILL mid-run resumes from its last complete checkpoint."""
    args = [f"data={token_data}", *TINY, "train.steps=30", "train.ckpt_every=3", "train.keep_last=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(out):
        return [sys.executable, "-m", "lmforge", "pretrain", "--quiet", "--set", f"out_dir={out}",
                *sum((["--set", a] for a in args), [])]

    straight = tmp_path / "straight"
    subprocess.run(cmd(straight), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = ckpt.latest(killed / "checkpoints")
        if found is not None and int(found.name.split("-")[1]) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "DONE.json").exists()
    done = subprocess.run(cmd(killed), env=env, check=True, capture_output=True, text=True)
    assert "resuming from" in done.stdout
    assert losses(killed) == losses(straight)


def test_init_takes_the_checkpoint_architecture_and_refuses_a_different_one(token_data, tmp_path):
    run(cfg_for(token_data, tmp_path / "a", "train.steps=2", "model.n_layers=3"))
    b = config.load(PretrainConfig, None, [f"data={token_data}", f"out_dir={tmp_path / 'b'}", "train.steps=2",
                                           "train.seq_len=32", "train.micro_batch_size=2",
                                           f"init.from_checkpoint={tmp_path / 'a'}"])
    run(b)   # model left unset: 3 layers from the checkpoint
    from lmforge.model.load import load_checkpoint
    model, _ = load_checkpoint(tmp_path / "b")
    assert model.cfg.n_layers == 3
    bad = cfg_for(token_data, tmp_path / "c", "train.steps=2", "model.n_layers=2",
                  f"init.from_checkpoint={tmp_path / 'a'}")
    with pytest.raises(ConfigError, match="n_layers"):
        run(bad)


def test_extended_vocabulary_gets_mean_initialised_rows(tmp_path):
    from safetensors.torch import load_file
    from lmforge.model.load import load_checkpoint
    from conftest import make_token_dataset
    small, big = tmp_path / "small", tmp_path / "big"
    make_token_dataset(small, vocab=100)
    make_token_dataset(big, vocab=120)
    run(cfg_for(small, tmp_path / "a", "train.steps=2", "model.vocab_size=100"))
    b = config.load(PretrainConfig, None, [f"data={big}", f"out_dir={tmp_path / 'b'}", "train.steps=1",
                                           "train.seq_len=32", "train.micro_batch_size=2", "train.optim.lr=0",
                                           f"init.from_checkpoint={tmp_path / 'a'}"])
    run(b)
    old = load_file(str(ckpt.latest(tmp_path / "a" / "checkpoints") / "model.safetensors"))["embed_tokens.weight"]
    model, _ = load_checkpoint(tmp_path / "b")
    new = model.embed_tokens.weight.detach()
    assert model.cfg.vocab_size == 120
    torch.testing.assert_close(new[:100], old[:100])
    torch.testing.assert_close(new[100:120], old[:100].mean(0).expand(20, -1))


def test_validation_reports_bits_per_byte(tmp_path):
    """Shards that name their tokenizer get val_bpb/<domain> = loss / (bytes/token) / ln 2."""
    from lmforge.eval.perplexity import bytes_per_token
    from lmforge.shards import ShardWriter, TokenDataset, write_meta
    from lmforge.tokenizer.train import load_tokenizer, save_tokenizer, train_bpe, vocab_len
    texts = [f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog", "hen", "owl"] * 10)]
    tok = train_bpe(texts, vocab_size=300, special_tokens=["<|endoftext|>"], min_frequency=1)
    save_tokenizer(tok, tmp_path / "tok", special_tokens=["<|endoftext|>"], bos_token=None,
                   eos_token="<|endoftext|>", pad_token=None, chat_template=None)
    tok = load_tokenizer(tmp_path / "tok")
    vocab, eos = vocab_len(tok), tok.token_to_id("<|endoftext|>")
    shards = []
    for split, part in (("train", texts[:32]), ("val", texts[32:])):
        w = ShardWriter(tmp_path / "data", f"{split}-00000", vocab, split)
        for t in part:
            w.add(tok.encode(t).ids + [eos])
        shards.append(w.close())
    write_meta(tmp_path / "data", shards, vocab, ["prose"], eos, extra={"tokenizer": str(tmp_path / "tok")})
    run(cfg_for(tmp_path / "data", tmp_path / "run", "train.steps=2", f"model.vocab_size={vocab}"))
    last = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "val/prose" in l][-1]
    bpt = bytes_per_token(TokenDataset(tmp_path / "data", "val"), tok, 64)["prose"]
    assert 1.0 < bpt < 10.0
    assert last["val_bpb/prose"] == pytest.approx(last["val/prose"] / bpt / math.log(2))


def test_callbacks_are_called_in_order_and_their_state_is_checkpointed(token_data, tmp_path):
    """Issue 29: what the loop does around its steps is callbacks, each hook at its point of
    fit (the trainer's own first: a step's checkpoint exists when a later callback's
    on_step_end runs, the final one before on_train_end's); BatchGrowth's state is in
    trainer.json as `growth`; the objective declares the hooks the loop calls."""
    from lmforge.train.callbacks import Callback
    from lmforge.train.objectives.base import Objective

    seen = []

    class Recorder(Callback):
        def on_train_start(self, trainer):
            seen.append(("start", trainer.step))

        def on_eval(self, trainer, record):
            seen.append(("eval", record["step"], "val/mean" in record))

        def on_log(self, trainer, record):
            seen.append(("log", record["step"]))

        def on_step_end(self, trainer, record):
            seen.append(("end", record["step"], len(ckpt.list_complete(trainer.ckpt_dir))))

        def on_train_end(self, trainer, summary):
            seen.append(("done", Path(summary["checkpoint"]).name))

    trainer = build(cfg_for(token_data, tmp_path / "r", "train.steps=4", "train.eval_every=2", "train.ckpt_every=2"),
                    progress=False)
    trainer.callbacks.append(Recorder())
    assert isinstance(trainer.objective, Objective)
    summary = trainer.fit()
    assert seen == [("start", 0), ("log", 1), ("end", 1, 0), ("eval", 2, True), ("log", 2), ("end", 2, 1),
                    ("log", 3), ("end", 3, 1), ("log", 4), ("end", 4, 1), ("log", 4), ("done", "step-4")]
    state = ckpt.load_trainer_state(Path(summary["checkpoint"]))
    assert state["growth"] == {"mult": 1, "best": None, "since_best": 0}


def test_resume_from_the_final_checkpoint_keeps_the_final_loss(token_data, tmp_path):
    """A run killed after its last checkpoint but before DONE.json trains no step on resume;
    its summary still carries the final train loss (it was None: the whole-recipe soak saw
    grown's DONE.json lose it)."""
    out = tmp_path / "run"
    cfg = cfg_for(token_data, out, "train.steps=4", "train.ckpt_every=2")
    first = run(cfg, progress=False)
    (out / "DONE.json").unlink()               # the kill came after the final checkpoint
    resumed = run(cfg, progress=False)
    assert resumed["step"] == 4 and first["final_loss"] is not None
    assert resumed["final_loss"] == first["final_loss"]
    assert len(losses(out)) == 4               # no step logged twice
