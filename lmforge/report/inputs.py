"""What a report was built from, as one fingerprint: the report stage skips when it is unchanged.

A report reads recipe.json and the top-level files of each stage folder (metrics.jsonl,
*.json, needle.png) and of its NN-step/ subfolders (the data steps' stats.json). The
fingerprint hashes, for each of those files, its path and content when it is small (up to
1 MiB: a skipped stage may rewrite its summary unchanged), else its size and modification
time (shards of gigabytes are not read), recipe.json by the fields the report uses
(the report stage's own status, which this very run sets to "running", left out), the report
code's files the same way (a changed report module redraws), the CJK font in use, and the
recipe's reference curve file (lmforge.report.reference) drawn under the run's curves.
Rerunning a finished recipe therefore leaves report.html as it was; any stage that reran,
resumed or wrote a file changes the fingerprint and the report is drawn again.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from lmforge.report.reference import find_reference

_DATA_STEP = re.compile(r"^\d+-.+$")
_RECIPE_KEYS = ("name", "kind", "out_dir", "deps", "status", "seconds")


_SMALL = 1 << 20     # files up to 1 MiB are hashed by content: a stage that skips may rewrite
                     # them unchanged (the data stage rewrites summary.json and DONE.json)


def _stat_line(path: Path, root: Path) -> str:
    st = path.stat()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    if st.st_size <= _SMALL:
        return f"{rel}\t{hashlib.sha256(path.read_bytes()).hexdigest()}"
    return f"{rel}\t{st.st_size}\t{st.st_mtime_ns}"


def _folder_lines(folder: Path, root: Path, skip: Path) -> list[str]:
    """Top-level files of a stage folder and of its data-step subfolders (not checkpoints/)."""
    if not folder.is_dir() or folder.resolve() == skip:
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file():
            out.append(_stat_line(p, root))
        elif p.is_dir() and _DATA_STEP.match(p.name) and p.resolve() != skip:
            out += [_stat_line(q, root) for q in sorted(p.iterdir()) if q.is_file()]
    return out


def _recipe(run_dir: Path) -> tuple[dict | None, list[Path]]:
    """(recipe.json reduced to what the report reads, the stage folders), or (None, [])."""
    try:
        data = json.loads((run_dir / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, []
    if not isinstance(data, dict):
        return None, []
    stages, folders = [], []
    for s in data.get("stages") or []:
        if not isinstance(s, dict):
            continue
        kept = {k: s.get(k) for k in _RECIPE_KEYS}
        if s.get("kind") == "report":
            kept.pop("status")
            kept.pop("seconds")
        stages.append(kept)
        name = str(s.get("name", ""))
        out = Path(s["out_dir"]) if s.get("out_dir") else run_dir / name
        folders.append(out if out.is_dir() else run_dir / name)
    return {"name": data.get("name"), "recipe": data.get("recipe"), "smoke": data.get("smoke"),
            "stages": stages}, folders


def fingerprint(run_dir: str | Path, out_dir: str | Path) -> str:
    """sha256 (hex) of the report's inputs in `run_dir`, the report's own `out_dir` left out."""
    from lmforge.report import fonts

    run_dir, skip = Path(run_dir), Path(out_dir).resolve()
    recipe, folders = _recipe(run_dir)
    if recipe is None:      # a single stage folder, or a folder of stage folders (lmforge.report.collect)
        folders = [run_dir] + [d for d in sorted(run_dir.iterdir()) if d.is_dir()] if run_dir.is_dir() else []
    lines = [json.dumps(recipe, sort_keys=True, default=str)]
    for folder in folders:
        lines += _folder_lines(folder, run_dir, skip)
    code = Path(__file__).parent
    lines += [_stat_line(p, code) for p in sorted(code.glob("*.py"))]
    ref = find_reference(recipe or {})          # the reference curves drawn under the run's
    lines.append(_stat_line(ref, ref.parent) if ref else "reference\tnone")
    font = fonts.find()
    lines.append(f"font\t{font.path}\t{font.index}" if font else "font\tnone")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
