"""Tables as plain rows, rendered to Markdown or HTML (eval.md, report.md, report.html).

A table never shows an unexplained blank: a table without rows says why (`empty`), and a
column whose every cell is empty ("-") gets a line saying why (`why[column]`, else a
generic "nothing recorded" line), so "-" never reads as a bug."""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

from lmforge.report.units import Bytes, Count, Share, num


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""
    empty: str = ""                                   # why there are no rows
    why: dict[str, str] = field(default_factory=dict)  # column -> why it may be all "-"


def fmt(x, nd: int = 4) -> str:
    """A cell for reading: floats to `nd` significant digits, unit-typed cells (units.Bytes,
    Count, Share) as they print themselves, lists element by element."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v, nd) for v in x) + "]"
    if isinstance(x, (Bytes, Count, Share)):
        return str(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()                                 # a numpy scalar
    if isinstance(x, float):
        return num(x, nd)
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def empty_columns(t: Table) -> list[str]:
    """Columns whose every cell renders as "-" (none when the table has no rows)."""
    if not t.rows:
        return []
    return [h for j, h in enumerate(t.headers) if all(fmt(r[j]) == "-" for r in t.rows if j < len(r))]


def notes(t: Table) -> list[str]:
    """The note and one line per unexplained blank."""
    out = [t.note] if t.note else []
    if not t.rows:
        out.append(f"No rows: {t.empty or 'nothing of this kind was recorded in this run.'}")
    for h in empty_columns(t):
        out.append(f"'{h}' is empty: {t.why.get(h) or 'no value was recorded for it in this run.'}")
    return out


def to_markdown(t: Table) -> str:
    lines = ["| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in r) + " |" for r in t.rows]
    extra = notes(t)
    return "\n".join(lines) + ("\n\n" + "\n\n".join(extra) if extra else "")


_NUMBER = re.compile(r"^[-+~<>≈]?[\d.,:]*\d[\d.,:]*\s*(%|x|s|ms|min|h|[kMGT]?i?B|[kMGT]|e[-+]?\d+)?$|^-$")


def text_columns(t: Table) -> list[bool]:
    """Columns that hold words (left-aligned in HTML); numbers, sizes, ratios and '-' read
    right-aligned. A column is text when most of its filled cells are."""
    out = []
    for j in range(len(t.headers)):
        cells = [fmt(r[j]).strip() for r in t.rows if j < len(r) and fmt(r[j]).strip()]
        words = sum(1 for c in cells if not _NUMBER.match(c))
        out.append(j == 0 or (bool(cells) and 2 * words > len(cells)))
    return out


def to_html(t: Table) -> str:
    left = text_columns(t)
    cls = [' class="t"' if x else "" for x in left]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for h, c in zip(t.headers, cls))
    body = "".join("<tr>" + "".join(f"<td{c}>{html.escape(fmt(v))}</td>" for v, c in zip(r, cls)) + "</tr>"
                   for r in t.rows)
    note = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes(t))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _pm(v, se) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f} ± {se:.3f}" if se is not None and not math.isnan(se) else f"{v:.3f}"


def _vs_chance(v, se, chance) -> str:
    """acc - chance, and how many standard errors that is."""
    if v is None or chance is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    d = v - chance
    return f"{d:+.3f} ({d / se:+.1f} se)" if se and not math.isnan(se) else f"{d:+.3f}"


def perplexity_table(ppl: dict, base: dict | None = None, base_why: str = "") -> Table:
    """Per-domain loss / perplexity / bits per byte; with `base` (lmforge.report.baselines on
    the same documents) also the untrained and unigram scores and the change against unigram."""
    from lmforge.report.baselines import bpb
    from lmforge.report.units import Bytes

    cols = ["domain", "docs", "tokens", "bytes", "loss (nats/token)", "perplexity", "bits/byte"]
    note = "bits/byte = total nats / ln 2 / UTF-8 bytes of the decoded text: comparable across tokenizers."
    if base:
        cols += ["untrained (ln V)", "unigram loss", "unigram bits/byte", "loss vs unigram"]
        note += (" Baselines on the same documents: untrained = ln V (uniform over the vocabulary of "
                 f"{base['vocab_size']:,}); unigram = each token by its frequency in the training split. "
                 "A negative 'loss vs unigram' is what training bought beyond token frequencies.")
    if not base and base_why:
        note += f" No untrained / unigram baselines: {base_why}."
    t = Table(f"Perplexity ({ppl.get('split', 'val')} split)", cols, note=note)
    for d, r in ppl.get("domains", {}).items():
        row = [d, r["docs"], r["tokens"], Bytes(r["bytes"]) if isinstance(r.get("bytes"), int) else r.get("bytes"),
               r["loss"], r["ppl"], r["bpb"]]
        if base:
            u = base["domains"].get(d) if d != "all" else base.get("all")
            same = u is not None and u["tokens"] == r["tokens"]     # the same documents, else not comparable
            ul = u["loss"] if same else None
            row += [base["uniform"], ul, bpb(ul, r["tokens"], r.get("bytes")) if ul is not None else None,
                    f"{r['loss'] - ul:+.3f}" if ul is not None and isinstance(r.get("loss"), float) else None]
        t.rows.append(row)
    t.why = {"unigram loss": "the eval's token data was not found, or its documents differ from the ones the "
                             "eval scored", "unigram bits/byte": "no unigram loss (see 'unigram loss')",
             "loss vs unigram": "no unigram loss (see 'unigram loss')"}
    return t


def mcq_table(mcq: dict) -> Table:
    t = Table("Multiple choice (log-likelihood)", ["set", "shots", "items", "chance", "acc", "acc_norm",
                                                   "acc_bytes", "acc_norm vs chance"],
              note="lm-eval's metrics: acc = highest log-likelihood; acc_norm = per character of the choice; "
                   "acc_bytes = per UTF-8 byte. ± is the standard error sqrt(p(1-p)/(n-1)); chance is what an "
                   "untrained model scores; within ~2 se of chance the model has not learned the task yet.",
              why={"acc_bytes": "this eval.json predates the per-byte metric", "chance": "the sets give no "
                   "number of choices"})
    for name, s in mcq.items():
        for k, r in s.get("results", {}).items():
            t.rows.append([name, int(k), r["n"], r.get("chance"), _pm(r["acc"], r["acc_stderr"]),
                           _pm(r["acc_norm"], r["acc_norm_stderr"]),
                           _pm(r["acc_bytes"], r["acc_bytes_stderr"]) if "acc_bytes" in r else None,
                           _vs_chance(r.get("acc_norm"), r.get("acc_norm_stderr"), r.get("chance"))])
    return t


def continuation_table(c: dict) -> Table:
    """Continuation choice on held-out text (lmforge.eval.continuation): all, then per domain."""
    t = Table("Continuation choice on held-out text", ["domain", "items", "chance", "acc"],
              note="which of 4 token spans (the true one, 3 from other held-out documents of the same domain) "
                   "follows the context, by summed log-probability; ± is the standard error sqrt(p(1-p)/(n-1)).")
    rows = [("all", c["n"], c["acc"])] + [(d, r["n"], r["acc"]) for d, r in c.get("by_domain", {}).items()]
    for name, n, acc in rows:
        se = (acc * (1 - acc) / (n - 1)) ** 0.5 if n > 1 and acc is not None else None
        t.rows.append([name, n, c.get("chance"), _pm(acc, se)])
    return t


def _ngram_cell(r: dict) -> str:
    scored = r["items"] - r["too_short"]
    if scored <= 0:
        return f"none scored: all {r['items']} items shorter than {r['n']} {r['unit']}s"
    return f"{r['fraction']:.1%} ({r['contaminated']}/{scored} items, {r['n']}-{r['unit']} n-grams)"


def contamination_table(cont: dict) -> Table:
    t = Table("Contamination", ["benchmark", "loss train", "loss test", "loss reference", "gap (ref - test)",
                                "threshold", "flagged", "n-gram overlap"],
              note="gap in nats/token; flagged when the test split is that much easier than the look-alike "
                   "reference (Skywork). n-gram overlap: share of test items sharing an n-gram with the "
                   "training data.",
              why={"loss train": "no benchmark gave a train split (contamination.benchmarks[].train), so there "
                                 "is no train-vs-test gap to report; the test-vs-reference gap is the check",
                   "loss reference": "no reference split given or built (contamination.benchmarks[].reference)",
                   "gap (ref - test)": "no reference split to compare the test split with",
                   "n-gram overlap": "no training data given (contamination.training_data)"})
    for name, c in cont.items():
        p = c.get("ppl", {})
        sp = p.get("splits", {})
        ng = "; ".join(_ngram_cell(r) for r in c.get("ngram", {}).values()) or None
        t.rows.append([name, sp.get("train", {}).get("loss"), sp.get("test", {}).get("loss"),
                       sp.get("reference", {}).get("loss"), p.get("gap"), p.get("threshold"),
                       p.get("flagged"), ng])
    return t


def eval_table_list(result: dict, base: dict | None = None, base_why: str = "") -> list[Table]:
    """The tables of one eval.json (`base`: lmforge.report.baselines for its perplexity docs,
    else `base_why` says why there is none)."""
    out = []
    if result.get("perplexity"):
        out.append(perplexity_table(result["perplexity"], base, base_why))
    if result.get("continuation"):
        out.append(continuation_table(result["continuation"]))
    if result.get("mcq"):
        out.append(mcq_table(result["mcq"]))
    if result.get("contamination"):
        out.append(contamination_table(result["contamination"]))
    return out


def eval_tables(result: dict) -> list[tuple[str, str]]:
    """(title, markdown table) pairs of one eval.json."""
    return [(t.title, to_markdown(t)) for t in eval_table_list(result)]
