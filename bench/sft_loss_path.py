"""SFT's loss before and after issue 29: full logits vs the model's one fused loss path.

Before, `SFTObjective.loss` took the batch's logits [B, T, V] from the model, then summed the
cross-entropy of their float32 copy (and each segment's sum from the logits of its rows).
Now it takes the summed loss from the chunked fused head + cross-entropy, gradients computed in
forward, with each token's CE detached for the per-segment sums (`model(..., labels=...,
token_ce=True)`), so at most one chunk of float32 logits (about 256 MB) exists at a time. A
third row: the per-token reduction (`reduction="none"`, what DPO and C-RLFT use), whose
backward recomputes each chunk's logits (one more head matmul): SFT's first fused version.

For each path, in a fresh process (so the peak is its own): the median time of a training
micro-batch (forward + backward) and the peak memory it adds over the model and batch
(CUDA: max_memory_allocated; CPU: the process's peak RSS, informal). Then, in one process,
the differences between the two paths' loss, per-segment sums and gradients (fp32 or the
bf16 autocast CUDA training uses). A batch is packed SFT rows plus one pretraining row.

    python bench/sft_loss_path.py                                  # CPU, 32k vocab, fp32
    python bench/sft_loss_path.py --amp bf16
    python bench/sft_loss_path.py --device cuda --amp bf16 --seq-len 8192
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from lmforge.align.sft_data import Conversation, build_row
from lmforge.device import autocast
from lmforge.model import ModelConfig, Transformer
from lmforge.train.objectives.lm import token_loss_sum
from lmforge.train.objectives.sft import SFTObjective, stack_rows

PATHS = {"logits": "full logits + cross-entropy (before)", "pertoken": "fused, per token (reduction none)",
         "fused": "fused, summed + token_ce (now)"}


def plain_loss(model, batch):
    """SFTObjective.loss before issue 29."""
    logits = model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"])
    loss, metrics = token_loss_sum(logits, batch["labels"])
    for name, sel in (("sft", ~batch["is_pt"]), ("pt", batch["is_pt"])):
        metrics[f"{name}_ce_sum"] = token_loss_sum(logits[sel], batch["labels"][sel])[0].detach()
    return loss, metrics


def setup(args):
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.d_model // 64,
                      n_kv_heads=max(1, args.d_model // 128), max_seq_len=args.seq_len)
    torch.manual_seed(0)
    model = Transformer(cfg).to(args.device)
    rng = np.random.default_rng(0)
    convs, rows = [], []
    for _ in range(args.batch - 1):                # packed SFT rows: conversations of 200-600 tokens
        idxs, used = [], 0
        while used + 600 <= args.seq_len:
            n = int(rng.integers(200, 601))
            convs.append(Conversation(rng.integers(0, args.vocab, n).astype(np.int32), rng.random(n) < 0.5))
            idxs.append(len(convs) - 1)
            used += n
        rows.append(build_row(convs, idxs, args.seq_len, 0))
    ids = rng.integers(0, args.vocab, args.seq_len)
    rows.append({"input_ids": ids, "labels": np.append(ids[1:], -100), "position_ids": np.arange(args.seq_len),
                 "doc_ids": np.zeros(args.seq_len, dtype=np.int64)})      # a pretraining row
    batch = stack_rows(rows)
    batch["is_pt"] = torch.tensor([False] * (args.batch - 1) + [True])
    batch = {k: v.to(args.device) for k, v in batch.items()}
    return model, SFTObjective(convs, [], args.seq_len, args.batch, 0), batch


def per_token_loss(model, batch):
    """SFT through reduction="none": the loss is the per-token losses' sum."""
    tok, metrics = model(batch["input_ids"], position_ids=batch["position_ids"], doc_ids=batch["doc_ids"],
                         labels=batch["labels"], reduction="none")
    for name, sel in (("sft", ~batch["is_pt"]), ("pt", batch["is_pt"])):
        metrics[f"{name}_ce_sum"] = tok[sel].detach().sum()
    return tok.sum(), metrics


def loss_fn(path: str, obj: SFTObjective):
    return {"logits": plain_loss, "pertoken": per_token_loss, "fused": obj.loss}[path]


def measure(args) -> dict:
    """One path in this process: median step time and the peak memory a step adds."""
    model, obj, batch = setup(args)
    fn, cuda = loss_fn(args.path, obj), args.device.startswith("cuda")
    amp = torch.bfloat16 if args.amp == "bf16" else None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_now()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        with autocast(args.device, amp):
            loss, _ = fn(model, batch)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"time_s": statistics.median(times), "peak_mb": (peak - base) / 2**20}


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def differences(args) -> dict:
    model, obj, batch = setup(args)
    params = list(model.parameters())
    amp = torch.bfloat16 if args.amp == "bf16" else None
    out = {}
    for path in PATHS:
        with autocast(args.device, amp):
            loss, m = loss_fn(path, obj)(model, batch)
        out[path] = (loss.detach(), m, torch.autograd.grad(loss, params))
    (ol, om, og), (nl, nm, ng) = out["logits"], out["fused"]
    return {"loss": float(ol), "loss_abs_diff": abs(float(nl - ol)),
            "segment_abs_diff": max(abs(float(nm[k] - om[k])) for k in ("sft_ce_sum", "pt_ce_sum")),
            "grad_rel_diff": max(float((a - o).abs().max()) / (float(o.abs().max()) or 1.0) for a, o in zip(ng, og))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=2, help="rows: batch - 1 packed SFT rows and one pretraining row")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--path", choices=list(PATHS), help=argparse.SUPPRESS)   # child process: measure one path
    args = ap.parse_args()
    if args.path:
        print(json.dumps(measure(args)))
        return
    rows = {}
    for path in PATHS:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--path", path]
        rows[path] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    diff = differences(args)
    print(f"device={args.device} torch={torch.__version__} amp={args.amp} vocab={args.vocab} d_model={args.d_model} "
          f"layers={args.layers} batch={args.batch}x{args.seq_len} threads={torch.get_num_threads()}")
    print(f"{'path':<40}{'step s':>9}{'peak MB':>10}")
    for path, name in PATHS.items():
        print(f"{name:<40}{rows[path]['time_s']:>9.3f}{rows[path]['peak_mb']:>10.0f}")
    old, new = rows["logits"], rows["fused"]
    print(f"{'now / before':<40}{new['time_s'] / old['time_s']:>8.2f}x"
          f"{new['peak_mb'] / max(old['peak_mb'], 1e-9):>9.2f}x")
    print(f"loss {diff['loss']:.4f}: |now - before| = {diff['loss_abs_diff']:.3g}; per-segment sums "
          f"{diff['segment_abs_diff']:.3g}; gradients max |now - before| / max |before| = {diff['grad_rel_diff']:.3g}")


if __name__ == "__main__":
    main()
