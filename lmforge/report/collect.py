"""Find what a run folder holds: stages and, per stage, its metrics, data stats, mixture,
eval results, needle heatmap and grow similarity. Anything missing is simply None/empty,
so a partial run still gives a report."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

_DATA_STEP = re.compile(r"^(\d+)-(.+)$")


@dataclass
class StageFolder:
    """What one stage's out_dir holds, read for the report (not lmforge.stagekit.stage.Stage,
    the stage's declaration)."""
    name: str
    dir: Path
    kind: str = ""
    status: str = ""
    objective: str = ""        # what it trains, as its stage descriptor declares (recipe.json)
    metrics: list[dict] = field(default_factory=list)     # metrics.jsonl records
    mixture: list[dict] | None = None                     # mixture.json (realised, by stage)
    data_steps: list[dict] = field(default_factory=list)  # NN-step/stats.json, in order
    eval: dict | None = None                              # eval.json
    needle: dict | None = None                            # needle.json
    needle_png: Path | None = None
    grow: dict | None = None                              # {"file", "similarity": [..], "raw"}
    longstudy: dict | None = None                         # longstudy.json (lmforge longstudy)
    refusals: dict | None = None                          # refusals.json (dpo: model-written refusals)
    done: dict | None = None                              # DONE.json summary
    stats: dict | None = None                             # stats.json of a training stage (filter counts)
    config: dict | None = None                            # config.json (the resolved stage config)
    sftdata: dict | None = None                           # sftdata.json (SFT data curation funnel)
    sftgrid: dict | None = None                           # grid.json (SFT task-mix grid search)
    finding: dict | None = None                           # result.json (lmforge findings)
    problems: list[str] = field(default_factory=list)     # unreadable files, named
    deps: list[str] = field(default_factory=list)         # the stages it reads (recipe.json)
    seconds: float | None = None                          # wall time of its run (recipe.json)

    @property
    def has_content(self) -> bool:
        return bool(self.metrics or self.mixture or self.data_steps or self.eval or self.needle
                    or self.needle_png or self.grow or self.done or self.longstudy or self.sftdata
                    or self.sftgrid or self.finding)

    @property
    def train_records(self) -> list[dict]:
        return [r for r in self.metrics if "loss" in r]


def _json(path: Path, problems: list[str]):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{path}: unreadable ({e.__class__.__name__})")
        return None


def read_metrics(path: Path, problems: list[str]) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            problems.append(f"{path}:{n}: malformed line skipped")  # e.g. a line cut by a crash
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            out.append(rec)
    return out


def find_similarity(obj, depth: int = 0):
    """The first list of numbers under a key mentioning 'sim' (layer cosine similarities)."""
    if depth > 4:
        return None
    if isinstance(obj, dict):
        layers = obj.get("layers")   # lmforge grow's similarity.json: [{"layer", "cosine"}, ...]
        if isinstance(layers, list) and layers and all(isinstance(r, dict) and "cosine" in r for r in layers):
            return [float(r["cosine"]) for r in layers]
        for k, v in obj.items():
            if "sim" in str(k).lower() and isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                return [float(x) for x in v]
        for v in obj.values():
            found = find_similarity(v, depth + 1)
            if found:
                return found
    return None


def load_stage(name: str, folder: Path, kind: str = "", status: str = "") -> StageFolder:
    st = StageFolder(name, folder, kind, status)
    if not folder.is_dir():
        return st
    p = st.problems
    if (folder / "metrics.jsonl").is_file():
        st.metrics = read_metrics(folder / "metrics.jsonl", p)
    if (folder / "mixture.json").is_file():
        st.mixture = normalise_mixture(_json(folder / "mixture.json", p), st.name)
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and _DATA_STEP.match(sub.name) and (sub / "stats.json").is_file():
            stats = _json(sub / "stats.json", p)
            if isinstance(stats, dict) and "in" in stats:
                st.data_steps.append({"dir": sub.name, **stats})
    for f, attr in (("eval.json", "eval"), ("needle.json", "needle"), ("DONE.json", "done"),
                    ("longstudy.json", "longstudy"), ("refusals.json", "refusals"),
                    ("sftdata.json", "sftdata"), ("grid.json", "sftgrid"), ("stats.json", "stats"),
                    ("result.json", "finding"),
                    ("config.json", "config")):
        if (folder / f).is_file():
            value = _json(folder / f, p)
            if value is not None and not isinstance(value, dict):
                p.append(f"{folder / f}: not a JSON object, ignored")
                value = None
            setattr(st, attr, value)
    if (folder / "needle.png").is_file():
        st.needle_png = folder / "needle.png"
    for f in sorted(folder.glob("*.json")):
        if "sim" in f.name.lower() or f.name in ("grow.json",):
            raw = _json(f, p)
            sim = find_similarity(raw) if raw is not None else None
            if sim:
                st.grow = {"file": f.name, "similarity": sim, "raw": raw}
                break
    if not st.kind:
        st.kind = guess_kind(st)
    if not st.status:
        st.status = "done" if st.done is not None else ("partial" if st.has_content else "missing")
    return st


def guess_kind(st: StageFolder) -> str:
    if st.finding is not None:
        return "findings"
    if st.sftdata is not None:
        return "sftdata"
    if st.sftgrid is not None:
        return "sftgrid"
    if st.data_steps:
        return "data"
    if st.eval is not None:
        return "eval"
    if st.needle is not None or st.needle_png:
        return "needle"
    if st.longstudy is not None:
        return "longstudy"
    if st.grow:
        return "grow"
    if st.metrics:
        return "train"
    return ""


def discover(run_dir: str | Path) -> tuple[str, list[StageFolder], list[str]]:
    """(run name, stages in order, problems). Reads RUN_DIR/recipe.json when present, else
    treats RUN_DIR as one stage folder, else its subfolders as stages."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    problems: list[str] = []
    recipe = run_dir / "recipe.json"
    if recipe.is_file():
        data = _json(recipe, problems) or {}
        stages = []
        for s in data.get("stages", []):
            name = str(s.get("name", ""))
            out = Path(s["out_dir"]) if s.get("out_dir") else run_dir / name
            if not out.is_dir() and (run_dir / name).is_dir():
                out = run_dir / name  # out_dir recorded relative to another working directory
            status = s.get("status", "")
            if s.get("kind") == "report" and status == "running":
                status = "this report"   # the report is being written by this very stage
            st = load_stage(name, out, s.get("kind", ""), status)
            st.deps = [str(d) for d in s.get("deps") or []]
            st.objective = str(s.get("objective") or "")
            st.seconds = s.get("seconds")
            stages.append(st)
        return data.get("name") or run_dir.name, stages, problems
    single = load_stage(run_dir.name, run_dir)
    if single.has_content:
        return run_dir.name, [single], problems
    subs = [load_stage(d.name, d) for d in sorted(run_dir.iterdir()) if d.is_dir()]
    # a stage folder whose every file is unreadable has no content but must not go unmentioned
    problems += single.problems + [p for s in subs if not s.has_content for p in s.problems]
    return run_dir.name, [s for s in subs if s.has_content], problems


def normalise_mixture(mix, name: str) -> list[dict] | None:
    """mixture.json as a list of {stage, tokens, share}: pretraining writes that list; SFT
    writes one dict of reply vs mixed-in pretraining target tokens."""
    if isinstance(mix, list):
        return [r for r in mix if isinstance(r, dict)]
    if isinstance(mix, dict) and "sft_target_tokens" in mix:
        tokens = {"sft replies": int(mix.get("sft_target_tokens", 0)),
                  "pretraining text": int(mix.get("pretraining_target_tokens", 0))}
        total = sum(tokens.values()) or 1
        return [{"stage": name, "tokens": tokens, "share": {k: v / total for k, v in tokens.items()},
                 "target_pretraining_share": mix.get("target_pretraining_share")}]
    return None


def recipe_meta(run_dir: str | Path) -> dict:
    """recipe.json's run-level facts (name, recipe path, smoke factors), or {}."""
    path = Path(run_dir) / "recipe.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: data.get(k) for k in ("name", "recipe", "smoke")} if isinstance(data, dict) else {}
