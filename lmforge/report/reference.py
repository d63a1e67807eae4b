"""Reference loss curves: a clean run's curves kept in the repository, to overlay a user's run
on and to catch a silent regression (a technique that quietly stopped working moves a curve).

A curve file holds, per training stage (each folder of the run with a metrics.jsonl), the train
loss by step (thinned to at most MAX_POINTS) and every validation metric by step. `compare`
checks a run's end points against it: the mean train loss over the last LAST steps and the last
value of each validation metric of each stage, within a band of max(ABS_TOL, REL_TOL x value).
The band is for the same machine class (CPU, same thread count, pinned libraries): there a
seeded run repeats bit for bit and any change beyond float noise is a change in behaviour.

`lmforge report` overlays a run on its recipe's curves when the repository has them
(`find_reference`: reference/curves/NAME-smoke.json for a smoke run of recipe NAME, NAME.json
for a full run), stage by stage (`by_stage`).
"""
from __future__ import annotations

import json
from pathlib import Path

CURVES_DIR = Path(__file__).resolve().parents[2] / "reference" / "curves"   # in a source checkout
MAX_POINTS = 200
LAST = 5
ABS_TOL, REL_TOL = 0.02, 0.01


def _records(metrics: Path) -> list[dict]:
    out = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def stage_curves(metrics: Path) -> dict:
    recs = _records(metrics)
    train = [[r["step"], r["loss"]] for r in recs if "loss" in r and "step" in r]
    stride = max(1, -(-len(train) // MAX_POINTS))
    thinned = train[::stride] + ([train[-1]] if train and (len(train) - 1) % stride else [])
    val: dict[str, list] = {}
    for r in recs:
        for k, v in r.items():
            if k.startswith("val") and isinstance(v, (int, float)) and "step" in r:
                val.setdefault(k, []).append([r["step"], v])
    tail = [l for _, l in train[-LAST:]]
    return {"train": thinned, "train_end": sum(tail) / len(tail) if tail else None, "val": val}


def curves(run_dir: str | Path) -> dict:
    """{stage path relative to the run: curves} for every metrics.jsonl under the run folder."""
    run_dir = Path(run_dir)
    out = {}
    for m in sorted(run_dir.rglob("metrics.jsonl")):
        if "report" in m.relative_to(run_dir).parts:
            continue
        out[str(m.parent.relative_to(run_dir))] = stage_curves(m)
    return out


def _within(a: float, b: float) -> bool:
    return abs(a - b) <= max(ABS_TOL, REL_TOL * abs(b))


def compare(run: dict, ref: dict) -> list[str]:
    """One line per end point outside the band, per stage missing from either side."""
    bad = []
    for stage in sorted(set(ref) | set(run)):
        if stage not in run or stage not in ref:
            bad.append(f"{stage}: {'missing from the run' if stage not in run else 'not in the reference'}")
            continue
        a, b = run[stage], ref[stage]
        if (a["train_end"] is None) != (b["train_end"] is None) or (
                b["train_end"] is not None and not _within(a["train_end"], b["train_end"])):
            bad.append(f"{stage}: train loss (last {LAST} steps) {a['train_end']} vs reference {b['train_end']}")
        for k, pts in b["val"].items():
            got = a["val"].get(k)
            if not got:
                bad.append(f"{stage}: {k} missing (reference {pts[-1][1]:.4f})")
            elif not _within(got[-1][1], pts[-1][1]):
                bad.append(f"{stage}: {k} {got[-1][1]:.4f} vs reference {pts[-1][1]:.4f}")
    return bad


def find_reference(meta: dict, folder: Path | None = None) -> Path | None:
    """The reference curve file of a run's recipe (recipe.json's name and smoke flag), or None."""
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    path = (folder or CURVES_DIR) / (f"{name}-smoke.json" if meta.get("smoke") else f"{name}.json")
    return path if path.is_file() else None


def load_reference(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ref if isinstance(ref, dict) else None


def by_stage(ref: dict, stages, run_dir: str | Path) -> dict[str, dict]:
    """{stage name: its reference curves} for the report's stages (StageFolder: name, dir), matched
    by the stage folder's path in the run (how `curves` keys them), else by name."""
    run_dir = Path(run_dir).resolve()
    out = {}
    for st in stages:
        try:
            key = str(Path(st.dir).resolve().relative_to(run_dir))
        except ValueError:
            key = st.name
        found = ref.get(key) or ref.get(st.name)
        if isinstance(found, dict):
            out[st.name] = found
    return out
