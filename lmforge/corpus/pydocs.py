"""English prose: the Python documentation (Debian `python3.11-doc`, PSF license).

Raw record per page: {"path": "library/os", "rst": reST source, "html": built page or null}.
Outputs:
- docs/pydocs.jsonl.zst: half the pages (by a stable hash of the path) as raw HTML
  with meta.format="html" (the data pipeline's extraction step turns them into text),
  the other half as reST text (meta.format="rst"); no page appears twice.
- quality_positives.jsonl: the reST text of every page read: reference-quality prose,
  text fit to be cited (Skywork's positives for the quality classifier).
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

from .common import Source, dpkg_version, override_path, stable_hash

PACKAGE = "python3.11-doc"
LICENSE = "PSF-2.0"
MAX_PAGE_BYTES = 256 * 1024  # the changelog and a few indexes are huge and repetitive


def locate(override: Path | None) -> Path | None:
    given = override_path("LMFORGE_PYDOCS_DIR", override)
    candidates = [given] if given else [Path(p) for p in sorted(glob.glob("/usr/share/doc/python3.1*/html"))]
    candidates.sort(key=lambda p: "python3.11" not in str(p))  # prefer the pinned package
    for c in candidates:
        if (c / "_sources").is_dir() and any((c / "_sources").rglob("*.rst.txt")):
            return c
    return None


def version(root: Path) -> str:
    return dpkg_version(PACKAGE)


def read(root: Path) -> Iterator[dict]:
    src = root / "_sources"
    pages = [p.relative_to(src).as_posix()[: -len(".rst.txt")] for p in src.rglob("*.rst.txt")]
    pages.sort(key=lambda p: (stable_hash(p), p))  # spread the budget over all sections
    for rel in pages:
        rst_file = src / f"{rel}.rst.txt"
        if rst_file.stat().st_size > MAX_PAGE_BYTES:
            continue
        html_file = root / f"{rel}.html"
        html = None
        if html_file.is_file() and html_file.stat().st_size <= 2 * MAX_PAGE_BYTES:
            html = html_file.read_text("utf-8", errors="replace")
        yield {"path": rel, "rst": rst_file.read_text("utf-8", errors="replace"), "html": html}


def page_format(path: str, has_html: bool, mode: str) -> str:
    if mode == "rst" or not has_html:
        return "rst"
    if mode == "html":
        return "html"
    return "html" if stable_hash("format:" + path) % 2 == 0 else "rst"


def emit(records: list[dict], ctx) -> dict:
    counts = {"docs": 0, "docs_html": 0, "docs_rst": 0, "quality_positives": 0}
    base = {"source": "python-docs", "domain": "prose", "lang": "en", "license": LICENSE}
    for rec in records:
        path, rst, html = rec.get("path"), rec.get("rst"), rec.get("html")
        if not isinstance(path, str) or not isinstance(rst, str) or not rst.strip():
            ctx.reject("pydocs", str(path), "page without reST text")
            continue
        fmt = page_format(path, isinstance(html, str) and bool(html.strip()), ctx.prose_format)
        text = html if fmt == "html" else rst
        ctx.add("docs/pydocs.jsonl.zst", {"id": f"python-docs/{path}", "text": text,
                                          "meta": {**base, "format": fmt, "path": path}})
        counts["docs"] += 1
        counts[f"docs_{fmt}"] += 1
        ctx.add("quality_positives.jsonl", {
            "id": f"python-docs/{path}#rst", "text": rst,
            "meta": {**base, "format": "rst", "path": path, "quality": "reference"}})
        counts["quality_positives"] += 1
    return counts


def size(record: dict) -> int:
    """A page counts its reST text against the budget: the HTML is the same text in markup."""
    return len((record.get("rst") or "").encode("utf-8"))


SOURCE = Source(
    name="pydocs", package=PACKAGE, installer="apt", license=LICENSE,
    description="Python 3.11 documentation (reST sources and HTML pages): English prose",
    setup=f"apt-get install {PACKAGE}", env="LMFORGE_PYDOCS_DIR",
    locate=locate, version=version, read=read, emit=emit, size=size)
