"""Parallel English / Chinese text from what a Debian system ships, for fairness checks.

The same content in two languages shows whether a filter judges the text or its script.
Three offline sources, each read only where it is installed:

  man pages   /usr/share/man/zh_CN/manN/X.N.gz beside /usr/share/man/manN/X.N.gz, rendered
              with `man -l` (groff, 80 columns) as a crawler of rendered pages would see
              them, split into sections at their headings. The base image ships zh_CN
              pages of man-db, passwd and login; Debian `manpages-zh` (GPL-2+ / GFDL) has
              hundreds. Translations can lag the English page or leave paragraphs English.
  gettext     compiled catalogs /usr/share/locale/zh_CN/LC_MESSAGES/*.mo: each English
              msgid with its Chinese msgstr (exactly parallel; UI strings and help text).
  debian-faq  Debian `debian-faq` + `debian-faq-zh-cn` (GPL-2+): the FAQ as plain text in
              both languages, split at its numbered headings (translated with po4a, so
              section k of one is section k of the other).
"""
from __future__ import annotations

import gettext
import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
LOCALE_ROOT = Path("/usr/share/locale")
FAQ_DIR = Path("/usr/share/doc/debian/FAQ")
_HEADING_RE = re.compile(r"^\S.*$")


def render_man(path: Path, width: int = 80) -> str:
    """A man page as text (groff -man -Tutf8, no hyphenation or adjusting, 80 columns), as a
    crawler of rendered pages would see it; "" if groff is missing or the page fails
    (`.so` links, timeouts). groff directly: `man -l` hangs on some zh_CN pages."""
    if shutil.which("groff") is None:
        return ""
    try:
        src = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
        r = subprocess.run(["groff", "-man", "-Tutf8", "-k", f"-rLL={width - 2}n", "-rHY=0",
                            "-P-cbou"], input=src, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired, EOFError, gzip.BadGzipFile):
        return ""
    text = r.stdout.decode("utf-8", errors="replace")
    text = re.sub(r".\x08", "", text)                    # overstrike bold / underline
    return re.sub(r"\n{3,}", "\n\n", text.replace("\t", " "))


def man_sections(text: str, min_chars: int = 80) -> list[str]:
    """Sections of a rendered page: a heading (an unindented line) and its indented body;
    the first and last lines (page header / footer) are dropped."""
    lines = text.splitlines()[1:-1]
    out, cur = [], []
    for line in lines:
        if line and not line[0].isspace() and cur:
            out.append("\n".join(cur).strip())
            cur = []
        cur.append(line.rstrip())
    if cur:
        out.append("\n".join(cur).strip())
    return [s for s in out if len(s) >= min_chars]


def man_pairs(lang: str = "zh_CN", root: Path = MAN_ROOT, limit: int = 0) -> list[tuple[str, str, str]]:
    """(page, English text, translated text) for every page that has both."""
    out = []
    for p in sorted((root / lang).glob("man*/*.gz")):
        en = root / p.parent.name / p.name
        if en.is_file():
            a, b = render_man(en), render_man(p)
            if a.strip() and b.strip():
                out.append((f"{p.parent.name}/{p.name[:-3]}", a, b))
        if limit and len(out) >= limit:
            break
    return out


def mo_pairs(lang: str = "zh_CN", root: Path = LOCALE_ROOT, per_doc: int = 12,
             min_chars: int = 40) -> list[tuple[str, str, str]]:
    """(catalog#k, English, translation): each catalog's messages in msgid order, `per_doc`
    messages of at least min_chars English characters a document, one message a line."""
    out = []
    for mo in sorted((root / lang / "LC_MESSAGES").glob("*.mo")):
        try:
            with open(mo, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error") else OSError):
            continue
        msgs = sorted((k, v) for k, v in cat.items()
                      if isinstance(k, str) and k and isinstance(v, str) and v and v != k
                      and len(k) >= min_chars)
        for i in range(0, len(msgs) - per_doc + 1, per_doc):
            part = msgs[i:i + per_doc]
            out.append((f"{mo.stem}#{i // per_doc}", "\n".join(k for k, _ in part),
                        "\n".join(v for _, v in part)))
    return out


_FAQ_HEAD = re.compile(r"^(\d+(?:\.\d+)+)\.?\s+\S", re.M)


def faq_sections(lang: str, root: Path = FAQ_DIR) -> dict[str, str]:
    """{section number: text} of the Debian FAQ in `lang` ("en", "zh-cn"); {} if absent."""
    path = root / f"debian-faq.{lang}.txt.gz"
    if not path.is_file():
        return {}
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    heads = list(_FAQ_HEAD.finditer(text))
    out = {}
    for m, nxt in zip(heads, heads[1:] + [None]):
        body = text[m.start():nxt.start() if nxt else len(text)].strip()
        out.setdefault(m.group(1), body)
    return out


def faq_pairs(lang: str = "zh-cn", root: Path = FAQ_DIR) -> list[tuple[str, str, str]]:
    en, other = faq_sections("en", root), faq_sections(lang, root)
    return [(k, en[k], other[k]) for k in en if k in other]


def sentence_like(line: str, lang: str) -> bool:
    """A line of running text: >= 8 CJK characters with CJK punctuation (zh), or >= 8 words
    with a lowercase word (other languages); not a command, option list or table row."""
    from lmforge.data.text import cjk_count

    line = line.strip()
    if lang == "zh":
        return cjk_count(line) >= 8 and bool(re.search("[。，；：？！]", line))
    return len(line.split()) >= 8 and bool(re.search(r"[a-z]{3,}", line))


def prose_share(text: str, lang: str) -> float:
    """Share of a text's non-empty lines that are sentence_like."""
    lines = [l for l in text.splitlines() if l.strip()]
    return sum(sentence_like(l, lang) for l in lines) / len(lines) if lines else 0.0
