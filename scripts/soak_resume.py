"""The kill -9 soak behind scripts/soak_resume.sh (see there for usage).

One uninterrupted pretraining run, and the same run killed with SIGKILL N times at random
moments (during start-up, training steps, evaluation, checkpoint writing or pruning,
whatever the moment happens to be) and resumed after each kill. Then: how many steps were
recomputed, and whether the per-step metrics, the final weights, the optimizer state and
the RNG state are bit-identical, and whether the run folder is clean (one metrics line per
step, no temp/trash/incomplete checkpoint folders).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

TIMING = {"tokens_per_s", "mfu"}   # wall-clock measurements, not results


def make_data(folder: Path, vocab: int = 512, n_docs: int = 400, seed: int = 0) -> None:
    """Token shards with learnable structure (each document counts up from a random start)."""
    import numpy as np
    from lmforge.shards import write_dataset
    rng = np.random.default_rng(seed)

    def doc():
        start, stride, n = int(rng.integers(0, vocab - 3)), int(rng.integers(1, 3)), int(rng.integers(8, 200))
        return [3 + (start + stride * k) % (vocab - 3) for k in range(n)] + [1]
    write_dataset(folder, [(doc(), i % 2) for i in range(n_docs)], vocab, ["prose", "code"], eos_id=1, split="train")
    write_dataset(folder, [(doc(), i % 2) for i in range(20)], vocab, ["prose", "code"], eos_id=1, split="val")


def command(data: Path, out: Path, a) -> list[str]:
    sets = [f"data={data}", f"out_dir={out}", "model.preset=tiny", "model.vocab_size=512", "train.device=cpu",
            f"train.steps={a.steps}", f"train.ckpt_every={a.ckpt_every}", "train.keep_last=2",
            f"train.eval_every={a.eval_every}", "train.eval_batches=2", "train.seq_len=64",
            "train.micro_batch_size=4", "train.grad_accum=2", "train.optim.lr=1e-3",
            "train.schedule.kind=cosine", "train.schedule.warmup_steps=10"]
    return [sys.executable, "-m", "lmforge", "pretrain", "--quiet", *sum((["--set", s] for s in sets), [])]


def train_records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            recs.append({"cut": line})   # a line cut by a kill (must be gone at the end)
    return recs


def latest_step(out: Path) -> int:
    from lmforge import checkpoint as ckpt
    found = ckpt.latest(out / "checkpoints")
    return int(found.name.split("-")[1]) if found else 0


def last_logged(out: Path) -> int:
    return max((r["step"] for r in train_records(out) if "loss" in r), default=0)


def wait_for_step(proc, out: Path, target: int) -> bool:
    """Poll until `target` is logged (True) or the process ends (False)."""
    while proc.poll() is None:
        if last_logged(out) >= target:
            return True
        time.sleep(0.02)
    return False


def killed_run(data: Path, out: Path, a, env: dict, startup: float, train_s: float) -> dict:
    """Each attempt is killed at a random moment: every fifth during start-up (importing, building,
    loading the checkpoint, cleaning up), the others after a random number of steps (about this
    attempt's share of the steps left, times 0..2) plus a random part of a step, so the kill lands
    inside a training step, an evaluation, a checkpoint write or a prune."""
    rng = random.Random(a.seed)
    step_s = train_s / a.steps
    kills, recomputed, moments = 0, 0, []
    while kills < a.kills:
        ckpt_before = latest_step(out)
        logged_before = last_logged(out)
        proc = subprocess.Popen(command(data, out, a), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        share = (a.steps - ckpt_before) / (a.kills - kills + 1)
        if kills % 5 == 2:
            when = "start-up"
            try:
                proc.wait(timeout=rng.uniform(0.3, 0.9) * startup)
            except subprocess.TimeoutExpired:
                pass
        else:
            target = ckpt_before + max(1, round(rng.uniform(0, 2) * share))
            target = max(target, logged_before + 1)   # lines up to logged_before are the last attempt's
            when = f"after step {target}"
            if wait_for_step(proc, out, target):
                time.sleep(rng.uniform(0, 1.5 * step_s))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            last = last_logged(out)
            resume_from = latest_step(out)
            # steps logged after the checkpoint the next attempt resumes from: trained again
            recomputed += max(0, last - resume_from)
            moments.append({"when": when, "last_logged_step": last, "resumes_from": resume_from,
                            "started_from": ckpt_before, "logged_before": logged_before})
            continue
        if proc.returncode != 0:
            raise SystemExit(f"soak: a resumed run failed (exit {proc.returncode}):\n{proc.stderr.read().decode()}")
        break   # finished before the next kill: the run was shorter than the kills needed
    final = subprocess.run(command(data, out, a), env=env, capture_output=True, text=True)
    if final.returncode != 0:
        raise SystemExit(f"soak: the final resume failed (exit {final.returncode}):\n{final.stderr}")
    return {"kills": kills, "recomputed": recomputed, "moments": moments}


def compare(straight: Path, killed: Path) -> dict:
    import torch
    from safetensors.torch import load_file
    from lmforge import checkpoint as ckpt
    a = [r for r in train_records(straight)]
    b = [r for r in train_records(killed)]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    steps_b = [r["step"] for r in b if "loss" in r]
    res = {"metric_lines": (len(a), len(b)),
           "one_line_per_step": steps_b == sorted(set(steps_b)) and not any("cut" in r for r in b),
           "metrics_identical": strip(a) == strip(b)}
    sa, sb = ckpt.latest(straight / "checkpoints"), ckpt.latest(killed / "checkpoints")
    res["final_step"] = (sa.name, sb.name)
    wa, wb = load_file(str(sa / "model.safetensors")), load_file(str(sb / "model.safetensors"))
    res["weights_identical"] = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    def same(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        return x == y
    oa = torch.load(sa / "optimizer.pt", weights_only=True)
    ob = torch.load(sb / "optimizer.pt", weights_only=True)
    res["optimizer_identical"] = same(oa, ob)
    ta, tb = ckpt.load_trainer_state(sa), ckpt.load_trainer_state(sb)
    # the torch RNG (the one training draws from) and the loader/objective position and counters;
    # numpy's and python's global RNGs are saved and restored too, but lmforge never seeds or
    # draws from them, so two uninterrupted runs already differ there
    res["rng_and_loader_identical"] = all(same(ta[k], tb[k]) for k in ("objective", "tokens_seen", "bad_steps",
                                                                       "growth", "fingerprint")) and \
        same(torch.load(sa / "rng.pt", weights_only=True), torch.load(sb / "rng.pt", weights_only=True))
    leftovers = [p.name for p in (killed / "checkpoints").iterdir() if not ckpt.is_complete(p)]
    res["leftover_folders"] = leftovers
    res["done"] = (straight / "DONE.json").is_file() and (killed / "DONE.json").is_file()
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("kills", type=int, nargs="?", default=20)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ckpt-every", type=int, default=5)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp folder, removed)")
    a = p.parse_args()
    import tempfile
    work = Path(a.workdir or tempfile.mkdtemp(prefix="lmforge-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    data = work / "tokens"
    if not (data / "meta.json").is_file():
        make_data(data)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import lmforge.stages.pretrain"], env=env, check=True)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    straight = work / "straight"
    r = subprocess.run(command(data, straight, a), env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"soak: the uninterrupted run failed:\n{r.stderr}")
    total_s = time.perf_counter() - t0
    train_s = max(total_s - startup, 1.0)
    print(f"soak: {a.steps} steps, checkpoint every {a.ckpt_every}, eval every {a.eval_every}; "
          f"uninterrupted run {total_s:.1f}s (start-up {startup:.1f}s)")
    k = killed_run(data, work / "killed", a, env, startup, train_s)
    res = compare(straight, work / "killed")
    ok = all(res[key] for key in ("one_line_per_step", "metrics_identical", "weights_identical",
                                  "optimizer_identical", "rng_and_loader_identical", "done")) \
        and not res["leftover_folders"] and res["final_step"][0] == res["final_step"][1]
    during_start = sum(m["when"] == "start-up" for m in k["moments"])
    print(f"soak: {k['kills']} kill -9 (of {a.kills} asked; {during_start} during start-up), "
          f"{k['recomputed']} steps recomputed in total")
    print(f"soak: metrics lines straight/killed {res['metric_lines'][0]}/{res['metric_lines'][1]}, one line per "
          f"step: {res['one_line_per_step']}; per-step loss/LR/grad-norm/val identical: {res['metrics_identical']}")
    print(f"soak: final checkpoint {res['final_step'][1]}: weights identical {res['weights_identical']}, "
          f"optimizer state identical {res['optimizer_identical']}, torch RNG + loader state identical "
          f"{res['rng_and_loader_identical']}; leftover folders: {res['leftover_folders'] or 'none'}")
    print(f"soak: {'PASS' if ok and k['kills'] == a.kills else 'FAIL'}"
          + ("" if k["kills"] == a.kills else f" (only {k['kills']} kills landed: raise --steps)"))
    if not a.workdir:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    else:
        (work / "soak.json").write_text(json.dumps({**k, **res}, indent=1, default=str))
    return 0 if ok and k["kills"] == a.kills else 1


if __name__ == "__main__":
    sys.exit(main())
