"""OpenMP wait policy on a shared CPU: torch's training step, idle and beside a busy process.

torch's CPU ops run on an OpenMP team of one thread per core. With the default wait policy
the team spins at every barrier; when another process holds one of the cores, each op waits
for a descheduled thread, and a 2-core machine slows far more than 2x (a smoke run of the
Index recipe took 10x longer beside a test run). `OMP_WAIT_POLICY=PASSIVE` makes waiting
threads sleep instead. The `lmforge` command sets it unless the environment already does.

Each cell is a fresh subprocess (the policy is read once, when OpenMP starts) timing the
training step that pretraining runs (bench/train_throughput.py's fused row); "loaded" runs it
beside --busy processes that spin on the CPU. Ratios are against the default policy in the
same condition.

    python bench/omp_wait.py                  # tiny preset, 1 busy process
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"default (spin)": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin 10k": {"GOMP_SPINCOUNT": "10000"}, "1 thread": {"OMP_NUM_THREADS": "1"}}


def spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def tokens_per_s(policy: dict, args) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(policy)
    cmd = [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--preset", args.preset, "--rows", "fused",
           "--seq-len", str(args.seq_len), "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, check=True).stdout
    return float(re.search(r"lmforge \(packed, fused CE\)\s+(\d+)", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--busy", type=int, default=1, help="spinning processes beside the loaded runs")
    args = ap.parse_args()
    rows = []
    for cond in ("idle", "loaded"):
        busy = []
        if cond == "loaded":
            busy = [mp.Process(target=spin, args=(time.time() + 3600,), daemon=True) for _ in range(args.busy)]
            for p in busy:
                p.start()
        try:
            rates = {name: tokens_per_s(pol, args) for name, pol in POLICIES.items()}
        finally:
            for p in busy:
                p.terminate()
        rows.append((cond, rates))
    print(f"\ncpus={os.cpu_count()} preset={args.preset} seq_len={args.seq_len} batch={args.batch} "
          f"busy processes when loaded={args.busy}; tokens/s of the pretraining step (fused row)")
    print(f"{'condition':<10}" + "".join(f"{n:>18}" for n in POLICIES))
    for cond, rates in rows:
        base = rates["default (spin)"]
        print(f"{cond:<10}" + "".join(f"{r:>9.0f} ({r / base:.2f}x)" for r in rates.values()))


if __name__ == "__main__":
    main()
