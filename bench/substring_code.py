"""Exact-substring dedup on real Python source: mid-line cuts vs line snapping (issue 35).

    PYTHONPATH=. .venv/bin/python bench/substring_code.py [--root /usr/lib/python3.11]
        [--header-share 0.3] [--max-files 0] [--min-bytes 100]

The files: every .py under ROOT (site-packages included when it is under ROOT), in path
order. A share of them (`--header-share`, by a hash of the path) gets the same Apache-2.0
licence header on top, as vendored projects do; that is the repeated text the step should
still remove. The same found spans are then applied two ways, side by side:

    cut      the spans as found (the step before issue 35: bytes anywhere, mid-line)
    snapped  dedup/snap.py: whole lines only, Python kept parseable, a mostly repeated
             file dropped whole

Printed: files, files edited, files that parsed before / still parse after, licence
headers left (in files after the first that has it), bytes removed, files dropped, seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from lmforge.data.dedup.snap import parses, snap_document
from lmforge.data.dedup.substring import apply_spans, doc_spans

HEADER = '''# Copyright 2021 The Example Authors. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
'''
MARK = "Licensed under the Apache License, Version 2.0"


def with_header(path: str, share: float) -> bool:
    return int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def load(root: Path, share: float, max_files: int) -> tuple[list[str], list[bool]]:
    texts, headed = [], []
    for p in sorted(root.rglob("*.py")):
        try:
            t = p.read_text("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        h = with_header(str(p.relative_to(root)), share)
        texts.append(HEADER + t if h else t)
        headed.append(h)
        if max_files and len(texts) >= max_files:
            break
    return texts, headed


def evaluate(data: list[bytes], outs: list[str | None], headed: list[bool]) -> dict:
    before = [parses(d) for d in data]
    kept = [o is not None for o in outs]
    edited = sum(1 for d, o in zip(data, outs) if o is not None and o.encode() != d)
    after = sum(1 for b, o in zip(before, outs) if b and o is not None and parses(o.encode()))
    first = headed.index(True) if True in headed else -1
    left = sum(1 for i, o in enumerate(outs) if headed[i] and i != first and o is not None and MARK in o)
    removed = sum(len(d) - (len(o.encode()) if o is not None else 0) for d, o in zip(data, outs))
    return {"kept": sum(kept), "edited": edited,
            "parsed_kept": sum(1 for b, k in zip(before, kept) if b and k), "parse_after": after,
            "headers_left": left, "headed": sum(headed) - (first >= 0),
            "removed_mb": removed / 1e6, "dropped": len(outs) - sum(kept)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/usr/lib/python3.11")
    ap.add_argument("--header-share", type=float, default=0.3)
    ap.add_argument("--max-files", type=int, default=0)
    ap.add_argument("--min-bytes", type=int, default=100)
    args = ap.parse_args()
    texts, headed = load(Path(args.root), args.header_share, args.max_files)
    t0 = time.perf_counter()
    data, spans = doc_spans(texts, args.min_bytes)
    t_find = time.perf_counter() - t0
    t0 = time.perf_counter()
    cut = [apply_spans(d, s) if s else d.decode() for d, s in zip(data, spans)]
    t_cut = time.perf_counter() - t0
    t0 = time.perf_counter()
    snapped = []
    for d, s in zip(data, spans):
        r = snap_document(d, s) if s else None
        snapped.append(d.decode() if r is None else (None if r.reason else apply_spans(d, r.spans)))
    t_snap = time.perf_counter() - t0
    mb = sum(map(len, data)) / 1e6
    print(f"{len(texts)} .py files under {args.root}, {mb:.1f} MB; {sum(headed)} with the licence "
          f"header; K = {args.min_bytes}; spans found in {t_find:.1f} s\n")
    rows = [("cut (before)", evaluate(data, cut, headed), t_cut),
            ("snapped (after)", evaluate(data, snapped, headed), t_snap)]
    print("| applied | files kept | edited | parsed before (kept) | parse after | headers left "
          "| MB removed | dropped whole | apply s | x cut |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r, s in rows:
        print(f"| {name} | {r['kept']} | {r['edited']} | {r['parsed_kept']} | {r['parse_after']} | "
              f"{r['headers_left']} of {r['headed']} | {r['removed_mb']:.2f} | {r['dropped']} | "
              f"{s:.1f} | {s / max(rows[0][2], 1e-9):.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
