"""Target vs realised data mixture, with the spread that sampling alone would give.

A pretraining stage's config gives each domain a share of the tokens; mixture.json records
the tokens each domain actually got. Whether a gap (5.2% realised against a 15% target) is
a bug or noise depends on how many documents the stage drew and how long they are: the
sampler (lmforge.train.mixture) draws a domain per document with probability
p_e = (s_e / m_e) / sum_f (s_f / m_f)  (s: target token share, m: mean document length),
then packs whole documents. With N documents drawn, the realised token share of domain d
is a ratio of sums; its standard deviation (delta method) is

    sd(d) = sqrt( sum_e p_e E[L^2 | e] (1[e = d] - s_d)^2 / N ) / E[L],   E[L] = sum_e p_e m_e,

and N = tokens trained / E[L]. With equal document lengths this is the binomial
sqrt(s (1 - s) / N); long, uneven documents (a few 5,000-token prose pages among 50-token
dialogs) make it far larger. The document-length moments come from the stage's token data
(its config.json `data`); without it the spread is left out, never guessed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DomainLengths:
    docs: int
    mean: float        # tokens per document
    mean_sq: float     # E[L^2]


def _weights_to_shares(mix: dict, counts: dict[str, int], progress: float = 0.5) -> dict[str, float]:
    """lmforge.train.mixture.shares (the report may not import train): normalised weights x
    repeat, or the data's token proportions when no weights are given; a ramp at `progress`
    (0.5: its mean over the stage)."""
    weights = mix.get("weights") or {}
    repeat = mix.get("repeat") or {}
    base = {d: float(weights.get(d, 0.0)) if weights else float(c) for d, c in counts.items()}
    base = {d: w * float(repeat.get(d, 1.0)) for d, w in base.items()}
    total = sum(base.values())
    if total <= 0:
        return {}
    out = {d: w / total for d, w in base.items()}
    ramp = mix.get("ramp")
    if isinstance(ramp, dict) and ramp.get("domain") in base:
        target = ramp.get("start", 0.1) + (ramp.get("end", 0.4) - ramp.get("start", 0.1)) * progress
        rest = total - base[ramp["domain"]]
        out = {d: (target if d == ramp["domain"] else (1 - target) * (w / rest if rest > 0 else 0.0))
               for d, w in base.items()}
    return out


def configured_mixtures(config: dict) -> dict[str, dict] | None:
    """{mixture stage name: mixture config} from a pretrain stage's config.json, as named in
    its mixture.json ("main" for a one-stage `mixture:`); None when no mixture is configured
    (shuffled passes over all documents: the data's own proportions, no target)."""
    stages = config.get("stages") or []
    if stages:
        return {(s.get("name") or f"stage{i}"): (s.get("mixture") or {}) for i, s in enumerate(stages)}
    if isinstance(config.get("mixture"), dict):
        return {"main": config["mixture"]}
    return None


def length_moments(data_dir: str | Path) -> dict[str, DomainLengths] | None:
    """Per-domain document count, mean and mean square length of a token folder's train split."""
    import numpy as np

    from lmforge.shards import TokenDataset

    try:
        ds = TokenDataset(data_dir, "train")
    except (OSError, ValueError):
        return None
    if not ds.shards:
        return None
    lens = np.concatenate([np.diff(s.starts) for s in ds.shards]).astype(np.float64)
    out = {}
    for d, name in enumerate(ds.domain_names):
        sel = lens[ds.doc_domain == d]
        out[name] = DomainLengths(int(len(sel)), float(sel.mean()) if len(sel) else 0.0,
                                  float((sel ** 2).mean()) if len(sel) else 0.0)
    return out


def share_sd(target: dict[str, float], lengths: dict[str, DomainLengths], tokens: int) -> tuple[dict, float]:
    """({domain: sd of its realised token share}, expected documents drawn) for a stage that
    trained `tokens` tokens with target shares `target` (see the module docstring)."""
    live = {d: s for d, s in target.items() if s > 0 and d in lengths and lengths[d].docs > 0}
    if not live or tokens <= 0:
        return {}, 0.0
    raw = {d: s / lengths[d].mean for d, s in live.items()}
    z = sum(raw.values())
    p = {d: r / z for d, r in raw.items()}
    mean_len = sum(p[d] * lengths[d].mean for d in live)
    n_docs = tokens / mean_len
    s = {d: p[d] * lengths[d].mean / mean_len for d in live}   # = target, renormalised over live domains
    sd = {}
    for d in target:
        sd_share = s.get(d, 0.0)
        var = sum(p[e] * lengths[e].mean_sq * ((1.0 if e == d else 0.0) - sd_share) ** 2 for e in live)
        sd[d] = math.sqrt(var / n_docs) / mean_len
    return sd, n_docs


def verdict(realised: float, target: float, sd: float | None, n_docs: float) -> str:
    """How to read a gap: within sampling noise, unusual, or beyond noise (check the sampler)."""
    if sd is None:
        return "spread unknown (token data not found)"
    gap = realised - target
    if sd == 0:
        return "exact" if abs(gap) < 1e-9 else "beyond noise: check the mixture"
    z = gap / sd
    few = f"; only ~{n_docs:.0f} documents drawn" if n_docs < 30 else ""
    if abs(z) <= 2:
        return f"noise ({z:+.1f} sd{few})"
    if abs(z) <= 3:
        return f"unusual ({z:+.1f} sd{few})"
    return f"beyond noise ({z:+.1f} sd): check the mixture"


def _sft_reading(config, target: dict, total: int) -> str:
    """SFT mixes pretraining rows in by feedback, not by sampling: how close that holds the share."""
    if not target["pretraining text"]:
        return "no pretraining text mixed in"
    seq = ((config.get("train") or {}).get("seq_len") or 0) if isinstance(config, dict) else 0
    if not (seq and total):
        return "held by the loader (within one row)"
    return (f"held by the loader: it adds a pretraining row whenever the share falls below the target, "
            f"so it is off by at most one row ({seq} tokens = {seq / total:.1%})")


def _target(rec: dict, mix: dict | None, counts: dict[str, int], tokens: dict[str, int]) -> dict | None:
    """Target shares of one mixture.json record: SFT's pretraining share, else the configured
    mixture's (natural proportions need the token counts), else None (no mixture configured)."""
    if "target_pretraining_share" in rec:
        t = float(rec["target_pretraining_share"] or 0.0)
        return {"pretraining text": t, "sft replies": 1 - t}
    if mix is None or not (mix.get("weights") or counts):
        return None
    return _weights_to_shares(mix, counts or {d: 1 for d in tokens})


def compare(stage_dir: Path, mixture: list[dict]) -> list[dict]:
    """Per mixture stage of a training stage folder: [{stage, tokens, n_docs, rows: [{domain,
    target, realised, sd, verdict}]}]; target None where no mixture is configured."""
    try:
        config = json.loads((Path(stage_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    mixes = configured_mixtures(config) if isinstance(config, dict) else None
    lengths = length_moments(config["data"]) if mixes and isinstance(config.get("data"), str) else None
    counts = {d: round(v.docs * v.mean) for d, v in (lengths or {}).items()}
    out = []
    for rec in mixture:
        tokens = {d: int(v) for d, v in (rec.get("tokens") or {}).items()}
        total = sum(tokens.values())
        realised = {d: (v / total if total else 0.0) for d, v in tokens.items()}
        target = _target(rec, (mixes or {}).get(str(rec.get("stage"))), counts, tokens)
        sd, n_docs = share_sd(target, lengths, total) if target and lengths else ({}, 0.0)
        held = _sft_reading(config, target, total) if "target_pretraining_share" in rec else None
        rows = []
        for d in sorted(set(tokens) | set(target or {})):
            tg, sdd = (target or {}).get(d), sd.get(d)
            reading = held or (verdict(realised.get(d, 0.0), tg, sdd, n_docs) if tg is not None else None)
            rows.append({"domain": d, "target": tg, "realised": realised.get(d, 0.0), "tokens": tokens.get(d, 0),
                         "sd": sdd, "verdict": reading})
        out.append({"stage": str(rec.get("stage")), "tokens": total, "n_docs": n_docs, "rows": rows,
                    "sft": "target_pretraining_share" in rec})
    return out
