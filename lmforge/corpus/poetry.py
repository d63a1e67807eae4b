"""Chinese: classical poems and classics from the npm package `chinese-poetry` (MIT).

Raw record per poem: {"id": "<file>#<n>", "collection", "title", "author", "lines": [...]},
as the JSON has it (much of it in traditional characters). Emitting converts everything
to simplified characters with OpenCC (see zh.py).
Outputs:
- docs/poetry.jsonl.zst: one document per poem / chapter: title, author, blank line, text.
- mcq_poems.jsonl: "who wrote this poem" (distractors: other poets) and "what is the
  next line" (distractors: lines of the same length from other poems). The poems are in
  the corpus too: these items test what the model learned, they are not held out.
- quality_positives.jsonl: the classics (Analects, Mencius, Book of Songs, Chu Ci, ...).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

from .common import Source, natural_key, override_path, round_robin
from .mcq import make_item

PACKAGE = "chinese-poetry"
VERSION = "2.0.1"
LICENSE = "MIT"
SKIP_DIRS = {"strains", "rank", "yudingquantangshi"}  # tone patterns, rankings, a duplicate
SKIP_FILE = re.compile(r"^(author|intro|error|.*preface)", re.I)  # biographies, not poems
CLASSICS = {"lunyu", "sishuwujing", "shijing", "chuci", "mengxue"}
UNKNOWN_AUTHORS = {"", "佚名", "無名氏", "无名氏", "不詳", "不详"}
MCQ_MAX_CHARS = 240  # author questions for poems, not for chapters of prose
CLAUSE_SPLIT = re.compile(r"[，。；？！、：,.;?!:“”‘’「」『』《》（）()\s]+")  # and quotes: whole clauses only


def default_root() -> Path:
    base = Path(os.environ.get("LMFORGE_SOURCES") or Path.home() / ".cache" / "lmforge")
    return base / "npm" / "node_modules" / PACKAGE


def locate(override: Path | None) -> Path | None:
    root = override_path("LMFORGE_POETRY_DIR", override) or default_root()
    return root if (root / "dist").is_dir() else None


def version(root: Path) -> str:
    try:
        return json.loads((root / "package.json").read_text("utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def _clean_author(author) -> str:
    if not isinstance(author, str):
        return ""
    author = re.sub(r"^[（(][^）)]*[）)]", "", author.strip())  # "（唐）孟浩然"
    return author.split("：")[-1].strip()  # "先秦：左丘明"


def _lines(obj: dict) -> list[str] | None:
    for key in ("paragraphs", "content", "para"):
        v = obj.get(key)
        if isinstance(v, str) and v.strip():
            return [v]
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            return v
    return None


def _walk(obj, title: str, author: str) -> Iterator[tuple[str, str, list[str]]]:
    """Poems anywhere in a JSON tree; titles and authors inherit from enclosing objects."""
    if isinstance(obj, list):
        for x in obj:
            yield from _walk(x, title, author)
    elif isinstance(obj, dict):
        t = obj.get("title") or obj.get("chapter") or obj.get("rhythmic") or title
        a = obj.get("author") or author
        t, a = (t if isinstance(t, str) else title), (a if isinstance(a, str) else author)
        lines = _lines(obj)
        if lines is not None:
            yield t, a, lines
            return
        for v in obj.values():
            if isinstance(v, (list, dict)):
                yield from _walk(v, t, a)


def _file_groups(dist: Path) -> dict[str, list[Path]]:
    """Files grouped by folder and name stem ("quantangshi/poet.tang"), naturally sorted."""
    groups: dict[str, list[Path]] = {}
    for f in sorted(dist.rglob("*.json"), key=lambda p: natural_key(p.relative_to(dist).as_posix())):
        rel = f.relative_to(dist)
        if rel.parts[0] in SKIP_DIRS or SKIP_FILE.match(f.name):
            continue
        stem = re.sub(r"[.\-]?\d+.*$", "", f.stem)
        groups.setdefault(f"{rel.parent.as_posix()}/{stem}", []).append(f)
    return groups


def _poems(dist: Path, files: list[Path]) -> Iterator[dict]:
    for f in files:
        rel = f.relative_to(dist).as_posix()
        try:
            data = json.loads(f.read_text("utf-8"))
        except (OSError, ValueError):
            yield {"id": rel, "error": "unreadable JSON"}
            continue
        for n, (title, author, lines) in enumerate(_walk(data, "", "")):
            yield {"id": f"{rel}#{n}", "collection": rel.split("/")[0], "title": title,
                   "author": author, "lines": lines}


def read(root: Path) -> Iterator[dict]:
    dist = root / "dist"
    groups = _file_groups(dist)
    # one poem from each collection in turn: a small budget still covers all of them
    yield from round_robin([_poems(dist, files) for _, files in sorted(groups.items())])


def _doc_text(title: str, author: str, lines: list[str]) -> str:
    head = [h for h in (title, author) if h]
    return "\n".join(head) + ("\n\n" if head else "") + "\n".join(lines)


def _clauses(lines: list[str]) -> list[str]:
    return [c.strip() for line in lines for c in CLAUSE_SPLIT.split(line) if c.strip()]


def emit(records: list[dict], ctx) -> dict:
    conv = ctx.zh
    counts = {"docs": 0, "quality_positives": 0, "held_out": 0}
    poems = []
    for rec in records:
        lines = rec.get("lines")
        if rec.get("error") or not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            ctx.reject("poetry", str(rec.get("id")), rec.get("error") or "poem without lines")
            continue
        title, author = conv(rec.get("title") or ""), conv(rec.get("author") or "")
        lines = [conv(x) for x in lines if x.strip()]
        if not lines:
            ctx.reject("poetry", str(rec.get("id")), "empty poem")
            continue
        meta = {"source": PACKAGE, "domain": "zh", "lang": "zh", "license": LICENSE,
                "collection": rec.get("collection", ""), "title": title, "author": author}
        doc = {"id": f"{PACKAGE}/{rec['id']}", "text": _doc_text(title, author, lines), "meta": meta}
        held = ctx.held_out(f"poetry:{rec['id']}")   # only in the reference MCQ set, never in docs
        if held:
            counts["held_out"] += 1
        else:
            ctx.add("docs/poetry.jsonl.zst", doc)
            counts["docs"] += 1
            if meta["collection"] in CLASSICS:
                ctx.add("quality_positives.jsonl", {**doc, "meta": {**meta, "quality": "reference"}})
                counts["quality_positives"] += 1
        poems.append((doc["id"], title, _clean_author(author), lines, held))
    counts.update(_mcq(poems, ctx))
    return counts


def _mcq(poems: list[tuple[str, str, str, list[str], bool]], ctx) -> dict:
    """Author and next-line items; a held-out poem's items go to mcq_poems_reference.jsonl."""
    authors = sorted({a for _, _, a, _, _ in poems if a not in UNKNOWN_AUTHORS})
    by_len: dict[int, set[str]] = {}
    for _, _, _, lines, _ in poems:
        for c in _clauses(lines):
            by_len.setdefault(len(c), set()).add(c)
    pools = {n: sorted(s) for n, s in by_len.items()}
    made = {"mcq_author": 0, "mcq_next_line": 0, "mcq_reference": 0}
    for pid, title, author, lines, held in poems:
        target = "mcq_poems_reference.jsonl" if held else "mcq_poems.jsonl"
        if sum(made.values()) >= ctx.max_mcq:
            break
        meta = {"source": PACKAGE, "poem": pid, "license": LICENSE}
        if author not in UNKNOWN_AUTHORS and len(lines) <= 16 and sum(map(len, lines)) <= MCQ_MAX_CHARS:
            q = f"下面这首诗词的作者是谁？\n《{title}》\n" + "\n".join(lines[:4])
            item = make_item(f"{pid}:author", q, author, authors, f"{ctx.seed}:author:{pid}",
                             {**meta, "kind": "author"})
            if item:
                ctx.add(target, item)
                made["mcq_reference" if held else "mcq_author"] += 1
        cl = _clauses(lines)
        pairs = [i for i in range(len(cl) - 1) if len(cl[i]) >= 4 and len(cl[i + 1]) >= 4]
        if pairs:
            i = pairs[ctx.rng(f"next:{pid}").randrange(len(pairs))]
            answer = cl[i + 1]
            q = f"“{cl[i]}”的下一句是？"
            item = make_item(f"{pid}:next", q, answer, pools.get(len(answer), []),
                             f"{ctx.seed}:next:{pid}", {**meta, "kind": "next_line"}, accepted=cl)
            if item:
                ctx.add(target, item)
                made["mcq_reference" if held else "mcq_next_line"] += 1
    return made


SOURCE = Source(
    name="poetry", package=f"{PACKAGE}@{VERSION}", installer="npm", license=LICENSE,
    description="Classical Chinese poems and classics (JSON), converted to simplified characters",
    setup=f"npm install --prefix ${{LMFORGE_SOURCES:-~/.cache/lmforge}}/npm {PACKAGE}@{VERSION}",
    env="LMFORGE_POETRY_DIR", locate=locate, version=version, read=read, emit=emit)
