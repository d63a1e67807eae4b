"""Write lmforge/data/resources/quality_refs.jsonl.zst: modern expository prose in English and
Chinese, the quality step's shipped references (issue 35).

    apt-get install debian-reference-en debian-reference-zh-cn maint-guide maint-guide-zh-cn
    PYTHONPATH=. .venv/bin/python scripts/build_quality_refs.py [--per-source 220]

Sources (Debian packages, both GPL-2+, the same licence for their translations):
  debian-reference-en / -zh-cn   Debian Reference (Osamu Aoki et al.): system administration,
                                 /usr/share/debian-reference/*.{en,zh-cn}.html
  maint-guide / -zh-cn           Debian New Maintainers' Guide (Josip Rodin, Osamu Aoki et al.):
                                 packaging, /usr/share/doc/maint-guide*/html/*.html
Each page's main text (resiliparse) is split at blank lines and regrouped into pieces of
PIECE_MIN..PIECE_MAX characters; pieces that are mostly commands or tables (under half
their lines are sentences) are left out. The held-out evaluation (bench/quality_refs.py)
reads other sources: the Debian FAQ, manual pages, gettext catalogues.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import re
from pathlib import Path

import zstandard

from lmforge.data.extract import extract_html
from lmforge.corpus.parallel import prose_share

OUT = Path(__file__).resolve().parents[1] / "lmforge" / "data" / "resources" / "quality_refs.jsonl.zst"
PIECE_MIN, PIECE_MAX = 500, 2000
SOURCES = [  # (name, lang, glob, licence)
    ("debian-reference", "en", "/usr/share/debian-reference/*.en.html", "GPL-2+"),
    ("debian-reference", "zh", "/usr/share/debian-reference/*.zh-cn.html", "GPL-2+"),
    ("maint-guide", "en", "/usr/share/doc/maint-guide/html/*.en.html", "GPL-2+"),
    ("maint-guide", "zh", "/usr/share/doc/maint-guide-zh-cn/html/*.zh-cn.html", "GPL-2+"),
]


def pieces(text: str, lang: str) -> list[str]:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out, cur = [], ""
    for p in paras:
        if cur and len(cur) + len(p) > PIECE_MAX:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) >= PIECE_MIN:
            out.append(cur)
            cur = ""
    good = []
    for piece in out:
        if len(piece) >= PIECE_MIN and prose_share(piece, lang) >= 0.5:
            good.append(piece[:PIECE_MAX * 2])
    return good


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-source", type=int, default=220)
    args = ap.parse_args()
    rows = []
    for name, lang, pattern, licence in SOURCES:
        found = []
        for path in sorted(glob.glob(pattern)):
            text, _ = extract_html(Path(path).read_text("utf-8", errors="replace"))
            for k, piece in enumerate(pieces(text, lang)):
                found.append((hashlib.sha1(f"{path}:{k}".encode()).hexdigest(), Path(path).name, k, piece))
        found.sort()                                  # a stable spread over the pages
        for _, page, k, piece in sorted(found[:args.per_source], key=lambda r: (r[1], r[2])):
            rows.append({"id": f"ref:{name}:{lang}:{page}:{k}", "text": piece,
                         "meta": {"source": name, "lang": lang, "domain": "prose", "license": licence,
                                  "kind": "modern-technical", "quality": "reference"}})
        print(f"{name} {lang}: {len(found)} pieces, {min(len(found), args.per_source)} kept")
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    tmp = OUT.with_suffix(".tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=19).compress(blob))
    tmp.replace(OUT)
    print(f"wrote {OUT}: {len(rows)} references, {len(blob) / 1e6:.2f} MB text")


if __name__ == "__main__":
    main()
