"""Distillation vs the LM loss alone at equal tokens: the held-out loss a student reaches.

Real, mostly unique text (the Python standard library's source, BPE trained in the same run,
the last 10% of files held out; bench/helpers/stdlib_tokens.py). A teacher (a larger model,
trained longer on the same training split) is trained first; then for each seed the same
student (same init, batches, steps, LR) trains once on the LM loss and once with
`distill: {teacher, weight, temperature, kind}` through `lmforge pretrain`, and (with
--cache-k K, default 32; 0 skips it) once more from the teacher's cached top-K log-probs
(`lmforge distill-cache`, float16, windows of the row length; `distill.teacher_cache`). The
cache's one-off cost is printed apart. The table prints
the mean and standard deviation over seeds of the final validation loss (the plain LM loss on
the held-out split: comparable across arms) and the paired difference, all from this run.

    python bench/distill_vs_lm.py                       # CPU, a few minutes on 2 cores
    python bench/distill_vs_lm.py --kind reverse --weight 0.5
    python bench/distill_vs_lm.py --workdir runs/bench-distill   # kept; a rerun skips finished runs

With --workdir every run (the pretrain stage's contract) and the data are kept, and a rerun
skips what finished: an interrupted bench resumes; a skipped run's wall time is not known
(its ratio is left out).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import contextlib
import tempfile
import time
from pathlib import Path

from lmforge import config
from lmforge.stages.distillcache import DistillCacheConfig, run as run_cache
from lmforge.stages.pretrain import PretrainConfig, run

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from stdlib_tokens import token_data  # noqa: E402


def train(data: Path, out: Path, shape: dict, steps: int, seed: int, a, *extra) -> tuple[float, float]:
    sets = [f"data={data}", f"out_dir={out}", f"model.vocab_size={a.vocab}", f"model.max_seq_len={a.seq_len}",
            *(f"model.{k}={v}" for k, v in shape.items()), f"train.seq_len={a.seq_len}",
            f"train.micro_batch_size={a.batch}", f"train.steps={steps}", f"train.seed={seed}",
            f"train.optim.lr={a.lr}", "train.schedule.kind=cosine", f"train.schedule.warmup_steps={max(1, steps // 10)}",
            f"train.eval_batches={a.eval_batches}", f"train.ckpt_every={steps}", "train.device=cpu", *extra]
    t0 = time.perf_counter()
    summary = run(config.load(PretrainConfig, None, sets), progress=False)
    return summary["val/mean"], float("nan") if summary.get("skipped") else time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--teacher-steps", type=int, default=400)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--kind", default="forward")
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--text-mb", type=float, default=4.0)
    ap.add_argument("--cache-k", type=int, default=32, help="top-k of the cached-teacher arm (0: no such arm)")
    ap.add_argument("--workdir", default="", help="keep the data and runs here (a rerun skips finished runs)")
    a = ap.parse_args()
    teacher_shape = dict(d_model=256, n_layers=4, n_heads=4)
    student_shape = dict(d_model=128, n_layers=2, n_heads=2)
    with (contextlib.nullcontext(a.workdir) if a.workdir else tempfile.TemporaryDirectory()) as tmp:
        tmp = Path(tmp)
        data = tmp / "tokens" if (tmp / "tokens" / "meta.json").is_file() else token_data(tmp, a.vocab,
                                                                                         int(a.text_mb * 1e6))
        t_val, t_wall = train(data, tmp / "teacher", teacher_shape, a.teacher_steps, 0, a)
        cache, c_wall, c_summary = tmp / "cache", 0.0, {}
        if a.cache_k:
            t0 = time.perf_counter()
            c_summary = run_cache(config.load(DistillCacheConfig, None, [
                f"teacher={tmp / 'teacher'}", f"data={data}", f"out_dir={cache}", f"k={a.cache_k}",
                f"window={a.seq_len}", f"temperature={a.temperature}", "device=cpu"]), progress=False)
            c_wall = time.perf_counter() - t0
        lm, kd, kc, walls, cwalls = [], [], [], [], []
        for s in range(a.seeds):
            v, w1 = train(data, tmp / f"lm{s}", student_shape, a.steps, s, a)
            lm.append(v)
            v, w2 = train(data, tmp / f"kd{s}", student_shape, a.steps, s, a, f"distill.teacher={tmp / 'teacher'}",
                          f"distill.weight={a.weight}", f"distill.temperature={a.temperature}", f"distill.kind={a.kind}")
            kd.append(v)
            walls.append(w2 / w1)
            if a.cache_k:
                v, w3 = train(data, tmp / f"kc{s}", student_shape, a.steps, s, a, f"distill.teacher_cache={cache}",
                              f"distill.weight={a.weight}", f"distill.temperature={a.temperature}",
                              f"distill.kind={a.kind}")
                kc.append(v)
                cwalls.append(w3 / w1)
    diff = [l - k for l, k in zip(lm, kd)]
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    ratio = lambda ws: f"{statistics.mean(w for w in ws if w == w):.2f}x" if any(w == w for w in ws) else "-"
    print(f"\nteacher {teacher_shape} {a.teacher_steps} steps: validation loss {t_val:.3f} ({t_wall:.0f} s)")
    print(f"student {student_shape}, {a.steps} steps x {a.batch} x {a.seq_len} tokens, {a.seeds} seeds; "
          f"distill {a.kind} KL, weight {a.weight}, T {a.temperature}; CPU")
    print("| student | validation loss | wall per run (x LM-only) |")
    print("|---|---|---|")
    print(f"| LM loss only | {statistics.mean(lm):.3f} ± {sd(lm):.3f} | 1.00x |")
    print(f"| distilled | {statistics.mean(kd):.3f} ± {sd(kd):.3f} | {ratio(walls)} |")
    print(f"| paired difference (LM - distilled) | {statistics.mean(diff):+.3f} ± {sd(diff):.3f} | |")
    if a.cache_k:
        cdiff = [l - k for l, k in zip(lm, kc)]
        print(f"| distilled from the cached top {a.cache_k} | {statistics.mean(kc):.3f} ± {sd(kc):.3f} | "
              f"{ratio(cwalls)} |")
        print(f"| paired difference (LM - cached) | {statistics.mean(cdiff):+.3f} ± {sd(cdiff):.3f} | |")
        print(f"\ncache: {c_summary['tokens']} train tokens, top {a.cache_k}, {c_summary['bytes_per_token']} bytes "
              f"per token ({c_summary['bytes'] / 1e6:.1f} MB), "
              + ("written by an earlier run" if c_summary.get("skipped") else f"written once in {c_wall:.0f} s"))


if __name__ == "__main__":
    main()
