"""Quality step on held-out text the references never saw: kept rate by source type (issue 35).

    PYTHONPATH=. .venv/bin/python bench/quality_refs.py [--split test] [--arms before,new]
        [--man-pages 120] [--junk 40] [--seed 0] [--sweep] [--planted]

Arms over the same documents, side by side (the step trains one classifier per language,
group_by [lang], so the references of each language reach its documents, as in the recipes'
run that the issue measured; mode tag, so one run gives every threshold):

  before   the defaults before the third round: references = the corpus's quality_positives
           (committed sample: Python docs reST, Chinese classics; code references left out:
           this is prose), shipped_references off, base damage kinds and dense measures, 0.5
  new      the defaults now: shipped_references (resources/quality_refs.jsonl.zst: Debian
           Reference, New Maintainers' Guide, en + zh), negative kinds + markov, listed,
           markov_pool 4, dense keys + unbalanced, 0.5; damaged corpus copies stand in for
           the group's own references only (docs/quality-topics.md, third round)
  (and the steps between them, for the dev split: shipped, shipped+kinds, pool4,
   pool4+unbalanced, pool8+unbalanced, new@0.6; see ARMS)

Split: every clean document is on the dev or the test side by a hash of its FAQ chapter or
man page (both languages together); junk is made from that side's clean text, with other
random draws on dev. Settings were chosen on dev; test is the held-out figure reported.

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
--lohelp DIR: a second held-out set instead, the LibreOffice help pages (en-US, zh-CN) under
DIR (the extracted libreoffice-help-en-us / -zh-cn .debs), 150 pages in both languages.
Printed: kept share per language x source type per arm (goal: clean >= 80%, junk <= 10%);
--sweep adds clean / junk kept per threshold. --planted runs the default, `new` and `new` without
the shipped references on the planted corpus of tests/test_data_quality.py instead (seeds 0, 3).
"""
from __future__ import annotations

import argparse
import collections
import gettext
import hashlib
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
from lmforge.data.config import BASE_NEGATIVE_KINDS, DENSE_BASE, DataConfig  # noqa: E402
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


def html_pair_docs(root: Path, pages: int, seed: int, src: str) -> list[dict]:
    """Pages of a translated HTML manual (root/en-US/... and the same path under root/zh-CN),
    main text by the same HTML extraction as the data stage; a page's both languages go
    together. `lohelp`: the LibreOffice help (MPL-2.0; another project, subject and writers
    than the Debian references), the second held-out set, made after the dev / test split
    was reported. `handbook`: The Debian Administrator's Handbook (GPL-2+ / CC-BY-SA-3.0;
    other writers than the Debian Reference), the third, made after the second was reported."""
    from lmforge.data.extract import extract_html

    sub = "text" if src == "lohelp" else ""   # the help's pages (not its scripts' pages)
    base = root / "en-US" / sub
    found = sorted(base.rglob("*.html"))
    found.sort(key=lambda p: hashlib.md5(f"{seed}:{p.relative_to(base)}".encode()).digest())
    out, used = [], 0
    for en_path in found:
        rel = en_path.relative_to(base)
        zh_path = root / "zh-CN" / sub / rel
        if used >= pages or not zh_path.is_file():
            continue
        texts = {lang: extract_html(p.read_text("utf-8", errors="replace"))[0]
                 for lang, p in (("en", en_path), ("zh", zh_path))}
        if not all(len(t) >= 300 and parallel.prose_share(t, lang) >= 0.5 for lang, t in texts.items()):
            continue
        used += 1
        out += [{"id": f"{src}:{lang}:{rel}", "text": t, "meta": {"lang": lang, "src": src}}
                for lang, t in texts.items()]
    return out


def shared_shingles(docs: list[dict], refs: list[str], n: int = 60) -> int:
    """60-character shingles (every 30th) of the references found in the held-out documents."""
    def sh(t):
        flat = " ".join(t.split())
        return {flat[i:i + n] for i in range(0, max(0, len(flat) - n), 30)}
    seen = set().union(*(sh(t) for t in refs))
    return sum(1 for d in docs for x in sh(d["text"]) if x in seen)


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


MANUALS = [  # (source, lang, file glob under the extracted .debs' root, section selector)
    ("kicad", "en", "usr/share/doc/kicad/help/en/*.html", "div.sect2"),
    ("kicad", "zh", "usr/share/doc/kicad/help/zh/*.html", "div.sect2"),
    ("edu", "en", "usr/share/doc/debian-edu-doc-en/debian-edu-bookworm-manual.html", "div.section"),
    ("edu", "zh", "usr/share/doc/debian-edu-doc-zh-cn/debian-edu-bookworm-manual.html", "div.section"),
]


def manual_docs(root: Path, per_lang: int, seed: int) -> list[dict]:
    """The fourth held-out set, made after the third was reported: sections of the KiCad
    manuals (kicad-doc-en / kicad-doc-zh, GPL-3+ / CC-BY-3.0) and the Debian Edu bookworm
    manual (debian-edu-doc-en / -zh-cn, GPL-2+), each an HTML book split into its sections
    (KiCad: div.sect2; Debian Edu: div.section with no section inside). Both Chinese
    translations are partial, so a section counts as Chinese only when at least 20% of its
    characters are Han; sections are not paired (the translations cover different parts)."""
    from resiliparse.parse.html import HTMLTree

    from lmforge.data.extract import extract_html

    out = {"en": [], "zh": []}
    for src, lang, pattern, sel in MANUALS:
        for path in sorted(root.glob(pattern)):
            tree = HTMLTree.parse(path.read_text("utf-8", errors="replace"))
            for i, node in enumerate(tree.body.query_selector_all(sel)):
                if node.query_selector(sel) is not None:
                    continue   # a section with sections inside: its leaves are taken instead
                text = extract_html(f"<html><body>{node.html}</body></html>")[0]
                han = sum("\u4e00" <= c <= "\u9fff" for c in text) / max(1, len(text))
                if len(text) >= 300 and parallel.prose_share(text, lang) >= 0.5 and (lang == "en" or han >= 0.2):
                    out[lang].append({"id": f"manuals:{lang}:{src}-{path.stem}-{i}", "text": text,
                                      "meta": {"lang": lang, "src": "manuals"}})
    rng = random.Random(seed)
    return [d for lang in out for d in rng.sample(out[lang], min(per_lang, len(out[lang])))]


def split_of(doc_id: str) -> str:
    """dev or test, by a hash of the source unit (a FAQ chapter, a man page; both languages of
    it go together), so no page has sections on both sides."""
    kind, _, key = doc_id.split(":")[:3]
    unit = key.split(".")[0] if kind == "faq" else key
    return "dev" if hashlib.md5(unit.encode()).digest()[0] % 2 == 0 else "test"


def run_arm(tmp: Path, name: str, docs: list[dict], positives: Path, seed: int, overrides: dict) -> dict:
    raw = tmp / f"raw-{name}"
    raw.mkdir()
    with open(raw / "docs.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({**d, "meta": {**d["meta"], "domain": "prose"}}, ensure_ascii=False) + "\n")
    cfg = load(DataConfig, data={"input": [str(raw)], "output": str(tmp / f"out-{name}"), "workers": 2,
                                 "progress": False, "steps": ["quality"],
                                 "quality": {"positive": [str(positives)], "group_by": ["lang"],
                                             "seed": seed, "mode": "tag", **overrides}})
    run_pipeline(cfg, log=lambda *a: None)
    out = []   # mode tag: every document comes back with its score (and its coherence)
    mins = overrides.get("coherence_min", {})
    for p in (tmp / f"out-{name}" / "01-quality" / "kept").iterdir():
        for d in iter_shard(p):
            m = d["meta"]
            coherent = m.get("coherence") is None or m["coherence"] >= mins.get(m["lang"], -1.0)
            out.append((m["lang"], m["src"], m["quality"], coherent))
    return out


def kept_counts(scored: list, threshold: float) -> collections.Counter:
    return collections.Counter((lang, src) for lang, src, q, coherent in scored if q >= threshold and coherent)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--man-pages", type=int, default=120)
    ap.add_argument("--junk", type=int, default=40, help="documents per junk kind and language")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["dev", "test", "all"], default="test",
                    help="dev: the half settings were chosen on; test: the held-out half, reported")
    ap.add_argument("--arms", default=",".join(REPORTED), help=f"comma-separated, of {list(ARMS)}")
    ap.add_argument("--sweep", action="store_true", help="also print clean / junk kept per threshold")
    ap.add_argument("--lohelp", type=Path, default=None,
                    help="instead of the Debian FAQ / man pages: the LibreOffice help pages under this folder "
                         "(usr/share/libreoffice/help of the extracted libreoffice-help-en-us and -zh-cn .debs)")
    ap.add_argument("--handbook", type=Path, default=None,
                    help="instead: The Debian Administrator's Handbook's HTML under this folder "
                         "(usr/share/doc/debian-handbook/html of the extracted debian-handbook .deb)")
    ap.add_argument("--manuals", type=Path, default=None,
                    help="instead: sections of the KiCad and Debian Edu manuals under this folder (the root "
                         "the kicad-doc-en, kicad-doc-zh, debian-edu-doc-en and -zh-cn .debs were extracted into)")
    ap.add_argument("--pages", type=int, default=150,
                    help="--lohelp / --handbook: pages (each in both languages); --manuals: sections per language")
    ap.add_argument("--planted", action="store_true",
                    help="instead: the arms on the planted corpus of tests/test_data_quality.py, seeds 0 and 3")
    args = ap.parse_args()
    if args.planted:
        return planted()
    names = args.arms.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="quality_refs_"))
    build_corpus(tmp / "corpus", sources=["pydocs", "poetry"], from_sample=True, log=lambda m: None)
    positives = tmp / "positives.jsonl"   # prose references only (no code references)
    with open(tmp / "corpus" / "quality_positives.jsonl") as f, open(positives, "w") as g:
        g.writelines(l for l in f if json.loads(l)["meta"].get("domain") != "code")
    held = [(n, r) for n, r in (("lohelp", args.lohelp), ("handbook", args.handbook),
                                 ("manuals", args.manuals)) if r]
    if held:   # a second / third / fourth held-out set, all of it held out: no split
        args.split, root = held[0]
        clean = (manual_docs(root, args.pages, args.seed) if args.split == "manuals"
                 else html_pair_docs(root, args.pages, args.seed, args.split))
        found = collections.Counter(d["meta"]["lang"] for d in clean)
        if min(found["en"], found["zh"]) < 20:   # the Markov junk draws 20 clean documents
            sys.exit(f"--{args.split} {root}: {found['en']} English and {found['zh']} Chinese documents "
                     "found, at least 20 of each needed: is it the folder the .debs were extracted into?")
        from lmforge.data.quality import shipped_references
        refs = [t for docs in shipped_references().values() for _, t in docs]
        refs += [json.loads(l)["text"] for l in open(positives)]
        print(f"{args.split}: {len(clean)} documents; reference shingles found in them: "
              f"{shared_shingles(clean, refs)}", file=sys.stderr)
    else:
        clean = [d for d in clean_docs(args.man_pages) if args.split in ("all", split_of(d["id"]))]
    # junk from the split's own clean text; the dev split's draws differ from the test split's
    docs = clean + junk_docs(clean, args.junk, args.seed + (1000 if args.split == "dev" else 0))
    total = collections.Counter((d["meta"]["lang"], d["meta"]["src"]) for d in docs)
    arms, scored = {}, {}
    for name in names:
        t = time.perf_counter()
        scored[name] = run_arm(tmp, name, docs, positives, args.seed, ARMS[name])
        arms[name] = kept_counts(scored[name], ARMS[name].get("threshold", 0.5))
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print(f"{args.split} split: {len(clean)} clean, {len(docs) - len(clean)} junk documents; seed {args.seed}; "
          + ", ".join(f"{n} threshold {ARMS[n].get('threshold', 0.5)}" for n in names) + "\n")
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
    if args.sweep:
        sweep(scored, total)


def planted() -> None:
    """Kept shares on the planted corpus of tests/test_data_quality.py (Python docs, classical
    poems, stdlib code, hand-written junk; references: docs pages, classics, stdlib modules)."""
    import test_data_quality as tdq

    tmp = Path(tempfile.mkdtemp(prefix="quality_planted_"))
    build_corpus(tmp / "corpus", sources=["pydocs", "poetry", "stdlib"], from_sample=True, log=lambda m: None)
    arms = {"before": ARMS["before"], "new (defaults)": ARMS["new"],
            "new without shipped references": {"shipped_references": False}}
    for seed in (0, 3):
        for name, q in arms.items():
            f = tmp / f"{seed}-{len(list(tmp.iterdir()))}"
            f.mkdir()
            _, share = tdq.run_quality(tdq.planted(tmp / "corpus", f, seed=seed), **q)
            print(seed, name, {f"{d}/{g}": round(v, 3) for (d, g), v in sorted(share.items())}, flush=True)


def sweep(scored: dict, total: collections.Counter) -> None:
    """Kept share of clean and junk (junk without markov too) per language and threshold."""
    print("\n| arm | threshold | " + " | ".join(f"{l} clean | {l} junk | {l} junk w/o markov" for l in ("en", "zh")) + " |")
    print("|---|---|" + "---|" * 6)
    for name, rows in scored.items():
        for t in SWEEP:
            k = kept_counts(rows, t)
            cells = []
            for lang in ("en", "zh"):
                for srcs in (CLEAN, JUNK, [j for j in JUNK if j != "markov"]):
                    n = sum(total[(lang, s)] for s in srcs)
                    cells.append(f"{sum(k[(lang, s)] for s in srcs) / max(1, n):.1%}")
            print(f"| {name} | {t} | " + " | ".join(cells) + " |")


CLEAN = ("faq", "man", "lohelp", "handbook", "manuals")
JUNK = ("spam", "boilerplate", "keywords", "markov", "mojibake")
ALL_KINDS = ["shuffled", "stuffed", "boilerplate", "spam", "garbled", "repeated", "minified", "markov", "listed"]
# the defaults before issue 35's last round: the corpus's references only, the base damage
# kinds and dense measures (with no shipped references the damage mix is as it was)
BEFORE = {"shipped_references": False, "negative_kinds": list(BASE_NEGATIVE_KINDS), "markov_pool": 0,
          "dense_keys": list(DENSE_BASE)}
ARMS = {"before": BEFORE,
        "shipped": {**BEFORE, "shipped_references": True},   # + shipped modern prose
        "shipped+kinds": {**BEFORE, "shipped_references": True, "negative_kinds": ALL_KINDS},  # + markov, listed
        }
# dev-split arms (docs/quality-topics.md): markov copies drifting over 4 / 8 other documents,
# the unbalanced-brackets measure; `new` is the defaults now (= pool4+unbalanced, threshold 0.5)
ARMS["pool4"] = {**ARMS["shipped+kinds"], "markov_pool": 4}
ARMS["pool4+unbalanced"] = {**ARMS["pool4"], "dense_keys": [*DENSE_BASE, "unbalanced"]}
ARMS["pool8+unbalanced"] = {**ARMS["pool4+unbalanced"], "markov_pool": 8}
ARMS["new"] = {}
ARMS["new@0.6"] = {"threshold": 0.6}   # the previous round's threshold
# + the coherence rule (opt-in, needs the embed extra): English adjacent-passage similarity
# >= 0.3, chosen on dev (docs/quality-topics.md: Markov p90 0.307, clean FAQ / man p5 0.304 / 0.336)
ARMS["new+coherence"] = {"coherence_min": {"en": 0.3}}
REPORTED = ["before", "new"]
SWEEP = (0.4, 0.45, 0.5, 0.525, 0.55, 0.575, 0.6, 0.625, 0.65, 0.7)


if __name__ == "__main__":
    main()
