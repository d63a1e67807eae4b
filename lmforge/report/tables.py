"""Tables as plain rows, rendered to Markdown or HTML (eval.md, report.md, report.html)."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""


def fmt(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def to_markdown(t: Table) -> str:
    lines = ["| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in r) + " |" for r in t.rows]
    return "\n".join(lines) + (f"\n\n{t.note}" if t.note else "")


def to_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _pm(v, se) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f} ± {se:.3f}" if se is not None and not math.isnan(se) else f"{v:.3f}"


def eval_table_list(result: dict) -> list[Table]:
    """The tables of one eval.json."""
    out = []
    ppl = result.get("perplexity")
    if ppl:
        t = Table(f"Perplexity ({ppl.get('split', 'val')} split)",
                  ["domain", "docs", "tokens", "bytes", "loss (nats/token)", "perplexity", "bits/byte"],
                  note="bits/byte = total nats / ln 2 / UTF-8 bytes of the decoded text: comparable across tokenizers.")
        for d, r in ppl.get("domains", {}).items():
            t.rows.append([d, r["docs"], r["tokens"], r["bytes"], r["loss"], r["ppl"], r["bpb"]])
        out.append(t)
    mcq = result.get("mcq")
    if mcq:
        t = Table("Multiple choice (log-likelihood)", ["set", "shots", "items", "acc", "acc_norm", "acc_bytes",
                                                       "chance"],
                  note="lm-eval's metrics: acc = highest log-likelihood; acc_norm = per character of the choice; "
                       "acc_bytes = per UTF-8 byte. ± is the standard error sqrt(p(1-p)/(n-1)).")
        for name, s in mcq.items():
            for k, r in s.get("results", {}).items():
                t.rows.append([name, int(k), r["n"], _pm(r["acc"], r["acc_stderr"]),
                               _pm(r["acc_norm"], r["acc_norm_stderr"]),
                               _pm(r["acc_bytes"], r["acc_bytes_stderr"]) if "acc_bytes" in r else "-",
                               r.get("chance")])
        out.append(t)
    cont = result.get("contamination")
    if cont:
        t = Table("Contamination", ["benchmark", "loss train", "loss test", "loss reference", "gap (ref - test)",
                                    "threshold", "flagged", "n-gram overlap"],
                  note="gap in nats/token; flagged when the test split is that much easier than the look-alike "
                       "reference (Skywork). n-gram overlap: fraction of test items sharing an n-gram with the "
                       "training data.")
        for name, c in cont.items():
            p = c.get("ppl", {})
            sp = p.get("splits", {})
            ng = "; ".join(f"{r['fraction']:.3f} ({r['contaminated']}/{r['items'] - r['too_short']}, "
                           f"{r['n']}-gram {r['unit']})" for r in c.get("ngram", {}).values()) or "-"
            t.rows.append([name, sp.get("train", {}).get("loss"), sp.get("test", {}).get("loss"),
                           sp.get("reference", {}).get("loss"), p.get("gap"), p.get("threshold"),
                           p.get("flagged"), ng])
        out.append(t)
    return out


def eval_tables(result: dict) -> list[tuple[str, str]]:
    """(title, markdown table) pairs of one eval.json."""
    return [(t.title, to_markdown(t)) for t in eval_table_list(result)]
