"""Kill -9 soak of any recipe stage, or of a whole recipe smoke run (scripts/soak_resume.sh --stage).

    scripts/soak_resume.sh --stage sft [N=6] [--recipe recipes/tiny.yaml] [--workdir DIR] [--seed 0]
    scripts/soak_resume.sh --stage recipe [N]      # the whole `lmforge run RECIPE --smoke`
    scripts/soak_resume.sh --stage all [N]         # every training stage of the recipe, one after another

Stage S: a reference smoke run of the recipe up to S (`lmforge run R --smoke --target S`), run
straight through; its folder is set aside and a copy put back at the same path (so files that
hash or name a path compare byte for byte), S's output deleted, and S rerun there
(`--only S`) while being killed with SIGKILL N times: in turn during start-up (importing,
building, loading), while a checkpoint is being written (the moment a `.tmp-step-N` folder or a
`.NAME.tmp-PID` file appears) and at random moments of the stage; after each kill the same
command is started again, and after the last one it runs to the end. Then S's output is compared
with the reference's: per-step metrics (wall-clock fields aside), the final checkpoint's weights,
optimizer state, torch RNG state and loader position, every checkpoint file that must be
byte-identical (grow's step-0), DONE.json's summary (timings aside), every other file of a
stage that keeps no checkpoint (shards, token files, eval parts: JSON without timing fields, the
rest byte for byte; the report pages and input fingerprints aside), and no temporary or
incomplete folder left. `recipe`: the whole smoke run is killed the same way and
every stage compared.

Run it on a tree nobody edits meanwhile (the reference and the killed runs import the code
anew each time: a change in between shows as a difference). Needs minutes per stage on 2 CPU cores (the reference smoke run up to S, then S N+1 times).
Exit 0 when everything matches.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TIMING = {"tokens_per_s", "mfu", "seconds", "cpu_seconds", "elapsed", "time", "wall_s"}
# not outputs: the report's freshness fingerprint (sizes and modification times of its inputs,
# lmforge.report.inputs), which differs between any two runs by design
VOLATILE = TIMING | {"inputs"}
TRAINING_KINDS = {"pretrain", "grow", "longctx", "sft", "dpo", "selfknow", "sftgrid", "longsft"}
POLL_S = 0.01


def lmforge(recipe: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", "run", recipe, "--smoke", "--quiet", "--set", f"out_dir={out}", *extra]


def run_dir(out: Path) -> Path:   # `lmforge run --smoke` writes into OUT-smoke
    return out.with_name(out.name + "-smoke")


def ledger(out: Path) -> dict:
    return json.loads((run_dir(out) / "recipe.json").read_text())


def stage_dirs(out: Path) -> dict[str, tuple[str, Path]]:
    """name -> (kind, out_dir) from the run folder's recipe.json."""
    return {s["name"]: (s["kind"], Path(s["out_dir"])) for s in ledger(out)["stages"]}


def saving(folder: Path) -> bool:
    """A checkpoint or an atomic file being written anywhere under `folder`."""
    try:
        for p in folder.rglob(".*"):
            if p.name.startswith(".tmp-step-") or ".tmp-" in p.name:
                return True
    except OSError:   # a folder renamed while walking: that is a save too
        return True
    return False


def kill_loop(cmd: list[str], watch: Path, kills: int, startup: float, duration: float, seed: int,
              env: dict) -> dict:
    """Start `cmd`, SIGKILL it at a chosen moment, start it again; N times, then to the end."""
    rng = random.Random(seed)
    done, moments = 0, []
    remaining = duration   # work left: a resumed run skips what the killed ones finished
    kinds = ["start-up", "save", "random", "random", "save"]
    while done < kills:
        kind = kinds[done % len(kinds)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.perf_counter()
        if kind == "start-up":
            deadline = t0 + rng.uniform(0.2, 0.9) * startup
            while proc.poll() is None and time.perf_counter() < deadline:
                time.sleep(POLL_S)
        elif kind == "save":
            while proc.poll() is None and not saving(watch):
                time.sleep(POLL_S)
        else:
            deadline = t0 + startup + rng.uniform(0.05, 0.5) * max(remaining - startup, startup)
            while proc.poll() is None and time.perf_counter() < deadline:
                time.sleep(POLL_S)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done += 1
            after = time.perf_counter() - t0
            remaining -= max(0.0, after - startup)
            moments.append({"when": kind, "after_s": round(after, 2)})
            continue
        if proc.returncode != 0:
            raise SystemExit(f"soak: a resumed run failed (exit {proc.returncode}):\n{proc.stderr.read().decode()}")
        moments.append({"when": kind, "finished_first": True})
        break   # the stage finished before this kill landed
    final = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if final.returncode != 0:
        raise SystemExit(f"soak: the final resume failed (exit {final.returncode}):\n{final.stderr}")
    return {"kills": done, "moments": moments}


def metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            out.append({"cut": line})
            continue
        out.append({k: v for k, v in rec.items() if k not in TIMING})
    return out


def plain(x, drop: set[str]):
    """A JSON value without timing fields and with run-folder paths reduced to their tail."""
    if isinstance(x, dict):
        return {k: plain(v, drop) for k, v in x.items() if k not in drop and not k.endswith("_per_s")}
    if isinstance(x, list):
        return [plain(v, drop) for v in x]
    if isinstance(x, str) and os.sep in x and ("-smoke" in x):
        return x.split("-smoke", 1)[1]
    return x


def same_tensors(x, y) -> bool:
    import torch
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same_tensors(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(same_tensors(p, q) for p, q in zip(x, y))
    return x == y


def compare_checkpoints(a: Path, b: Path) -> dict:
    """The newest checkpoint of two run folders (a stage's out_dir, or an sftgrid point's)."""
    import torch
    from safetensors.torch import load_file

    from lmforge import checkpoint as ckpt
    sa, sb = ckpt.latest(a / "checkpoints"), ckpt.latest(b / "checkpoints")
    if sa is None or sb is None:
        return {"checkpoint": (str(sa), str(sb)), "ok": sa is None and sb is None}
    res = {"checkpoint": (sa.name, sb.name), "complete": ckpt.is_complete(sa) and ckpt.is_complete(sb)}
    wa, wb = load_file(str(sa / "model.safetensors")), load_file(str(sb / "model.safetensors"))
    res["weights"] = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for name in ("optimizer.pt", "rng.pt"):
        if (sa / name).is_file() or (sb / name).is_file():
            res[name] = (sa / name).is_file() and (sb / name).is_file() and same_tensors(
                torch.load(sa / name, weights_only=True), torch.load(sb / name, weights_only=True))
    ta, tb = ckpt.load_trainer_state(sa), ckpt.load_trainer_state(sb)
    res["loader_and_counters"] = all(same_tensors(ta.get(k), tb.get(k)) for k in
                                     ("objective", "tokens_seen", "bad_steps", "growth", "fingerprint", "step"))
    res["leftovers"] = [p.name for p in (b / "checkpoints").iterdir() if not ckpt.is_complete(p)]
    res["ok"] = res["checkpoint"][0] == res["checkpoint"][1] and res["complete"] and not res["leftovers"] and all(
        v for k, v in res.items() if k not in ("checkpoint", "leftovers", "ok"))
    return res


def compare_files(a: Path, b: Path) -> dict:
    """Every other file of a non-training stage (shards, token files, indexes, plots): JSON
    without timing fields, the rest byte for byte. The report's pages are left out (they print
    timings)."""
    # DONE / STARTED of a data step hold a fingerprint of its inputs' names and modification times
    skip = {"DONE.json", "metrics.jsonl", "report.html", "report.md", "DONE", "STARTED"}
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name not in skip and "lock" not in p.name}

    fa, fb = files(a), files(b)
    differ = []
    for rel in sorted(fa & fb):
        pa, pb = a / rel, b / rel
        if pa.suffix == ".json":
            same = plain(json.loads(pa.read_text()), VOLATILE) == plain(json.loads(pb.read_text()), VOLATILE)
        else:
            same = pa.read_bytes() == pb.read_bytes() or pa.suffix == ".png"
        if not same:
            differ.append(str(rel))
    return {"files": len(fa), "missing": sorted(map(str, fa - fb)), "extra": sorted(map(str, fb - fa)),
            "differ": differ, "ok": fa == fb and not differ}


def compare_stage(kind: str, a: Path, b: Path) -> dict:
    res: dict = {"done": (a / "DONE.json").is_file() and (b / "DONE.json").is_file()}
    if res["done"]:
        da, db = (plain(json.loads((p / "DONE.json").read_text()), VOLATILE) for p in (a, b))
        res["summary"] = da == db
    ma, mb = metrics(a), metrics(b)
    res["metrics"] = ma == mb and not any("cut" in r for r in mb)
    runs = [p.parent for p in sorted(a.rglob("checkpoints"))] if kind in TRAINING_KINDS else []
    if not runs:
        res["files"] = compare_files(a, b)
    for ra in runs:
        rel = ra.relative_to(a)
        res[f"checkpoint {rel}"] = compare_checkpoints(ra, b / rel)
    res["ok"] = all(v["ok"] if isinstance(v, dict) else v for v in res.values())
    return res


def startup_seconds(env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import lmforge.cli, torch"], env=env, check=True)
    return time.perf_counter() - t0


def straight(recipe: str, out: Path, env: dict, *extra: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(lmforge(recipe, out, *extra), env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"soak: the reference run failed (exit {r.returncode}):\n{r.stderr}")
    return time.perf_counter() - t0


def soak_stage(recipe: str, name: str, work: Path, kills: int, seed: int, env: dict, startup: float) -> bool:
    """Reference and killed run live, in turn, at the same path (work/run-smoke): files that hash
    or name a path (record ids, settings digests) then compare byte for byte."""
    run, ref = work / "run", work / "ref-smoke"
    shutil.rmtree(run_dir(run), ignore_errors=True)
    if ref.exists():                      # the stages before S, finished for an earlier S
        ref.rename(run_dir(run))
    straight(recipe, run, env, "--target", name)
    kind, out = stage_dirs(run)[name]
    seconds = ledger(run)["stages"][[s["name"] for s in ledger(run)["stages"]].index(name)].get("seconds") or 10
    run_dir(run).rename(ref)
    shutil.copytree(ref, run_dir(run), symlinks=True)   # copy2: modification times kept, so stages skip
    shutil.rmtree(out)
    k = kill_loop(lmforge(recipe, run, "--only", name), out, kills, startup, seconds + startup, seed, env)
    res = compare_stage(kind, ref / out.relative_to(run_dir(run)), out)
    report(name, k, res)
    return res["ok"] and k["kills"] == kills


def soak_whole(recipe: str, work: Path, kills: int, seed: int, env: dict, startup: float) -> bool:
    run, ref = work / "run", work / "ref-all-smoke"
    shutil.rmtree(run_dir(run), ignore_errors=True)
    shutil.rmtree(ref, ignore_errors=True)
    total = straight(recipe, run, env)
    run_dir(run).rename(ref)
    k = kill_loop(lmforge(recipe, run), run_dir(run), kills, startup, total, seed, env)
    ok = k["kills"] == kills
    results = {}
    for name, (kind, b) in stage_dirs(run).items():
        results[name] = compare_stage(kind, ref / b.relative_to(run_dir(run)), b)
        ok = ok and results[name]["ok"]
    statuses = {s["name"]: s["status"] for s in ledger(run)["stages"]}
    done = all(v == "done" for v in statuses.values())
    ok = ok and done
    report("recipe", k, {"stages": {n: r["ok"] for n, r in results.items()}, "statuses_done": done, "ok": ok})
    for n, r in results.items():
        if not r["ok"]:
            print(f"soak:   {n}: {json.dumps(r, default=str)}")
    return ok


def report(name: str, k: dict, res: dict) -> None:
    whens = [m["when"] for m in k["moments"] if "after_s" in m]
    counts = {w: whens.count(w) for w in dict.fromkeys(whens)}
    print(f"soak: {name}: {k['kills']} kill -9 ({', '.join(f'{n} {w}' for w, n in counts.items()) or 'none'}); "
          f"{'PASS' if res['ok'] else 'FAIL'}: {json.dumps(res, default=str)}")


def training_stages(recipe: str) -> list[str]:
    from lmforge.recipe.config import load_recipe
    return [st.name for st in load_recipe(recipe, smoke=True).stages if st.kind in TRAINING_KINDS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", required=True, help="a stage name of the recipe, `recipe` (the whole smoke run) "
                                                  "or `all` (every training stage in turn)")
    p.add_argument("kills", type=int, nargs="?", default=6)
    p.add_argument("--recipe", default="recipes/tiny.yaml")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp folder, removed)")
    a = p.parse_args(argv)
    import tempfile
    work = Path(a.workdir or tempfile.mkdtemp(prefix="lmforge-soak-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    startup = startup_seconds(env)
    if a.stage == "recipe":
        ok = soak_whole(a.recipe, work, a.kills, a.seed, env, startup)
    else:
        names = training_stages(a.recipe) if a.stage == "all" else [a.stage]
        ok = True
        for i, name in enumerate(names):
            ok = soak_stage(a.recipe, name, work, a.kills, a.seed + i, env, startup) and ok
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
