"""Code: the CPython standard library's own .py files, plus the JSON files it ships.

Raw record per file: {"path": relative path, "kind": "python"|"json", "text"}.
Output: docs/stdlib.jsonl.zst, domain "code", meta.format = "python" or "json" (the JSON
files feed Skywork's keep-some-JSON/YAML rule for code data). The quality references
(code_refs.py) are withheld: a reference module is never a document.
"""
from __future__ import annotations

import platform
import sysconfig
from pathlib import Path
from typing import Iterator

from . import code_refs
from .common import Source, override_path, stable_hash

LICENSE = "PSF-2.0"
MAX_FILE_BYTES = 200 * 1024  # generated data modules (pydoc_data/topics.py) are not code
SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__"}
KINDS = {".py": "python", ".json": "json"}


def locate(override: Path | None) -> Path | None:
    root = override_path("LMFORGE_STDLIB_DIR", override) or Path(sysconfig.get_paths()["stdlib"])
    return root if root.is_dir() and any(root.glob("*.py")) else None


def version(root: Path) -> str:
    return platform.python_version()


def read(root: Path) -> Iterator[dict]:
    files = []
    for f in root.rglob("*"):
        rel = f.relative_to(root)
        if f.suffix in KINDS and not SKIP_PARTS.intersection(rel.parts) and f.is_file():
            files.append(rel.as_posix())
    files.sort(key=lambda p: (stable_hash(p), p))  # a budget gets a spread, not one package
    for rel in _mix_json(files):
        f = root / rel
        if f.stat().st_size > MAX_FILE_BYTES:
            continue
        raw = f.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # a few test files are latin-1 on purpose
            yield {"path": rel, "kind": KINDS[f.suffix], "error": "not UTF-8"}
            continue
        yield {"path": rel, "kind": KINDS[f.suffix], "text": text}


def _mix_json(files: list[str], every: int = 10) -> list[str]:
    """One JSON file after every `every` Python files, so a small budget keeps some JSON."""
    py = [f for f in files if f.endswith(".py")]
    js = [f for f in files if not f.endswith(".py")]
    out = []
    for i, f in enumerate(py):
        out.append(f)
        if i % every == every - 1 and js:
            out.append(js.pop(0))
    return out + js


def emit(records: list[dict], ctx) -> dict:
    counts = {"docs": 0, "docs_python": 0, "docs_json": 0, "withheld_references": 0}
    for rec in records:
        text, kind = rec.get("text"), rec.get("kind")
        if rec.get("path") in code_refs.PATHS:
            counts["withheld_references"] += 1
            continue
        if rec.get("error") or not isinstance(text, str) or kind not in KINDS.values():
            ctx.reject("stdlib", str(rec.get("path")), rec.get("error") or "no text")
            continue
        if not text.strip():
            ctx.reject("stdlib", str(rec.get("path")), "empty file")
            continue
        ctx.add("docs/stdlib.jsonl.zst", {
            "id": f"cpython/Lib/{rec['path']}", "text": text,
            "meta": {"source": "cpython-stdlib", "domain": "code", "lang": "code", "format": kind,
                     "license": LICENSE, "path": rec["path"]}})
        counts["docs"] += 1
        counts[f"docs_{kind}"] += 1
    return counts


SOURCE = Source(
    name="stdlib", package=f"python{platform.python_version()}", installer="python", license=LICENSE,
    description="CPython standard library sources (.py) and its JSON files: code",
    setup="set LMFORGE_STDLIB_DIR to a CPython Lib/ folder (it ships with Python)",
    env="LMFORGE_STDLIB_DIR", locate=locate, version=version, read=read, emit=emit)
