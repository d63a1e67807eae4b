"""Nothing lost, nothing silent (issue 16): hostile JSON lines, invalid UTF-8 and a BOM cost one
line each, missing or unsupported inputs and runs that keep nothing are errors with one line
and a distinct exit code, every stage ends with a one-line account, reruns never append."""
import json
import os
import random
from pathlib import Path

import pytest

from lmforge import config
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.cli.errors import DataError
from lmforge.io.documents import ErrorSink
from lmforge.io.readers import iter_documents, list_files

DEEP = b"[" * 100_000 + b"]" * 100_000          # RecursionError inside json.loads
BIG_INT = b'{"text": "x", "n": ' + b"7" * 5000 + b"}"   # ValueError: int over 4300 digits
BOM = b"\xef\xbb\xbf"


def hostile_lines(good: list[bytes]) -> bytes:
    """good[0] behind a BOM, then a deep line, a huge int, invalid UTF-8, then the other good lines."""
    return BOM + good[0] + b"\n" + DEEP + b"\n" + BIG_INT + b"\n" + b'{"text": "bad \xff"}\n' + \
        b"\n".join(good[1:]) + b"\n"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ readers


def test_document_reader_counts_hostile_lines_and_keeps_reading(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(hostile_lines([b'{"text": "first"}', b'{"text": "after one"}', b'{"text": "after two"}']))
    sink = ErrorSink(tmp_path / "rejects.jsonl")
    docs = list(iter_documents(f, sink))
    sink.close()
    assert [d["text"] for d in docs] == ["first", "after one", "after two"]
    assert sink.counts == {"malformed_json": 2, "invalid_utf8": 1}
    rej = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rej] == [(2, "malformed_json"), (3, "malformed_json"),
                                                      (4, "invalid_utf8")]
    assert "nested too deeply" in rej[0]["detail"]


def test_bom_does_not_cost_the_first_record_of_a_text_file(tmp_path):
    (tmp_path / "a.txt").write_bytes(BOM + "plain text".encode())
    assert [d["text"] for d in iter_documents(tmp_path / "a.txt")] == ["plain text"]


def test_missing_or_unsupported_named_input_is_an_error(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "notes.csvx").write_text("x")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list_files([tmp_path / "ok.jsonl", tmp_path / "missing.jsonl"])
    with pytest.raises(ConfigError, match="notes.csvx.*unsupported"):
        list_files([tmp_path / "notes.csvx"])
    sink = ErrorSink()   # an unsupported file inside a folder is counted, not fatal
    assert list_files(tmp_path, sink) == [tmp_path / "ok.jsonl"]
    assert sink.counts == {"unsupported_format": 1}


def test_error_sink_rewrites_its_file_never_appends(tmp_path):
    path = tmp_path / "rejects.jsonl"
    for _ in range(2):
        with ErrorSink(path) as sink:
            sink.add("f", 1, "bad")
    assert len(path.read_text().splitlines()) == 1
    with ErrorSink(path):
        pass                       # a clean rerun leaves no stale rejects behind
    assert not path.exists()


def test_corpus_read_jsonl_names_file_and_line_for_hostile_lines(tmp_path):
    from lmforge.corpus.common import read_jsonl
    for bad in (DEEP, BIG_INT, b'{"t": "\xff"}'):
        (tmp_path / "c.jsonl").write_bytes(b'{"a": 1}\n' + bad + b"\n")
        with pytest.raises(DataError, match=r"c.jsonl:2"):
            list(read_jsonl(tmp_path / "c.jsonl"))
    (tmp_path / "c.jsonl").write_bytes(BOM + b'{"a": 1}\n')
    assert list(read_jsonl(tmp_path / "c.jsonl")) == [{"a": 1}]


def test_mcq_and_benchmark_files_count_hostile_lines(tmp_path):
    from lmforge.eval.contamination import load_texts
    from lmforge.eval.mcq import load_items
    good = [json.dumps({"question": f"q{i}?", "choices": ["a", "b"], "answer": 1}).encode() for i in range(3)]
    f = tmp_path / "m.jsonl"
    f.write_bytes(hostile_lines(good))
    loaded = load_items(f)
    assert [i.question for i in loaded.items] == ["q0?", "q1?", "q2?"]
    assert [e.split(": ")[0] for e in loaded.errors] == [f"{f}:2", f"{f}:3", f"{f}:4"]
    texts, errors = load_texts(f)
    assert len(texts) == 3 and len(errors) == 3


# ------------------------------------------------------------------ SFT / DPO data


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from test_align_utils import make_tokenizer
    from lmforge.tokenizer.train import load_tokenizer
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


def conv(q: str, a: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).encode()


def test_sft_counts_invalid_utf8_hostile_json_and_empty_replies(tok, tmp_path):
    from lmforge.align.sft_data import load_conversations
    f = tmp_path / "sft.jsonl"
    f.write_bytes(hostile_lines([conv("Hi?", "Hello."), conv("Sky?", "Blue."), conv("Sun?", "  "),
                                 conv("Sea?", "Wet.")]))
    with ErrorSink(tmp_path / "rejects.jsonl") as sink:
        convs, stats = load_conversations([str(f)], tok, 128, 8, sink)
    assert len(convs) == 3
    assert stats["records"] == 7 and stats["kept"] == 3
    assert stats["malformed"] == 2 and stats["invalid_utf8"] == 1 and stats["empty_reply"] == 1
    rej = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rej] == [(2, "malformed"), (3, "malformed"), (4, "invalid_utf8"),
                                                      (6, "empty_reply")]


def test_dpo_counts_invalid_utf8_and_empty_chosen(tok, tmp_path):
    from lmforge.align.preference_data import load_pairs

    def pair(chosen):
        return json.dumps({"prompt": "Color of the sky?", "chosen": chosen, "rejected": "Green."}).encode()

    f = tmp_path / "p.jsonl"
    f.write_bytes(hostile_lines([pair("Blue."), pair(""), pair("Blue, mostly.")]))
    with ErrorSink(tmp_path / "rejects.jsonl") as sink:
        pairs, stats = load_pairs([str(f)], tok, 128, sink)
    assert len(pairs) == 2
    assert stats["records"] == 6 and stats["empty_reply"] == 1 and stats["invalid_utf8"] == 1
    assert stats["malformed"] == 2


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan"])
def test_non_finite_numbers_refused_by_config(value):
    from lmforge.stages.pretrain import PretrainConfig
    with pytest.raises(ConfigError, match="train.optim.lr: .*finite"):
        config.load(PretrainConfig, None, ["data=x", f"train.optim.lr={value}"])


# ------------------------------------------------------------------ the data CLI


def data_yaml(tmp_path, inputs, out="out") -> Path:
    cfg = tmp_path / "data.yaml"
    cfg.write_text(json.dumps({"input": [str(p) for p in inputs], "output": str(tmp_path / out), "workers": 1,
                               "progress": False, "steps": []}))
    return cfg


def test_data_cli_missing_input_is_exit_2_naming_the_path(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_text('{"text": "hello world"}\n')
    cfg = data_yaml(tmp_path, [tmp_path / "raw", tmp_path / "nope.jsonl"])
    code, _, err = run_cli(capsys, "data", str(cfg))
    assert code == 2
    assert err.strip().count("\n") == 0 and "nope.jsonl" in err and err.startswith("lmforge data:")


def test_data_cli_all_rejected_is_exit_5_with_count_and_reasons(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_bytes(b"{broken\n" + b'{"text": "\xff"}\n' + b'{"id": 1}\n')
    code, _, err = run_cli(capsys, "data", str(data_yaml(tmp_path, [tmp_path / "raw"])))
    assert code == 5
    assert "all 3 documents" in err and "malformed_json 1" in err and "a.jsonl:1" in err
    assert err.strip().count("\n") == 0


def test_data_cli_account_and_no_duplicated_missing_inputs(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_bytes(b'{"text": "hello world"}\n{broken\n{"text": "second doc"}\n')
    (raw / "notes.xyz").write_text("not an input format")
    cfg = data_yaml(tmp_path, [raw])
    for _ in range(2):
        code, out, _ = run_cli(capsys, "data", str(cfg))
        assert code == 0
    lines = (tmp_path / "out" / "missing_inputs.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "notes.xyz" in lines[0]
    account = [l for l in out.splitlines() if l.startswith("[data] read")]
    assert account and "kept 2" in account[-1] and "malformed_json 1" in account[-1]
    assert "unsupported_format 1" in account[-1]


# ------------------------------------------------------------------ tokenizer CLI


@pytest.fixture(scope="module")
def docs_and_tok(tmp_path_factory):
    from lmforge.stages.tokenizer import run as run_train
    from lmforge.tokenizer.train import TokenizerConfig
    from test_tokenizer import make_docs, write_jsonl
    d = tmp_path_factory.mktemp("enc")
    write_jsonl(d / "in" / "a.jsonl", make_docs(60, seed=3))
    run_train(TokenizerConfig(inputs=[str(d / "in")], out_dir=str(d / "tok"), vocab_size=400), progress=False)
    return d


def test_encode_missing_input_writes_nothing_and_rerun_works(docs_and_tok, tmp_path, capsys):
    d = docs_and_tok
    out = tmp_path / "tokens"
    args = ["tokenizer", "encode", "--quiet", "--set", f"tokenizer={d / 'tok'}", "--set", f"out_dir={out}"]
    code, _, err = run_cli(capsys, *args, "--set", f"inputs=[{tmp_path / 'missing.jsonl'}]")
    assert code == 2 and "missing.jsonl" in err
    assert not (out / "meta.json").exists()
    code, out_text, _ = run_cli(capsys, *args, "--set", f"inputs=[{d / 'in'}]")
    assert code == 0 and "already encoded" not in out_text
    assert json.loads((out / "stats.json").read_text())["docs"] == 60
    assert any(l.startswith("[tokenizer encode] read 60 documents, kept 60") for l in out_text.splitlines())


def test_encoded_folder_is_not_silently_reused_for_other_inputs(docs_and_tok, tmp_path):
    from lmforge.stages.encode import run as run_encode
    from lmforge.tokenizer.encode import EncodeConfig
    d = docs_and_tok
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "another corpus entirely"}\n')
    cfg = dict(tokenizer=str(d / "tok"), out_dir=str(tmp_path / "t"), val_docs_per_domain=0)
    run_encode(EncodeConfig(inputs=[str(d / "in")], **cfg), progress=False)
    assert run_encode(EncodeConfig(inputs=[str(d / "in")], **cfg), progress=False)["skipped"]
    with pytest.raises(ConfigError, match="inputs: .*already holds tokens encoded from"):
        run_encode(EncodeConfig(inputs=[str(other)], **cfg), progress=False)


def test_encode_all_rejected_is_exit_5_and_not_marked_complete(docs_and_tok, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{nope\n" * 3)
    code, _, err = run_cli(capsys, "tokenizer", "encode", "--quiet", "--set", f"inputs=[{bad}]",
                           "--set", f"tokenizer={docs_and_tok / 'tok'}", "--set", f"out_dir={tmp_path / 't'}")
    assert code == 5 and "all 3 documents" in err
    assert not (tmp_path / "t" / "meta.json").exists()


def test_tokenizer_train_missing_input_is_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "tokenizer", "train", "--quiet", "--set", f"inputs=[{tmp_path / 'gone'}]",
                           "--set", f"out_dir={tmp_path / 'tok'}")
    assert code == 2 and "gone" in err


def test_token_meta_tokenizer_path_works_from_another_cwd(docs_and_tok, tmp_path, monkeypatch):
    """A relative tokenizer path given to encode must still be found from another directory."""
    from lmforge.shards import TokenDataset, tokenizer_path
    from lmforge.stages.encode import run as run_encode
    from lmforge.tokenizer.encode import EncodeConfig
    d = docs_and_tok
    monkeypatch.chdir(d)
    run_encode(EncodeConfig(inputs=["in"], tokenizer="tok", out_dir=str(tmp_path / "tokens"),
                            val_docs_per_domain=2), progress=False)
    monkeypatch.chdir(tmp_path)
    os.makedirs("elsewhere")
    monkeypatch.chdir("elsewhere")
    ds = TokenDataset(tmp_path / "tokens", "val")
    found = tokenizer_path(ds.meta, ds.folder)
    assert found is not None and found.is_file() and found.samefile(d / "tok" / "tokenizer.json")
