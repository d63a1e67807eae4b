"""Quality step on held-out text the references never saw: kept rate by source type (issue 35).

    PYTHONPATH=. .venv/bin/python bench/quality_refs.py [--man-pages 120] [--junk 60] [--seed 0]

Three arms over the same documents, side by side (the step trains one classifier per language,
group_by [lang], so the references of each language reach its documents, as in the recipes'
run that the issue measured):

  before   references = the corpus's quality_positives (committed sample: Python docs reST,
           Chinese classics; code references left out: this is prose), shipped_references off
  shipped  the same + the shipped modern prose references (resources/quality_refs.jsonl.zst:
           Debian Reference, New Maintainers' Guide, en + zh; shipped_references: true)
  shipped+kinds   the same + the opt-in damage kinds markov and listed

Held-out clean prose (sources the references do not come from):
  faq      Debian FAQ sections, en and zh-cn (Debian `debian-faq`, `debian-faq-zh-cn`, GPL-2+)
  man      manual page sections, English (the system's pages) and zh_CN (`manpages-zh`,
           GFDL-1.2+, plus the base image's man-db / passwd / login pages), rendered with groff;
           sections where at least half the lines are sentences
Held-out junk, per language:
  spam         ad pages (tests/planted_junk.py: hand-written, not the classifier's templates)
  boilerplate  navigation / footer chrome around one held-out sentence (planted_junk.py)
  keywords     comma-separated lists of country and language names (the iso_3166 / iso_639
               gettext catalogues: real keyword lists, en and zh)
  markov       machine-garbled held-out text: an order-2 Markov chain over the words (en) or
               characters (zh) of 20 held-out sections
  mojibake     held-out text with its UTF-8 bytes read as GBK (zh) or cp1252 (en, with the
               accented-e artefact of double encoding)
Printed: kept share per language x source type for both arms (goal: clean >= 80%, junk <= 10%).
"""
from __future__ import annotations

import argparse
import collections
import gettext
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import planted_junk as pj  # noqa: E402

from lmforge.config import load  # noqa: E402
from lmforge.corpus import build_corpus, parallel  # noqa: E402
from lmforge.data.config import DataConfig  # noqa: E402
from lmforge.data.pipeline import iter_shard, run_pipeline  # noqa: E402


def clean_docs(man_pages: int) -> list[dict]:
    out = []
    for lang, code in (("en", "en"), ("zh", "zh-cn")):
        for k, text in parallel.faq_sections(code).items():
            if len(text) >= 300 and parallel.prose_share(text, lang) >= 0.5:
                out.append({"id": f"faq:{lang}:{k}", "text": text, "meta": {"lang": lang, "src": "faq"}})
    for page, en, zh in parallel.man_pairs(limit=man_pages):
        for lang, text in (("en", en), ("zh", zh)):
            for j, sec in enumerate(parallel.man_sections(text)):
                if len(sec) >= 300 and parallel.prose_share(sec, lang) >= 0.5:
                    out.append({"id": f"man:{lang}:{page}:{j}", "text": sec,
                                "meta": {"lang": lang, "src": "man"}})
    return out


def keyword_lists(lang: str, rng: random.Random, n: int) -> list[str]:
    names = []
    for cat in ("iso_3166-1", "iso_639-2"):
        path = parallel.LOCALE_ROOT / "zh_CN" / "LC_MESSAGES" / f"{cat}.mo"
        if path.is_file():
            with open(path, "rb") as f:
                c = gettext.GNUTranslations(f)._catalog
            names += [(v if lang == "zh" else k) for k, v in c.items() if isinstance(k, str) and k and v]
    sep = "、" if lang == "zh" else ", "
    return [sep.join(rng.sample(names, rng.randint(30, 80))) for _ in range(n)] if names else []


def markov(texts: list[str], lang: str, rng: random.Random, length: int) -> str:
    toks = [t for text in texts for t in (list(text) if lang == "zh" else text.split())]
    nxt = collections.defaultdict(list)
    for a, b, c in zip(toks, toks[1:], toks[2:]):
        nxt[(a, b)].append(c)
    i = rng.randrange(len(toks) - 2)
    a, b = toks[i], toks[i + 1]
    out = [a, b]
    for _ in range(length):
        if not nxt[(a, b)]:
            i = rng.randrange(len(toks) - 2)
            a, b = toks[i], toks[i + 1]
        a, b = b, rng.choice(nxt[(a, b)]) if nxt[(a, b)] else toks[rng.randrange(len(toks))]
        out.append(b)
    return ("" if lang == "zh" else " ").join(out)


def mojibake(text: str, lang: str) -> str:
    if lang == "zh":    # UTF-8 bytes shown as GBK
        return text.encode("utf-8").decode("gbk", errors="replace")
    return text.encode("utf-8").decode("cp1252", errors="replace").replace("e", "Ã©")[:3000]


def junk_docs(clean: list[dict], per_kind: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for lang in ("en", "zh"):
        good = [d["text"] for d in clean if d["meta"]["lang"] == lang]
        made = {"spam": [(pj.ad_page_en if lang == "en" else pj.ad_page_zh)(rng) for _ in range(per_kind)],
                "boilerplate": [(pj.chrome_page_en(rng, pj.first_sentence(rng.choice(good))) if lang == "en"
                                 else pj.chrome_page_zh(rng, rng.choice(good)[:40])) for _ in range(per_kind)],
                "keywords": keyword_lists(lang, rng, per_kind),
                "markov": [markov(rng.sample(good, 20), lang, rng, rng.randint(150, 400))
                           for _ in range(per_kind)],
                "mojibake": [mojibake(rng.choice(good), lang) for _ in range(per_kind)]}
        for kind, texts in made.items():
            out += [{"id": f"junk:{lang}:{kind}:{i}", "text": t, "meta": {"lang": lang, "src": kind}}
                    for i, t in enumerate(texts)]
    return out


def run_arm(tmp: Path, name: str, docs: list[dict], positives: Path, shipped: bool, seed: int,
            kinds: list[str] | None) -> dict:
    raw = tmp / f"raw-{name}"
    raw.mkdir()
    with open(raw / "docs.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({**d, "meta": {**d["meta"], "domain": "prose"}}, ensure_ascii=False) + "\n")
    cfg = load(DataConfig, data={"input": [str(raw)], "output": str(tmp / f"out-{name}"), "workers": 2,
                                 "progress": False, "steps": ["quality"],
                                 "quality": {"positive": [str(positives)], "group_by": ["lang"],
                                             "shipped_references": shipped, "seed": seed,
                                             **({"negative_kinds": kinds} if kinds else {})}})
    run_pipeline(cfg, log=lambda *a: None)
    kept = collections.Counter()
    for p in (tmp / f"out-{name}" / "01-quality" / "kept").iterdir():
        for d in iter_shard(p):
            kept[(d["meta"]["lang"], d["meta"]["src"])] += 1
    return kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--man-pages", type=int, default=120)
    ap.add_argument("--junk", type=int, default=40, help="documents per junk kind and language")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="quality_refs_"))
    build_corpus(tmp / "corpus", sources=["pydocs", "poetry"], from_sample=True, log=lambda m: None)
    positives = tmp / "positives.jsonl"   # prose references only (no code references)
    with open(tmp / "corpus" / "quality_positives.jsonl") as f, open(positives, "w") as g:
        g.writelines(l for l in f if json.loads(l)["meta"].get("domain") != "code")
    clean = clean_docs(args.man_pages)
    docs = clean + junk_docs(clean, args.junk, args.seed)
    total = collections.Counter((d["meta"]["lang"], d["meta"]["src"]) for d in docs)
    arms = {}
    for name, shipped, kinds in ARMS:
        t = time.perf_counter()
        arms[name] = run_arm(tmp, name, docs, positives, shipped, args.seed, kinds)
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    names = [a[0] for a in ARMS]
    print(f"held-out documents: {len(clean)} clean, {len(docs) - len(clean)} junk; seed {args.seed}\n")
    print("| lang | source | type | docs | " + " | ".join(f"kept {n}" for n in names) + " | goal |")
    print("|---|---|---|---|" + "---|" * len(names) + "---|")
    rows = [((lang, src), [src]) for (lang, src) in sorted(total, key=lambda k: (k[0], k[1] not in CLEAN, k[1]))]
    rows += [((lang, f"all {typ}"), list(srcs)) for lang in ("en", "zh")
             for typ, srcs in (("clean", CLEAN), ("junk", JUNK))]
    for (lang, label), srcs in rows:
        n = sum(total[(lang, s)] for s in srcs)
        if not n:
            continue
        typ = "clean" if srcs[0] in CLEAN else "junk"
        cells = " | ".join(f"{sum(arms[a][(lang, s)] for s in srcs) / n:.1%}" for a in names)
        print(f"| {lang} | {label} | {typ} | {n} | {cells} | {'>= 80%' if typ == 'clean' else '<= 10%'} |")


CLEAN = ("faq", "man")
JUNK = ("spam", "boilerplate", "keywords", "markov", "mojibake")
ALL_KINDS = ["shuffled", "stuffed", "boilerplate", "spam", "garbled", "repeated", "minified", "markov", "listed"]
ARMS = [("before", False, None),            # the corpus's references, default damage kinds
        ("shipped", True, None),            # + shipped modern prose (shipped_references: true)
        ("shipped+kinds", True, ALL_KINDS)]  # + the opt-in markov / listed negatives


if __name__ == "__main__":
    main()
