"""Finding 10 (data): deduplication and quality filtering at equal training tokens. The corpus's
documents, with planted near-duplicates (a few documents copied many times, each copy with a
few percent of its words or characters edited), go through the data pipeline three ways: no
cleaning ("raw"), MinHash + exact-substring dedup ("dedup"), Gopher/C4 filters ("filtered");
each is encoded with the prepared tokenizer, pretrained for the same steps, and scored on the
same held-out documents (5% of each domain's documents by id hash, never in any arm's data)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lmforge import config
from lmforge.findings.catalog.phases import heldout_loss
from lmforge.findings.context import curve
from lmforge.findings.spec import Finding
from lmforge.io.atomic import read_json, write_text
from lmforge.io.jsonl import iter_records
from lmforge.stages import data as data_stage
from lmforge.stages import encode as encode_stage

# Fixed before the run.
HELDOUT = 0.05         # of each domain's documents (by id hash, at least 2): the held-out set
DUP_SHARE = 0.02       # documents worth 2% of the pool's bytes are duplicated ...
COPIES = 20            # ... 20 times each (heavy-tailed duplication, as in web crawls)
EDIT = 0.03            # each copy with 3% of its units edited (MinHash at 0.7 catches ~3%: docs/dedup.md)
PLANT_SEED = 0
WORKERS = 2            # data pipeline and encoding processes
SALT = "lmforge-findings-dedup"
# recipes/findings.yaml's data settings
CLEAN = {"filters": {"min_units": 20}, "minhash": {"threshold": 0.7}, "substring": {"min_bytes": 100}}
STEPS = {
    "raw": ["extract", "langid"],
    "dedup": ["extract", "langid", "minhash", "substring"],
    "filtered": ["extract", "filters", "langid"],
    "heldout": ["extract", "filters", "langid"],    # the held-out documents: clean text
}


def id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{SALT}:{doc_id}".encode(), digest_size=8).digest(), "big")


def heldout_ids(docs: list[dict]) -> set[str]:
    """Per domain, the HELDOUT share of its documents (at least 2) with the lowest id hashes: a
    domain of a few large documents (the Python docs) is held out too."""
    by_domain: dict[str, list[str]] = {}
    for d in docs:
        by_domain.setdefault(str(d.get("meta", {}).get("domain", "")), []).append(str(d["id"]))
    out = set()
    for ids in by_domain.values():
        out.update(sorted(ids, key=id_hash)[:max(2, round(HELDOUT * len(ids)))])
    return out


def read_docs(corpus: str) -> list[dict]:
    docs = []
    for f in sorted(Path(corpus, "docs").glob("*.jsonl*")):
        for n, _, rec, reason, detail in iter_records(f):
            if reason is not None:
                raise ValueError(f"{f}:{n}: {detail}")
            docs.append(rec)
    return docs


def edited_copy(text: str, rng: np.random.Generator) -> str:
    """`EDIT` of the text's units replaced by other units of the same text: words where the text
    is spaced, characters where it is not (Chinese)."""
    spaced = text.count(" ") > len(text) / 20
    units = text.split(" ") if spaced else list(text)
    for j in rng.choice(len(units), size=max(1, round(EDIT * len(units))), replace=False):
        units[j] = units[int(rng.integers(len(units)))]
    return (" " if spaced else "").join(units)


def plant(pool: list[dict]) -> tuple[list[dict], dict]:
    """The pool plus COPIES edited copies of random documents worth DUP_SHARE of its bytes
    (HTML pages are not copied: edits would land in the markup)."""
    rng = np.random.default_rng(PLANT_SEED)
    total = sum(len(d["text"].encode()) for d in pool)
    picked, size = [], 0
    for i in rng.permutation(len(pool)):
        d = pool[int(i)]
        if size >= DUP_SHARE * total:
            break
        if d.get("meta", {}).get("format") == "html":
            continue
        picked.append(d)
        size += len(d["text"].encode())
    copies = [{**d, "id": f"{d['id']}#copy{k}", "text": edited_copy(d["text"], rng)}
              for d in picked for k in range(COPIES)]
    return pool + copies, {"duplicated_docs": len(picked), "copies": len(copies),
                           "copy_bytes": sum(len(c["text"].encode()) for c in copies), "pool_bytes": total}


def inputs(ctx) -> dict:
    """work/inputs/{pool,heldout}.jsonl, written once for every arm and seed."""
    out = ctx.work("inputs")
    paths = {"pool": out / "pool.jsonl", "heldout": out / "heldout.jsonl", "plant": out / "plant.json"}
    if not all(p.exists() for p in paths.values()):
        docs = read_docs(ctx.cfg.corpus)
        held = heldout_ids(docs)
        pool, info = plant([d for d in docs if str(d["id"]) not in held])
        rows = {"heldout": [d for d in docs if str(d["id"]) in held], "pool": pool}
        for k, recs in rows.items():
            write_text(paths[k], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
        write_text(paths["plant"], json.dumps({**info, "heldout_docs": len(rows["heldout"])}, indent=1))
    return paths


def tokens(ctx, which: str, src: Path, build: bool = True) -> tuple[Path, dict]:
    """The data pipeline (STEPS[which]) and encoding of `src` (shared by the seeds). build=False
    reads what `prepare` built: the data stage always enters its folder (its steps skip
    themselves), and two seed workers entering one folder at once would collide on its lock."""
    data_dir, tok_dir = ctx.work("data", which), ctx.work("tokens", which)
    if build:
        dcfg = config.from_dict(data_stage.DataConfig, {"input": [str(src)], "output": str(data_dir),
                                                        "steps": STEPS[which], "workers": WORKERS, **CLEAN},
                                source="findings dedup")
        data_stage.run(dcfg, progress=False)
        ecfg = config.from_dict(encode_stage.EncodeConfig, {"inputs": [str(data_dir / "final")],
                                                            "out_dir": str(tok_dir), "tokenizer": ctx.cfg.tokenizer,
                                                            "workers": WORKERS, "val_docs_per_domain": 0},
                                source="findings dedup")
        encode_stage.run(ecfg, progress=False)
    got, enc = read_json(data_dir / "DONE.json"), read_json(tok_dir / "DONE.json")
    return tok_dir, {"docs": got.get("docs"), "train_tokens": enc.get("train_tokens"), "account": got.get("account")}


def prepare(ctx) -> None:
    """The inputs and every arm's cleaned, encoded data, once before the seeds (which may run in
    parallel processes: two of them building one data folder would collide on its lock)."""
    paths = inputs(ctx)
    tokens(ctx, "heldout", paths["heldout"])
    for arm in ("raw", "dedup", "filtered"):
        tokens(ctx, arm, paths["pool"])


def run(ctx, arm: str, seed: int) -> dict:
    paths = inputs(ctx)
    held_tokens, _ = tokens(ctx, "heldout", paths["heldout"], build=False)
    data, info = tokens(ctx, arm, paths["pool"], build=False)
    out = ctx.work(arm, f"seed{seed}")
    ctx.pretrain(out, seed, data=str(data))
    loss = heldout_loss(out, str(held_tokens), "train", ctx.scale.seq_len, batches=2 * ctx.scale.eval_batches)
    ctx.drop(out)
    return {"metrics": {"heldout_loss": loss["mean"], "kept_docs": info["docs"], "train_tokens": info["train_tokens"]},
            "curves": {"train loss (nats / token)": curve(out, "loss")},
            "notes": {**{f"heldout_{d}": v for d, v in loss.items() if d != "mean"}, "data": info["account"]}}


FINDING = Finding(
    name="dedup", source="data pipeline (Yi, Skywork, Index: MinHash + exact-substring dedup; Gopher/C4 filters)",
    claim="at equal training tokens, a deduplicated corpus and a quality-filtered corpus each give a lower "
          "held-out loss than the same corpus uncleaned",
    metric="held-out loss (nats / token), mean over domains, on 5% of the corpus's documents (cleaned by the "
           "filters), never in any arm's data",
    key="heldout_loss", higher_is_better=False, baseline="raw", expect={"dedup": "better", "filtered": "better"},
    run=run, prepare=prepare, needs=("data", "corpus", "tokenizer"),
    secondary=("kept_docs", "train_tokens"),
    curve_label="train loss (nats / token)",
    scale_note="a 5 MB corpus seen for less than one epoch: duplicates cost diversity, not repeated epochs; "
               "the planted duplication (2% of the bytes copied 20x: ~30% of the raw arm's text) is heavier "
               "and simpler than a web crawl's",
    deviations="duplicates are planted (each copy with 3% of its units replaced by other units of the same "
               "document), the corpus itself has few; the held-out documents go through the filters (the clean "
               "text a filtered corpus aims at, which favours the filtered arm by construction: that is the "
               "claim); the data settings are recipes/findings.yaml's (filters min_units 20, MinHash 0.7, "
               "substring 100 bytes); every arm pretrains on its data's natural domain proportions, so cleaning "
               "also changes the domain shares")
