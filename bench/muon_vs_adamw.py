"""Muon vs AdamW at equal steps: the loss each reaches through `lmforge pretrain`.

Real text, mostly unique: the Python standard library's own source (.py files), tokenised with
a byte-level BPE trained in the same run on the training files; the last 10% of the files
(by sorted path) are held out for validation. Each arm runs the pretrain stage itself (the code
path `train.optim.name: muon` takes), at the same learning rate, schedule, batch and steps,
for each seed; Muon uses `lr_scale: match_rms_adamw` (Moonshot's rule), whose claim is that an
AdamW-tuned learning rate carries over unchanged, so no LR is tuned for either arm. The table
prints mean and standard deviation over seeds of the last 10 steps' train loss and of the
final validation loss, and the step time ratio, all measured in this run.

    python bench/muon_vs_adamw.py                                   # tiny preset, CPU
    python bench/muon_vs_adamw.py --preset small-125m --steps 60 --seq-len 256
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lmforge import config
from lmforge.stages.pretrain import PretrainConfig, run

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from stdlib_tokens import token_data  # noqa: E402


def one_run(data: Path, out: Path, name: str, seed: int, a) -> dict:
    sets = [f"data={data}", f"out_dir={out}", f"model.preset={a.preset}", f"model.vocab_size={a.vocab}",
            f"model.max_seq_len={a.seq_len}", f"train.seq_len={a.seq_len}", f"train.micro_batch_size={a.batch}",
            f"train.steps={a.steps}", f"train.seed={seed}", f"train.optim.name={name}", f"train.optim.lr={a.lr}",
            "train.schedule.kind=wsd", f"train.schedule.warmup_steps={max(1, a.steps // 10)}",
            f"train.eval_batches={a.eval_batches}", f"train.ckpt_every={a.steps}", "train.device=cpu"]
    t0 = time.perf_counter()
    summary = run(config.load(PretrainConfig, None, sets), progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if "loss" in r]
    return {"train": statistics.mean(train[-10:]), "val": summary["val/mean"], "wall": wall}


def fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--text-mb", type=float, default=8.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = token_data(tmp, a.vocab, int(a.text_mb * 1e6))
        res = {n: [one_run(data, tmp / f"{n}-{s}", n, s, a) for s in range(a.seeds)] for n in ("adamw", "muon")}
    print(f"\npreset {a.preset} (vocab {a.vocab}), seq {a.seq_len} x batch {a.batch}, {a.steps} steps, "
          f"lr {a.lr} WSD, {a.seeds} seeds; CPU")
    print(f"| optimizer | train loss (last 10 steps) | validation loss | wall per run (x AdamW) |")
    print("|---|---|---|---|")
    base = statistics.mean(r["wall"] for r in res["adamw"])
    for n, rs in res.items():
        print(f"| {n} | {fmt([r['train'] for r in rs])} | {fmt([r['val'] for r in rs])} | "
              f"{statistics.mean(r['wall'] for r in rs) / base:.2f}x |")


if __name__ == "__main__":
    main()
