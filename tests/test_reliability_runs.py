"""Nothing lost, nothing silent (issue 16), training side: metrics never duplicated, prune
that survives a kill, resume that refuses a changed model, a corrupt latest checkpoint falls
back to the previous one, full/read-only disks end in one line, and the alignment and eval
stages end with a one-line account (or an error when nothing is usable)."""
import errno
import json
import shutil
from pathlib import Path

import pytest

from lmforge import checkpoint as ckpt
from lmforge import config
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.cli.errors import DataError
from lmforge.stages.pretrain import PretrainConfig, run
from test_trainer import TINY

BASE = [*TINY, "train.ckpt_every=2", "train.keep_last=2"]


def cfg_for(data, out, *extra):
    return config.load(PretrainConfig, None, [f"data={data}", f"out_dir={out}", *BASE, *extra])


def metrics(out) -> list[dict]:
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def train_records(out) -> list[dict]:
    return [r for r in metrics(out) if "loss" in r]


def curve(records) -> list[tuple]:
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in records]


def cli_args(data, out, *extra) -> list[str]:
    return ["pretrain", "--quiet", *sum((["--set", a] for a in [f"data={data}", f"out_dir={out}", *BASE, *extra]), [])]


def run_cli(capsys, argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ metrics


def test_fresh_start_rewrites_metrics_left_by_a_kill_before_the_first_checkpoint(token_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # a killed first attempt logged steps 1-3 (and half a line) but saved no checkpoint
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3))
                                       + '{"step": 4, "lo')
    run(cfg_for(token_data, out, "train.steps=4"), progress=False)
    steps = [r["step"] for r in train_records(out)]
    assert steps == [1, 2, 3, 4]
    assert all(r["loss"] != 9.0 for r in train_records(out))


def test_resume_from_the_final_checkpoint_logs_the_final_eval_once(token_data, tmp_path):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=4"), progress=False)
    before = metrics(out)
    (out / "DONE.json").unlink()           # killed after the last checkpoint, before DONE.json
    run(cfg_for(token_data, out, "train.steps=4"), progress=False)
    assert metrics(out) == before


def test_truncating_metrics_on_resume_never_loses_the_file(token_data, tmp_path, monkeypatch):
    """The resumed metrics.jsonl is rewritten through a temp file: a failure while writing
    (here: a full disk) leaves the old file whole."""
    import builtins
    import io
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=4"), progress=False)
    (out / "DONE.json").unlink()
    shutil.rmtree(out / "checkpoints" / "step-4")
    before = (out / "metrics.jsonl").read_bytes()
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def full_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return Full(f) if "metrics" in str(file) and "w" in mode else f

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)
    with pytest.raises(OSError):
        run(cfg_for(token_data, out, "train.steps=4"), progress=False)
    monkeypatch.undo()
    assert (out / "metrics.jsonl").read_bytes() == before


# ------------------------------------------------------------------ pruning


def test_prune_killed_midway_leaves_no_half_checkpoint(token_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=4", "train.keep_last=3"), progress=False)
    cdir = out / "checkpoints"
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, *a, **k):
        (Path(path) / "optimizer.pt").unlink()   # the kill lands after the first file
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        ckpt.prune(cdir, keep_last=1)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    # no step-N folder is ever left half-deleted: it was renamed aside before the deletion
    assert all(ckpt.is_complete(p) for p in cdir.glob("step-*"))
    assert [p.name for p in cdir.glob("step-*")] == ["step-4"]
    ckpt.clean(cdir)
    assert sorted(p.name for p in cdir.iterdir()) == ["step-4"]


def test_start_cleans_incomplete_and_temporary_checkpoint_folders(token_data, tmp_path):
    out = tmp_path / "run"
    cfg = cfg_for(token_data, out, "train.steps=6", "train.keep_last=2")
    run(cfg, progress=False)
    cdir = out / "checkpoints"
    (out / "DONE.json").unlink()
    shutil.copytree(cdir / "step-4", cdir / "step-3")          # a half-deleted old checkpoint
    (cdir / "step-3" / "optimizer.pt").unlink()
    (cdir / "step-3" / "model.safetensors").unlink()
    shutil.copytree(cdir / "step-4", cdir / ".trash-step-1")    # renamed aside, never deleted
    shutil.copytree(cdir / "step-4", cdir / ".tmp-step-5")      # a checkpoint cut short
    shutil.rmtree(cdir / "step-6")
    run(cfg, progress=False)
    assert sorted(p.name for p in cdir.iterdir()) == ["step-4", "step-6"]


# ------------------------------------------------------------------ a changed model


def test_resume_refuses_a_changed_model_in_one_line(token_data, tmp_path, capsys):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=2"), progress=False)
    (out / "DONE.json").unlink()      # a stopped run
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4", "model.d_model=64",
                                            "model.n_layers=3"))
    assert code == 2 and err.count("\n") == 1
    assert "d_model" in err and "n_layers" in err and "step-2" in err and "init.from_checkpoint" in err
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 0, err


# ------------------------------------------------------------------ corrupt checkpoints


@pytest.mark.parametrize("victim", ["optimizer.pt", "model.safetensors"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(token_data, tmp_path, capsys, victim):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, cli_args(token_data, out, "train.steps=6"))
    assert code == 0
    before = train_records(out)
    (out / "DONE.json").unlink()
    bad = out / "checkpoints" / "step-6" / victim
    size = bad.stat().st_size
    bad.write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))   # same size: meta.json still agrees
    code, stdout, err = run_cli(capsys, cli_args(token_data, out, "train.steps=6"))
    assert code == 0, err
    said = stdout + err
    assert victim in said and "step-4" in said and "falling back" in said
    assert curve(train_records(out)) == curve(before)      # steps 5-6 redone, bit-identical


def test_every_checkpoint_corrupt_is_one_line_exit_5(token_data, tmp_path, capsys):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=4"), progress=False)
    (out / "DONE.json").unlink()
    for p in (out / "checkpoints").glob("step-*/optimizer.pt"):
        p.write_bytes(b"\x00" * p.stat().st_size)
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 5 and err.count("\n") == 1 and "optimizer.pt" in err


def test_truncated_done_json_is_not_a_dead_end(token_data, tmp_path):
    out = tmp_path / "run"
    run(cfg_for(token_data, out, "train.steps=2"), progress=False)
    (out / "DONE.json").write_text('{"step": ')
    summary = run(cfg_for(token_data, out, "train.steps=2"), progress=False)
    assert summary["step"] == 2 and json.loads((out / "DONE.json").read_text())["step"] == 2


# ------------------------------------------------------------------ full and read-only disks


def test_full_disk_during_a_checkpoint_is_one_line_exit_4_and_no_temp_folder(token_data, tmp_path, capsys,
                                                                              monkeypatch):
    from lmforge.train import checkpoint as writer

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[1]))
    monkeypatch.setattr(writer, "save_model", full)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 4 and err.count("\n") == 1 and "no space left" in err
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_torch_enforce_fail_while_saving_says_disk_space(token_data, tmp_path, capsys, monkeypatch):
    from lmforge.train import checkpoint as writer

    def enforce(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    monkeypatch.setattr(writer.torch, "save", enforce)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 4 and err.count("\n") == 1 and "disk space" in err
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_read_only_out_dir_is_one_line_exit_4(token_data, tmp_path, capsys, monkeypatch):
    import os
    from lmforge.io import atomic
    real = os.replace

    def read_only(src, dst, *a, **k):
        if str(dst).endswith("config.json"):
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(atomic.os, "replace", read_only)
    code, _, err = run_cli(capsys, cli_args(token_data, tmp_path / "run", "train.steps=2"))
    assert code == 4 and err.count("\n") == 1 and "read-only" in err and "config.json" in err


# ------------------------------------------------------------------ tokenizer path from another cwd


def test_pretrain_from_another_directory_finds_the_tokenizer(tmp_path, monkeypatch):
    """Token data encoded with a relative tokenizer path, trained from another directory: the run
    still gets its tokenizer/ folder and val_bpb metrics."""
    from lmforge.stages.encode import run as run_encode
    from lmforge.tokenizer.encode import EncodeConfig
    from lmforge.stages.tokenizer import run as run_train
    from lmforge.tokenizer.train import TokenizerConfig
    from test_tokenizer import make_docs, write_jsonl
    work = tmp_path / "work"
    write_jsonl(work / "in" / "a.jsonl", make_docs(80, seed=5))
    monkeypatch.chdir(work)
    run_train(TokenizerConfig(inputs=["in"], out_dir="tok", vocab_size=300), progress=False)
    run_encode(EncodeConfig(inputs=["in"], tokenizer="tok", out_dir="tokens", val_docs_per_domain=4),
               progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "run"
    run(config.load(PretrainConfig, None, [f"data={work / 'tokens'}", f"out_dir={out}", *TINY,
                                           "model.vocab_size=320", "train.steps=2"]), progress=False)
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert any(k.startswith("val_bpb/") for r in metrics(out) for k in r)


# ------------------------------------------------------------------ SFT, DPO, eval: account or error


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from test_align_utils import make_source
    return make_source(tmp_path_factory.mktemp("src"))


def align_args(cmd, src_run, data, out, *extra):
    sets = [f"init.from_checkpoint={src_run}", f"data=[{data}]", f"out_dir={out}", "train.seq_len=128",
            "train.micro_batch_size=4", "max_steps=1", *extra]
    return [cmd, "--quiet", *sum((["--set", s] for s in sets), [])]


def test_sft_cli_account_line_and_all_rejected_exit_5(source, tmp_path, capsys):
    from test_align_utils import make_sft_file
    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=12)
    with open(data, "ab") as f:
        f.write(b'{"messages": "\xff"}\n{broken\n')
    code, out, err = run_cli(capsys, align_args("sft", src_run, data, tmp_path / "sft"))
    assert code == 0, err
    line = [l for l in out.splitlines() if l.startswith("[sft] read")]
    assert line and "read 14 records, kept 12, rejected 2" in line[0] and "rejects.jsonl" in line[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"messages": []}\n\xff\xfe\n')
    code, _, err = run_cli(capsys, align_args("sft", src_run, bad, tmp_path / "sft2"))
    assert code == 5 and err.count("\n") == 1 and "all 2 records" in err and "bad.jsonl:1" in err


def test_dpo_cli_account_line_and_invalid_utf8_is_a_reject(source, tmp_path, capsys):
    src_run, _ = source
    pairs = [{"prompt": f"What color is thing {i}?", "chosen": "Blue.", "rejected": f"No idea {i}."}
             for i in range(6)]
    data = tmp_path / "p.jsonl"
    data.write_bytes(b"".join(json.dumps(p).encode() + b"\n" for p in pairs) + b'{"prompt": "\xff"}\n')
    code, out, err = run_cli(capsys, align_args("dpo", src_run, data, tmp_path / "dpo"))
    assert code == 0, err
    line = [l for l in out.splitlines() if l.startswith("[dpo] read")]
    assert line and "read 7 records, kept 6, rejected 1 (invalid_utf8 1)" in line[0]


def test_eval_cli_account_missing_and_all_malformed_sets(source, tmp_path, capsys):
    src_run, _ = source
    good = tmp_path / "m.jsonl"
    good.write_bytes(b"".join(json.dumps({"question": f"Q{i}?", "choices": ["a", "b"], "answer": i % 2}).encode()
                              + b"\n" for i in range(4)) + b"{broken\n")
    base = ["eval", "--quiet", "--checkpoint", str(src_run), "--set", "mcq.shots=[0]"]
    code, out, err = run_cli(capsys, [*base, "--out", str(tmp_path / "e1"), "--set", f"mcq.sets=[{{path: {good}}}]"])
    assert code == 0, err
    line = [l for l in out.splitlines() if l.startswith("[eval] read")]
    assert line and "read 5 items, kept 4, rejected 1" in line[0] and "rejects.txt" in line[0]
    code, _, err = run_cli(capsys, [*base, "--out", str(tmp_path / "e2"),
                                    "--set", f"mcq.sets=[{{path: {tmp_path / 'none.jsonl'}}}]"])
    assert code == 2 and "none.jsonl" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{x\n[1]\n")
    code, _, err = run_cli(capsys, [*base, "--out", str(tmp_path / "e3"), "--set", f"mcq.sets=[{{path: {bad}}}]"])
    assert code == 5 and "bad.jsonl" in err and err.count("\n") == 1
