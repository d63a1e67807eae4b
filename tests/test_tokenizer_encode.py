"""Encoding documents to token shards: exact contents, domains, val split, determinism,
empty documents counted; the compression report; the CLI."""
import json
from collections import Counter

import numpy as np
import pytest

from lmforge import config
from lmforge.config import ConfigError
from lmforge.shards import TokenDataset
from lmforge.cli.tokenizer import register
from lmforge.stages.encode import run as run_encode
from lmforge.stages.tokenizer import run as run_train
from lmforge.tokenizer.encode import EncodeConfig, ValSplit, split_hash
from lmforge.tokenizer.report import TokenizerReportConfig, compression_report, format_table, run_report
from lmforge.tokenizer.train import TokenizerConfig, load_tokenizer
from test_tokenizer import make_docs, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    docs = make_docs(160, seed=11)
    docs[5]["text"] = ""                                   # empty: counted, not written
    docs[9]["meta"] = {}                                   # no domain -> "default"
    docs[13]["text"] = "literal <|im_end|> in a web page"  # stays text, not the special id
    write_jsonl(d / "in" / "a.jsonl", docs[:100])
    write_jsonl(d / "in" / "b.jsonl", docs[100:])
    run_train(TokenizerConfig(inputs=[str(d / "in")], out_dir=str(d / "tok"), vocab_size=600), progress=False)
    return d, docs


def encode(d, name, **kw):
    kw = {"inputs": [str(d / "in")], "tokenizer": str(d / "tok"), "out_dir": str(d / name),
          "batch_docs": 16, "shard_tokens": 2000, "val_docs_per_domain": 3, **kw}
    return run_encode(EncodeConfig(**kw), progress=False)


def read_all(folder):
    out = []
    for split in ("train", "val"):
        ds = TokenDataset(folder, split)
        out += [(split, ds.domain_names[ds.doc_domain[i]], ds.doc(i).tolist()) for i in range(ds.n_docs)]
    return out


def test_shards_hold_exactly_the_tokenized_docs_plus_eos(setup):
    d, docs = setup
    stats = encode(d, "w1", workers=1)
    tok = load_tokenizer(d / "tok")
    tok.encode_special_tokens = True
    got = read_all(d / "w1")
    expect = Counter((tuple(tok.encode(doc["text"], add_special_tokens=False).ids + [0]),
                      doc["meta"].get("domain", "default")) for doc in docs if doc["text"])
    assert Counter((tuple(ids), dom) for _, dom, ids in got) == expect
    assert len(got) == len(docs) - 1
    for split, dom, ids in got:
        assert ids[-1] == 0 and 0 not in ids[:-1]
    assert not any(3 in ids for _, _, ids in got)  # the literal "<|im_end|>" is not id 3
    meta = json.loads((d / "w1" / "meta.json").read_text())
    assert meta["eos_id"] == 0 and meta["dtype"] == "uint16" and meta["padded_vocab_size"] % 64 == 0
    assert meta["domains"] == ["web", "code", "books", "default"]  # first appearance order
    assert len([s for s in meta["shards"] if s["split"] == "train"]) > 1  # bounded shards
    assert all(s["n_tokens"] <= 2000 for s in meta["shards"])
    assert stats["empty_docs"] == 1 and stats["empty_doc_ids"] == ["doc-5"]
    assert stats["docs"] == len(docs) == stats["train_docs"] + stats["val_docs"] + stats["empty_docs"]
    assert stats["train_tokens"] + stats["val_tokens"] == sum(len(ids) for _, _, ids in got)


def test_val_split_per_domain_is_by_id_hash(setup):
    d, docs = setup
    encode(d, "w1", workers=1)
    val = TokenDataset(d / "w1", "val")
    per_dom = {}
    for i in range(val.n_docs):
        per_dom.setdefault(val.domain_names[val.doc_domain[i]], 0)
        per_dom[val.domain_names[val.doc_domain[i]]] += 1
    # 3 per domain; the 1-document "default" domain keeps its only document for training
    assert per_dom == {"web": 3, "code": 3, "books": 3}
    # the chosen ones are the 3 lowest hashes of each domain's ids (brute force)
    by_dom = {}
    for doc in docs:
        if doc["text"]:
            by_dom.setdefault(doc["meta"].get("domain", "default"), []).append(doc)
    tok = load_tokenizer(d / "tok")
    tok.encode_special_tokens = True
    want = set()
    for dom, ds in by_dom.items():
        if len(ds) >= 6:
            for doc in sorted(ds, key=lambda x: split_hash(x["id"], "lmforge-val"))[:3]:
                want.add(tuple(tok.encode(doc["text"], add_special_tokens=False).ids + [0]))
    assert {tuple(val.doc(i).tolist()) for i in range(val.n_docs)} <= want
    assert val.n_docs == 9


def test_val_fraction_and_stability_under_reordering(setup, tmp_path):
    d, docs = setup
    a = encode(d, "frac", val_fraction=0.25, val_docs_per_domain=0, workers=1)
    assert 0 < a["val_docs"] < a["train_docs"]
    # the same documents in reverse order: the same val set
    write_jsonl(tmp_path / "rev" / "a.jsonl", docs[::-1])
    run_encode(EncodeConfig(inputs=[str(tmp_path / "rev")], tokenizer=str(d / "tok"),
                            out_dir=str(tmp_path / "out"), val_fraction=0.25, val_docs_per_domain=0,
                            workers=1), progress=False)
    val_a = {tuple(x[2]) for x in read_all(d / "frac") if x[0] == "val"}
    val_b = {tuple(x[2]) for x in read_all(tmp_path / "out") if x[0] == "val"}
    assert val_a == val_b


def test_same_bytes_with_one_and_two_workers(setup):
    d, _ = setup
    encode(d, "w1", workers=1)
    encode(d, "w2", workers=2)
    files = sorted(p.name for p in (d / "w1").iterdir() if p.suffix in (".tokens", ".docs", ".domains"))
    assert files == sorted(p.name for p in (d / "w2").iterdir() if p.suffix in (".tokens", ".docs", ".domains"))
    for f in files:
        assert (d / "w1" / f).read_bytes() == (d / "w2" / f).read_bytes(), f
    assert (d / "w1" / "meta.json").read_text() == (d / "w2" / "meta.json").read_text()


def test_finished_output_skipped_and_partial_output_replaced(setup):
    d, _ = setup
    encode(d, "w1", workers=1)
    assert encode(d, "w1", workers=1)["skipped"] is True
    (d / "w1" / "meta.json").unlink()
    (d / "w1" / "train-00099.tokens").write_bytes(b"junk")   # left by an interrupted run
    stats = encode(d, "w1", workers=1)
    assert "skipped" not in stats and not (d / "w1" / "train-00099.tokens").exists()
    assert TokenDataset(d / "w1").n_docs == stats["train_docs"]


def test_heap_split_matches_brute_force():
    rng = np.random.default_rng(0)
    ids = [f"x{i}" for i in range(200)]
    doms = rng.integers(0, 3, size=200)
    vs = ValSplit(0.0, 5, "s")
    routed = []
    for seq, (i, dom) in enumerate(zip(ids, doms)):
        routed += vs.route(seq, i, int(dom), i)
    routed += vs.finish()
    assert sorted(r[2] for r in routed) == sorted(ids)  # every doc exactly once
    got = {r[2] for r in routed if r[0] == "val"}
    want = set()
    for dom in range(3):
        mine = [i for i, dd in zip(ids, doms) if dd == dom]
        want |= set(sorted(mine, key=lambda x: split_hash(x, "s"))[:5])
    assert got == want


@pytest.mark.parametrize("kw, key", [
    ({"val_fraction": 0.1, "val_docs_per_domain": 5}, "val_fraction"),
    ({"val_fraction": 1.0, "val_docs_per_domain": 0}, "val_fraction"),
    ({"shard_tokens": 0}, "shard_tokens"),
    ({"workers": -1}, "workers"),
])
def test_bad_encode_config_refused(kw, key):
    with pytest.raises(ConfigError) as e:
        config.load(EncodeConfig, data={"inputs": ["x"], "tokenizer": "t", "out_dir": "o", **kw})
    assert key in str(e.value) and "\n" not in str(e.value)


def test_report_counts_and_baseline_ratio(setup, tmp_path):
    d, docs = setup
    tok = load_tokenizer(d / "tok")
    rows = compression_report(tok, docs, baseline=tok)
    by = {(r["domain"], r["lang"]): r for r in rows}
    total = by[("*", "*")]
    assert total["docs"] == len(docs)
    assert total["chars"] == sum(len(x["text"]) for x in docs)
    assert total["bytes"] == sum(len(x["text"].encode()) for x in docs)
    assert total["ratio"] == 1.0
    web_zh = by[("web", "zh")]
    assert web_zh["bytes_per_token"] > web_zh["chars_per_token"] > 0  # 3-byte Han characters
    assert by[("*", "zh")]["docs"] == sum(1 for x in docs if x["meta"].get("lang") == "zh")
    table = format_table(rows)
    assert "chars/tok" in table and "web" in table
    cfg = TokenizerReportConfig(tokenizer=str(d / "tok"), inputs=[str(d / "in")], out=str(tmp_path / "r.json"))
    rows2, path, account = run_report(cfg)
    assert json.loads(path.read_text())["rows"][-1]["tokens"] == rows2[-1]["tokens"] == total["tokens"]
    assert account == f"[tokenizer report] read {len(docs)} documents, kept {len(docs)}, rejected 0"
    assert not (tmp_path / "r-rejects.jsonl").exists()
    bad = tmp_path / "bad.jsonl"      # a broken line is counted and kept aside, as every stage does
    bad.write_text(json.dumps({"text": "one good document"}) + "\n{not json\n" + json.dumps({"txt": "x"}) + "\n")
    cfg = TokenizerReportConfig(tokenizer=str(d / "tok"), inputs=[str(bad)], out=str(tmp_path / "b.json"))
    _, _, account = run_report(cfg)
    assert account.startswith("[tokenizer report] read 3 documents, kept 1, rejected 2 (")
    assert account.endswith(f"rejects: {tmp_path / 'b-rejects.jsonl'}")
    assert [r["line"] for r in map(json.loads, (tmp_path / "b-rejects.jsonl").read_text().splitlines())] == [2, 3]


def test_cli_train_encode_report(setup, tmp_path, capsys):
    import argparse
    d, _ = setup
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    cfg = tmp_path / "tok.yaml"
    cfg.write_text(f"inputs: [{d / 'in'}]\nout_dir: {tmp_path / 'tok'}\nvocab_size: 5000\n")
    args = parser.parse_args(["tokenizer", "train", str(cfg), "--set", "vocab_size=500", "--quiet"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "tok" / "lmforge_tokenizer.json").read_text())["vocab_size"] <= 500
    args = parser.parse_args(["tokenizer", "encode", "--set", f"inputs=[{d / 'in'}]", "--set",
                              f"tokenizer={tmp_path / 'tok'}", "--set", f"out_dir={tmp_path / 'tokens'}",
                              "--quiet"])
    assert args.func(args) == 0
    assert TokenDataset(tmp_path / "tokens").n_docs > 0
    args = parser.parse_args(["tokenizer", "report", "--set", f"inputs=[{d / 'in'}]", "--set",
                              f"tokenizer={tmp_path / 'tok'}", "--set", f"baseline={d / 'tok'}"])
    assert args.func(args) == 0
    assert "base tok / ours" in capsys.readouterr().out
    args = parser.parse_args(["tokenizer", "report", "--set", f"tokenizer={tmp_path / 'tok'}", "--set", "out_dir=x"])
    with pytest.raises(ConfigError, match=r"^--set out_dir=x: out_dir: unknown key"):   # blamed on --set
        args.func(args)
    args = parser.parse_args(["tokenizer", "train", "--set", "vocab_size=100", "--set", "inputs=[x]",
                              "--set", "out_dir=o"])
    with pytest.raises(ConfigError, match="vocab_size"):
        args.func(args)


def test_small_domains_are_not_emptied_into_val():
    vs = ValSplit(0.0, 50, "s")
    routed = []
    for seq, (doc_id, dom) in enumerate([("a", 0)] + [(f"b{i}", 1) for i in range(5)]
                                        + [(f"c{i}", 2) for i in range(30)]):
        routed += vs.route(seq, doc_id, dom, doc_id)
    routed += vs.finish()
    val = [r for r in routed if r[0] == "val"]
    assert sorted(r[1] for r in val) == [1, 2, 2, 2]   # 1 doc: 0 val; 5 docs: 1; 30 docs: 3
    assert len(routed) == 36


def test_dead_worker_raises_instead_of_hanging(tmp_path):
    from lmforge.tokenizer.encode import _Encoder
    with pytest.raises(RuntimeError, match="worker processes died"):
        with _Encoder(str(tmp_path / "missing.json"), 2, False) as enc:
            list(enc.map([([1], ["text"])]))
