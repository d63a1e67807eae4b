"""Quiz Q:A lines from Debian `bsdgames` (BSD license) -> multiple-choice items.

The quiz(6) format: one item per line, fields separated by ':', a trailing backslash
continues the line; in a field `a|b` are alternatives, `{x}` is optional text, `[a|b]`
groups required alternatives, and `\\c` escapes c. The `index` file names each quiz
file's columns the same way ("Africa{n}:cap{ital}").

Raw record per quiz file: {"file", "columns": [raw column names], "lines": [[n, text]]}.
Output: mcq_quiz.jsonl, items asking column k (k >= 1) from column 0, distractors drawn
from other lines' column k of the same file; no accepted form of the answer is a
distractor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .common import Source, dpkg_version, override_path
from .mcq import make_item

PACKAGE = "bsdgames"
LICENSE = "BSD-3-Clause"
DEFAULT_DIR = Path("/usr/share/games/bsdgames/quiz")
SKIP_FILES = {"ed"}  # ed commands are regexes full of the format's own metacharacters
ACCENT_MARKS = set("^~'`")  # "C[^o|o^|o]te": the plain spelling is the one without marks
NO_ANSWER = {"gok"}  # "God only knows" in the state flowers


def split_top(s: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets and escapes."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth = max(0, depth - 1)
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _close(s: str, i: int) -> int:
    """Index of the bracket closing the one at s[i] (or len(s) if unbalanced)."""
    depth, j = 0, i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return len(s)


def canonical(s: str) -> str:
    """The full spelled-out form of one alternative: optional parts included."""
    return " ".join(_canon(s).split())


def _canon(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif c in "{[":
            j = _close(s, i)
            alts = split_top(s[i + 1:j], "|")
            if c == "{":
                out.append(_canon(alts[0]))
            else:
                plain = [a for a in alts if not ACCENT_MARKS.intersection(a)]
                out.append(_canon((plain or alts)[0]))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def forms(field: str) -> list[str]:
    """All accepted answers of a field, in canonical form, the preferred one first."""
    return [f for f in (canonical(a) for a in split_top(field, "|")) if f]


def join_lines(text: str) -> list[tuple[int, str]]:
    """Physical lines -> (first line number, logical line), backslash continuations joined."""
    out, buf, start = [], "", None
    for n, line in enumerate(text.splitlines(), 1):
        if start is None:
            start = n
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1]
            continue
        buf += line
        if buf.strip():
            out.append((start, buf))
        buf, start = "", None
    if buf.strip():
        out.append((start, buf))
    return out


def locate(override: Path | None) -> Path | None:
    root = override_path("LMFORGE_QUIZ_DIR", override) or DEFAULT_DIR
    return root if (root / "index").is_file() else None


def version(root: Path) -> str:
    return dpkg_version(PACKAGE)


def read(root: Path) -> Iterator[dict]:
    columns = {}
    for _, line in join_lines((root / "index").read_text("utf-8", errors="replace")):
        path, *cols = split_top(line, ":")
        columns[Path(path).name] = cols
    for name in sorted(columns):
        f = root / name
        if name in SKIP_FILES or not f.is_file():
            continue
        yield {"file": name, "columns": columns[name],
               "lines": [[n, t] for n, t in join_lines(f.read_text("utf-8", errors="replace"))]}


def _column_name(raw: str) -> str:
    return forms(raw)[-1] if forms(raw) else raw  # "clear|alpha{bet{ic}}" -> "alphabetic"


def _question(qname: str, q: str, aname: str) -> str:
    ask = "What comes next?" if aname.lower() == "next" else f"What is the {aname}?"
    return f"{qname}: {q}\n{ask}"


def emit(records: list[dict], ctx) -> dict:
    made = held = 0
    for rec in records:
        name, cols, lines = rec.get("file"), rec.get("columns"), rec.get("lines")
        if not isinstance(cols, list) or not isinstance(lines, list) or len(cols) < 2:
            ctx.reject("quiz", str(name), "quiz file without columns or lines")
            continue
        rows = []
        for n, text in lines:
            fields = split_top(text, ":")
            if len(fields) != len(cols):
                ctx.reject("quiz", f"{name}:{n}", f"{len(fields)} fields, index says {len(cols)}")
                continue
            rows.append((n, [forms(f) for f in fields]))
        names = [_column_name(c) for c in cols]
        for k in range(1, len(cols)):
            pool = sorted({fs[k][0] for _, fs in rows if fs[k] and fs[k][0].lower() not in NO_ANSWER})
            for n, fs in rows:
                if not fs[0] or not fs[k] or fs[k][0].lower() in NO_ANSWER:
                    continue
                item = make_item(f"quiz/{name}:{n}:{k}", _question(names[0], fs[0][0], names[k]),
                                 fs[k][0], pool, f"{ctx.seed}:quiz:{name}:{n}:{k}",
                                 {"source": PACKAGE, "file": name, "line": n, "license": LICENSE},
                                 accepted=fs[k])
                if item:
                    ref = ctx.held_out(f"quiz:{name}:{n}")
                    ctx.add("mcq_quiz_reference.jsonl" if ref else "mcq_quiz.jsonl", item)
                    made += 1
                    held += ref
    return {"mcq": made - held, "mcq_reference": held}


SOURCE = Source(
    name="quiz", package=PACKAGE, installer="apt", license=LICENSE,
    description="bsdgames quiz(6) question:answer files: multiple-choice items",
    setup=f"apt-get install {PACKAGE}", env="LMFORGE_QUIZ_DIR",
    locate=locate, version=version, read=read, emit=emit)
