"""FSDP2 on one GPU: `torchrun --nproc_per_node=1 lmforge pretrain` (process group, fully_shard,
bf16 MixedPrecisionPolicy, DCP checkpoints) against a plain `lmforge pretrain` (bf16 autocast,
safetensors checkpoints) on the same data and seed, then DCP save/load timed at a bigger shape.

    python bench/fsdp_check.py                    # needs CUDA (on CPU: --device cpu, gloo, tiny)
    python bench/fsdp_check.py --preset small-125m --steps 20 --dcp-preset large-1b

Prints the per-step losses side by side with their relative difference, the checkpoint
format each run wrote, and the DCP save/load seconds and GB/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def token_data(folder: Path, vocab: int, n_docs: int, seed: int = 0) -> Path:
    """Documents that count up from a random start in steps of 1 or 2 (learnable, so the loss moves)."""
    from lmforge.shards import write_dataset
    rng = np.random.default_rng(seed)

    def doc():
        start, stride, n = int(rng.integers(0, vocab - 3)), int(rng.integers(1, 3)), int(rng.integers(64, 1500))
        return [3 + (start + stride * k) % (vocab - 3) for k in range(n)] + [1]
    write_dataset(folder, [(doc(), 0) for _ in range(n_docs)], vocab, ["prose"], eos_id=1, split="train")
    write_dataset(folder, [(doc(), 0) for _ in range(16)], vocab, ["prose"], eos_id=1, split="val")
    return folder


def pretrain(nproc: int, data: Path, out: Path, args, extra: list[str] = ()) -> tuple[float, str]:
    """One `lmforge pretrain` run (under torchrun when nproc); (wall seconds, stdout). Exits on a
    failure unless `extra` is given (an arm's failure is reported in the table instead)."""
    sets = [f"data={data}", f"out_dir={out}", f"model.preset={args.preset}", f"model.max_seq_len={args.seq_len}",
            f"train.seq_len={args.seq_len}", f"train.micro_batch_size={args.batch}", f"train.steps={args.steps}",
            f"train.ckpt_every={args.steps}", "train.eval_batches=1", f"train.device={args.device}",
            "train.schedule.kind=constant", "train.optim.lr=3e-4", *extra]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if nproc
              else [sys.executable])
    cmd = [*launch, "-m", "lmforge", "pretrain", "--quiet", *sum((["--set", s] for s in sets), [])]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    if p.returncode and not extra:
        sys.exit(f"{' '.join(cmd[:6])} ... failed:\n{p.stderr[-4000:]}")
    if p.returncode:
        return -1.0, (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
    return time.perf_counter() - t0, p.stdout


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def dcp_timing(preset: str, device: str) -> None:
    """Run under torchrun: shard a model, take one optimizer step, time DCP save and load."""
    import torch

    from lmforge import config
    from lmforge.model import ModelConfig, Transformer
    from lmforge.train import distributed
    info = distributed.setup(device)
    dev = torch.device(device, info.local_rank) if device == "cuda" else torch.device("cpu")
    model = Transformer(config.from_dict(ModelConfig, {"preset": preset, "max_seq_len": 256})).to(dev)
    distributed.shard(model, dev.type)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 1000, (2, 256), device=dev)
    model(ids, labels=ids)[0].backward()
    opt.step()
    n_bytes = sum(p.numel() * 4 * 3 for p in model.parameters())   # fp32 weights + Adam m, v
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        t0 = time.perf_counter()
        distributed.save_sharded(Path(tmp) / "ck", model, opt)
        t_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        distributed.load_sharded(Path(tmp) / "ck", model, opt)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_load = time.perf_counter() - t0
    if info.is_main:
        print(f"DCP {preset}: {n_bytes / 1e9:.1f} GB (weights + Adam state, fp32); save {t_save:.2f} s "
              f"({n_bytes / 1e9 / t_save:.2f} GB/s), load {t_load:.2f} s ({n_bytes / 1e9 / t_load:.2f} GB/s)")
    torch.distributed.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small-125m")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dcp-preset", default="large-1b", help="model shape for the DCP timing ('' skips it)")
    ap.add_argument("--dcp-only", action="store_true", help=argparse.SUPPRESS)   # the torchrun child
    ap.add_argument("--arm", action="append", default=[], metavar="NAME:KEY=V[,KEY=V]",
                    help="instead of FSDP2: a plain run with these --set values beside the plain run "
                         "(repeatable), e.g. fp8:train.precision=fp8,train.compile=true")
    args = ap.parse_args()
    if args.dcp_only:
        return dcp_timing(args.dcp_preset, args.device)
    if args.arm:
        return arms(args)
    with tempfile.TemporaryDirectory() as tmp:
        from lmforge.model.config import PRESETS
        data = token_data(Path(tmp) / "tokens", PRESETS[args.preset]["vocab_size"], 400)
        t_plain = pretrain(0, data, Path(tmp) / "plain", args)[0]
        t_fsdp = pretrain(1, data, Path(tmp) / "fsdp", args)[0]
        a, b = losses(Path(tmp) / "plain"), losses(Path(tmp) / "fsdp")
        from lmforge import checkpoint as ckpt
        kinds = [("sharded (DCP)" if ckpt.is_sharded(ckpt.latest(Path(tmp) / r / "checkpoints")) else "safetensors")
                 for r in ("plain", "fsdp")]
    print(f"\n{args.preset}, seq {args.seq_len}, batch {args.batch}, {args.steps} steps, device {args.device}")
    print(f"plain: {t_plain:.1f} s wall, checkpoint {kinds[0]}; torchrun x1 FSDP2: {t_fsdp:.1f} s, checkpoint {kinds[1]}")
    print(f"{'step':>4} {'plain':>10} {'fsdp':>10} {'rel diff':>9}")
    for i, (x, y) in enumerate(zip(a, b), 1):
        print(f"{i:>4} {x:>10.5f} {y:>10.5f} {abs(x - y) / abs(x):>9.2e}")
    print(f"max rel diff {max(abs(x - y) / abs(x) for x, y in zip(a, b)):.2e} over {len(a)}/{len(b)} steps; "
          f"loss {a[0]:.3f} -> {a[-1]:.3f}")
    if args.dcp_preset:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                        __file__, "--dcp-only", "--dcp-preset", args.dcp_preset, "--device", args.device],
                       check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def arms(args) -> None:
    """The trainer's own path with other settings (compile, fp8, Muon) on the same data and seed:
    each arm's per-step loss beside the plain run's, its wall time, and the lines it printed about
    fp8 (the converted-layer count) or its one-line refusal."""
    parsed = []
    for a in args.arm:
        name, _, sets = a.partition(":")
        if not name or "=" not in sets:
            sys.exit(f"--arm {a!r}: expected NAME:KEY=V[,KEY=V]")
        parsed.append((name, sets.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        from lmforge.model.config import PRESETS
        data = token_data(Path(tmp) / "tokens", PRESETS[args.preset]["vocab_size"], 400)
        base_t = pretrain(0, data, Path(tmp) / "plain", args)[0]
        curves, notes = {"plain": losses(Path(tmp) / "plain")}, [f"plain: {base_t:.1f} s wall"]
        for name, sets in parsed:
            t, out = pretrain(0, data, Path(tmp) / name, args, sets)
            said = [line for line in out.splitlines() if "fp8" in line.lower()]
            if t < 0:
                notes.append(f"{name} ({','.join(sets)}): failed: {out}")
                continue
            curves[name] = losses(Path(tmp) / name)
            notes.append(f"{name} ({','.join(sets)}): {t:.1f} s wall" + (f"; {said[0]}" if said else ""))
    print(f"\n{args.preset}, seq {args.seq_len}, batch {args.batch}, {args.steps} steps, device {args.device}")
    print("\n".join(notes))
    names = list(curves)
    print(f"{'step':>4}" + "".join(f"{n:>12}" for n in names))
    for i in range(max(len(c) for c in curves.values())):
        print(f"{i + 1:>4}" + "".join(f"{c[i]:>12.5f}" if i < len(c) else f"{'-':>12}" for c in curves.values()))
    for n in names[1:]:
        a, b = curves["plain"], curves[n]
        print(f"{n}: max rel diff from plain {max(abs(x - y) / abs(x) for x, y in zip(a, b)):.2e}; "
              f"loss {b[0]:.3f} -> {b[-1]:.3f} (plain {a[0]:.3f} -> {a[-1]:.3f})")


if __name__ == "__main__":
    main()
