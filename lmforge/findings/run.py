"""Run one finding: its plan first (plan.json), then every arm x seed (each recorded in
arms/<arm>/seed<k>.json as it finishes, so an interrupted finding resumes at the next arm),
then the comparison, the verdicts and the plot (result.json, finding.png)."""
from __future__ import annotations

import math
import time
from pathlib import Path

from tqdm import tqdm

from lmforge.config import ConfigError
from lmforge.findings import catalog
from lmforge.findings.context import Ctx
from lmforge.findings.plot import plot_finding
from lmforge.findings.spec import Finding
from lmforge.findings.verdict import arm_stats, compare
from lmforge.io.atomic import read_json, write_json

PLAN, RESULT = "plan.json", "result.json"


def guard_plan(out: Path, plan: dict, amend: str) -> dict:
    """Write the plan before anything runs; refuse a changed plan once arms have results,
    unless `amend` says why (kept in the plan's history, and so in the report)."""
    path = out / PLAN
    old = read_json(path) if path.exists() else None
    has_results = any((out / "arms").glob("*/seed*.json"))
    history = list(old.get("amendments", [])) if old else []
    if old is not None:
        before = {k: v for k, v in old.items() if k != "amendments"}
        if before != plan and has_results:
            changed = sorted(k for k in set(before) | set(plan) if before.get(k) != plan.get(k))
            if not amend:
                raise ConfigError(f"{path}: the plan changed ({', '.join(changed)}) after arms were recorded; "
                                  f"say why with --set amend='reason' (kept in the report) or use a new out_dir")
            history.append({"changed": changed, "reason": amend, "before": {k: before.get(k) for k in changed}})
    plan = {**plan, "amendments": history}
    write_json(path, plan)
    return plan


def run_one(finding: Finding, ctx: Ctx, arm: str, seed: int, progress: bool) -> dict:
    """One arm x seed: its recorded numbers, or run it and record them (wall and CPU seconds)."""
    path = ctx.out / "arms" / arm / f"seed{seed}.json"
    if path.exists():
        got = read_json(path)
        if all(k in got.get("metrics", {}) for k in finding.metric_keys()):
            return got
        # recorded before the finding asked for a metric (an amended plan): run it again
    t0, c0 = time.perf_counter(), time.process_time()
    got = finding.run(ctx, arm, seed)
    missing = [k for k in finding.metric_keys() if k not in got.get("metrics", {})]
    if missing:
        raise RuntimeError(f"finding {finding.name}: arm {arm} returned no {', '.join(missing)}")
    got["wall_s"] = round(time.perf_counter() - t0, 2)
    got["cpu_s"] = round(time.process_time() - c0, 2)
    write_json(path, got)
    if progress:
        tqdm.write(f"  {finding.name}: {arm} seed {seed}: {finding.key} {got['metrics'][finding.key]:.4f} "
                   f"({got['wall_s']:.0f} s)")
    return got


def run_seed(cfg, seed: int, threads: int, progress: bool) -> dict[str, dict]:
    """Every arm of one seed, in the finding's order (an arm may read an earlier arm's output of
    the same seed, e.g. a shared base model): the unit a worker process runs."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        finding = catalog.get(cfg.name)
        ctx = Ctx(cfg, Path(cfg.out_dir))
        return {arm: run_one(finding, ctx, arm, seed, progress) for arm in finding.arms}
    finally:      # in this process (workers: 1) the caller's thread count comes back
        torch.set_num_threads(before)


def run_arms(finding: Finding, cfg, progress: bool) -> dict[str, dict[int, dict]]:
    """All arms x seeds, every arm on one torch thread: at these model sizes two single-threaded
    runs do more work per second than one run on two threads (and far more on a shared machine,
    where waiting threads spin), and one thread fixes the order of float reductions, so the
    numbers are the same whatever `workers` is (it sets how many seeds run at once)."""
    results: dict[str, dict[int, dict]] = {arm: {} for arm in finding.arms}
    seeds = list(cfg.seeds)
    bar = tqdm(total=len(seeds), desc=f"finding {finding.name}", unit="seed", disable=not progress,
               dynamic_ncols=True)
    if cfg.workers <= 1 or len(seeds) == 1:
        done = ((s, run_seed(cfg, s, 1, progress)) for s in seeds)
        for s, by_arm in done:
            for arm, r in by_arm.items():
                results[arm][s] = r
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(min(cfg.workers, len(seeds)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_seed, cfg, s, 1, progress): s for s in seeds}
            for fut in as_completed(futures):
                for arm, r in fut.result().items():
                    results[arm][futures[fut]] = r
                bar.update(1)
    bar.close()
    return results


def summarise(finding: Finding, plan: dict, results: dict[str, dict[int, dict]]) -> dict:
    per_arm = {}
    for arm, by_seed in results.items():
        per_arm[arm] = {k: arm_stats([r["metrics"][k] for _, r in sorted(by_seed.items())])
                        for k in finding.metric_keys()}
        per_arm[arm]["wall_s"] = sum(r.get("wall_s", 0.0) for r in by_seed.values())
        per_arm[arm]["cpu_s"] = sum(r.get("cpu_s", 0.0) for r in by_seed.values())
    comparisons = {}
    for arm, exp in finding.expect.items():
        ref, key = finding.reference(arm), finding.key_of(arm)
        base = {s: r["metrics"][key] for s, r in results[ref].items()}
        var = {s: r["metrics"][key] for s, r in results[arm].items()}
        comparisons[arm] = {**compare(base, var, exp, finding.higher_is_better, finding.tolerance),
                            "against": ref, "key": key}
    verdicts = [c["verdict"] for c in comparisons.values()]
    overall = ("agrees" if all(v == "agrees" for v in verdicts) else
               "disagrees" if all(v == "disagrees" for v in verdicts) else
               "mixed" if "agrees" in verdicts or "disagrees" in verdicts else "inconclusive")
    extras = {}
    for arm, by_seed in results.items():
        for r in by_seed.values():
            for k, v in (r.get("notes") or {}).items():
                extras.setdefault(arm, {}).setdefault(k, []).append(v)
    return {**plan, "arms": per_arm, "comparisons": comparisons, "verdict": overall, "notes": extras,
            "cpu_s": round(sum(a["cpu_s"] for a in per_arm.values()), 1)}


def run_finding(cfg, progress: bool = True) -> dict:
    finding = catalog.get(cfg.name)
    for key in finding.needs:
        if not getattr(cfg, key):
            raise ConfigError(f"{key}: finding {finding.name} needs it (e.g. --set {key}=runs/findings/"
                              f"{'tokens' if key == 'data' else 'corpus'})")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(cfg, out)
    plan = guard_plan(out, finding.plan(cfg.seeds, cfg.scale, ctx.steps), cfg.amend)
    t0 = time.perf_counter()
    if finding.prepare is not None:
        finding.prepare(ctx)
    results = run_arms(finding, cfg, progress)
    result = summarise(finding, plan, results)
    result["wall_s"] = round(time.perf_counter() - t0, 1)   # this call's wall time (arms recorded before: 0)
    result["workers"] = cfg.workers
    result["curves"] = {arm: {s: r.get("curves", {}) for s, r in by_seed.items()} for arm, by_seed in results.items()}
    plot_finding(finding, result, out / "finding.png")
    write_json(out / RESULT, result)
    verdicts = {arm: c["verdict"] for arm, c in result["comparisons"].items()}
    return {"finding": finding.name, "verdict": result["verdict"], "verdicts": verdicts,
            "diff": {arm: _round(c["diff"]) for arm, c in result["comparisons"].items()},
            "stderr": {arm: _round(c["stderr"]) for arm, c in result["comparisons"].items()},
            "cpu_s": result["cpu_s"], "wall_s": result["wall_s"]}


def _round(x):
    return None if x is None or not math.isfinite(x) else round(x, 5)
