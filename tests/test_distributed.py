"""torchrun + FSDP2 on CPU (gloo): the same global batch gives the same loss curve as one
process, and a sharded checkpoint resumes at another world size."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import checkpoint as ckpt

ARGS = ["model.vocab_size=128", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
        "model.max_seq_len=64", "train.seq_len=32", "train.micro_batch_size=4", "train.grad_accum=2",
        "train.optim.lr=3e-3", "train.schedule.kind=constant", "train.eval_batches=1", "train.device=cpu"]


def cmd(nproc, data, out, *extra):
    sets = sum((["--set", a] for a in [f"data={data}", f"out_dir={out}", *ARGS, *extra]), [])
    if nproc == 1:
        return [sys.executable, "-m", "lmforge", "pretrain", "--quiet", *sets]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "lmforge", "pretrain", "--quiet", *sets]


def losses(out):
    return [json.loads(l)["loss"] for l in (Path(out) / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def run(c):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(c, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_fsdp_two_processes_match_one(token_data, tmp_path):
    run(cmd(1, token_data, tmp_path / "one", "train.steps=6"))
    run(cmd(2, token_data, tmp_path / "two", "train.steps=6", "train.ckpt_every=3",
            "train.activation_checkpointing=true"))
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 6
    assert b == pytest.approx(a, rel=2e-4)
    step3 = tmp_path / "two" / "checkpoints" / "step-6"
    assert ckpt.is_complete(step3) and ckpt.is_sharded(step3)
    # the full safetensors written beside the shards equals the single-process weights
    from safetensors.torch import load_file
    wa = load_file(str(ckpt.latest(tmp_path / "one" / "checkpoints") / "model.safetensors"))
    wb = load_file(str(step3 / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4, k


def test_torchrun_with_one_process_runs_fsdp_and_matches_plain(token_data, tmp_path):
    """World size 1 under torchrun is the sharded path (process group, FSDP2, DCP), the way
    it is checked on a single GPU; its losses equal a plain run's."""
    run(cmd(1, token_data, tmp_path / "plain", "train.steps=4"))
    c = cmd(2, token_data, tmp_path / "fsdp", "train.steps=4", "train.ckpt_every=4")
    run([a.replace("--nproc_per_node=2", "--nproc_per_node=1") for a in c])
    assert ckpt.is_sharded(tmp_path / "fsdp" / "checkpoints" / "step-4")
    assert not ckpt.is_sharded(ckpt.latest(tmp_path / "plain" / "checkpoints"))
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "plain"), rel=2e-4)


def test_sharded_checkpoint_resumes_with_one_process(token_data, tmp_path):
    run(cmd(1, token_data, tmp_path / "straight", "train.steps=6"))
    out = tmp_path / "resharded"
    run(cmd(2, token_data, out, "train.steps=3", "train.ckpt_every=3"))
    (out / "DONE.json").unlink()  # extend the run: 3 more steps with one process
    p = run(cmd(1, token_data, out, "train.steps=6"))
    assert "resuming from" in p.stdout
    assert losses(out) == pytest.approx(losses(tmp_path / "straight"), rel=2e-4)


def test_partial_token_batch_is_padded_with_empty_rows_for_the_ranks():
    """The last micro-batch of an SFT epoch can hold fewer rows than the world size (it used to
    stop a 2-process SFT run); empty rows (labels -100) fill it, and each rank gets its share."""
    import torch
    from lmforge.train.distributed import DistInfo, local_rows
    batch = {"input_ids": torch.arange(12).view(3, 4), "labels": torch.arange(12).view(3, 4),
             "position_ids": torch.ones(3, 4, dtype=torch.long)}
    r0, r1 = (local_rows(batch, DistInfo(rank=r, world=2, launched=True)) for r in (0, 1))
    assert r0["input_ids"].shape == r1["input_ids"].shape == (2, 4)
    assert torch.equal(torch.cat([r0["labels"], r1["labels"]])[:3], batch["labels"])
    assert (r1["labels"][1] == -100).all() and (r1["input_ids"][1] == 0).all()
    with pytest.raises(ValueError, match="multiple of the world size 2"):
        local_rows({"chosen_ids": torch.zeros(3, 4)}, DistInfo(rank=0, world=2, launched=True))   # pairs: no silent padding


def test_fsdp_muon_two_processes_match_one(token_data, tmp_path):
    """Muon under FSDP2: each rank gathers the full momentum of a sharded matrix,
    orthogonalises it and keeps its own rows; the losses equal one process's."""
    run(cmd(1, token_data, tmp_path / "one", "train.steps=4", "train.optim.name=muon"))
    run(cmd(2, token_data, tmp_path / "two", "train.steps=4", "train.optim.name=muon"))
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 4 and a[-1] < a[0]
    assert b == pytest.approx(a, rel=2e-4)
