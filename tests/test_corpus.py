"""The embedded default corpus: build from the committed sample, determinism, record validity,
missing-source messages, the quiz parser, distractors, DPO pairs, Chinese conversion.

Tests that need the installed sources (scripts/setup_sources.sh) skip cleanly without them.
"""
import argparse
import json
import sysconfig
from pathlib import Path

import pytest

from lmforge.corpus import SOURCES, CorpusError, build_corpus, validate, write_sample
from lmforge.corpus import zh
from lmforge.corpus.build import SAMPLE_DIR, load_sample
from lmforge.corpus.common import read_jsonl, write_jsonl
from lmforge.corpus.mcq import check_item, make_item
from lmforge.align.pairs import make_pairs
from lmforge.corpus.quiz import forms, join_lines, split_top

EXPECTED = ["docs/pydocs.jsonl.zst", "docs/poetry.jsonl.zst", "docs/stdlib.jsonl.zst",
            "docs/chatterbot.jsonl.zst", "quality_positives.jsonl", "sft.jsonl", "dpo.jsonl",
            "mcq_quiz.jsonl", "mcq_poems.jsonl", "sources.json", "LICENSES.md", "rejects.jsonl"]
TRADITIONAL = "國學詩說風來時書"  # each has a distinct simplified form


def _quiet(msgs):
    return msgs.append


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "a"
    msgs = []
    summary = build_corpus(out, from_sample=True, log=msgs.append)
    return out, summary, msgs


def _all_files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sample_is_committed_and_small():
    files = list(SAMPLE_DIR.glob("*.jsonl.zst"))
    assert {f.name.split(".")[0] for f in files} == set(SOURCES)
    assert sum(f.stat().st_size for f in files) <= 1.5 * 2**20
    manifest = json.loads((SAMPLE_DIR / "manifest.json").read_text())
    for name in SOURCES:
        assert manifest[name]["license"] == SOURCES[name].license
        assert manifest[name]["records"] == len(load_sample(name)[0])


def test_build_from_sample_gives_all_files_with_valid_records(built):
    out, summary, msgs = built
    for name in EXPECTED:
        assert (out / name).is_file(), name
    assert validate(out) == []
    assert any("committed sample" in m for m in msgs)
    for name, entry in summary["sources"].items():
        assert entry["status"] == "sample"
        assert entry["records_read"] > 0
    # every output the summary counts is in its file
    for name, n in summary["files"].items():
        assert sum(1 for _ in read_jsonl(out / name)) == n
    domains = {}
    for f in sorted((out / "docs").glob("*.jsonl.zst")):
        for d in read_jsonl(f):
            domains.setdefault(d["meta"]["domain"], set()).add(d["meta"].get("format"))
    assert set(domains) == {"prose", "zh", "code"}
    assert {"html", "rst"} <= domains["prose"]  # raw HTML pages for the extraction step
    assert {"python", "json", "yaml"} <= domains["code"]  # keep-some-JSON/YAML


def test_data_pipeline_reader_reads_the_documents(built):
    readers = pytest.importorskip("lmforge.io.readers")
    from lmforge.io.documents import ErrorSink

    out, summary, _ = built
    errors = ErrorSink()
    docs = list(readers.iter_documents([out / "docs"], errors))
    assert errors.total == 0
    n_docs = sum(n for name, n in summary["files"].items() if name.startswith("docs/"))
    assert len(docs) == n_docs
    assert all(d["meta"]["license"] for d in docs)


def test_build_is_deterministic(built, tmp_path):
    out, _, _ = built
    build_corpus(tmp_path / "b", from_sample=True, log=lambda m: None)
    a, b = _all_files(out), _all_files(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


def test_mcq_items_have_four_distinct_choices_and_the_answer(built):
    out, _, _ = built
    for name in ("mcq_quiz.jsonl", "mcq_poems.jsonl", "mcq_quiz_reference.jsonl", "mcq_poems_reference.jsonl"):
        items = list(read_jsonl(out / name))
        assert len(items) > (100 if "reference" not in name else 20)
        for it in items:
            assert len(it["choices"]) == 4
            assert len({c.strip().lower() for c in it["choices"]}) == 4
            assert 0 <= it["answer"] < 4
            assert check_item(it) is None
    # a known quiz line: Algeria's capital is Algiers
    quiz = list(read_jsonl(out / "mcq_quiz.jsonl")) + list(read_jsonl(out / "mcq_quiz_reference.jsonl"))
    q = next(i for i in quiz if i["id"] == "quiz/africa:1:1")
    assert "Algeria" in q["question"] and q["choices"][q["answer"]] == "Algiers"
    kinds = {i["meta"]["kind"] for i in read_jsonl(out / "mcq_poems.jsonl")}
    assert kinds == {"author", "next_line"}


def test_reference_items_come_from_records_the_training_docs_never_hold(built):
    """Skywork's contamination check needs a look-alike set the model never saw: held-out poems
    are in mcq_poems_reference.jsonl and in no document; test and reference items never share a poem."""
    out, _, _ = built
    doc_ids = {d["id"] for d in read_jsonl(out / "docs" / "poetry.jsonl.zst")}
    ref = list(read_jsonl(out / "mcq_poems_reference.jsonl"))
    test = list(read_jsonl(out / "mcq_poems.jsonl"))
    assert ref and all(i["meta"]["poem"] not in doc_ids for i in ref)
    assert all(i["meta"]["poem"] in doc_ids for i in test)
    assert not {i["meta"]["poem"] for i in ref} & {i["meta"]["poem"] for i in test}
    quiz_lines = lambda f: {(i["meta"]["file"], i["meta"]["line"]) for i in read_jsonl(out / f)}  # noqa: E731
    assert not quiz_lines("mcq_quiz.jsonl") & quiz_lines("mcq_quiz_reference.jsonl")
    share = len(ref) / (len(ref) + len(test))
    assert 0.02 < share < 0.10       # ~5% held out


def test_poem_next_line_answer_follows_the_question(built):
    out, _, _ = built
    docs = {d["id"]: d["text"] for d in read_jsonl(out / "docs/poetry.jsonl.zst")}
    items = [i for i in read_jsonl(out / "mcq_poems.jsonl") if i["meta"]["kind"] == "next_line"]
    for it in items[:200]:
        prompt = it["question"].split("”")[0].lstrip("“")
        text = docs[it["meta"]["poem"]].split("\n\n", 1)[-1]  # the poem, not its title
        right = it["choices"][it["answer"]]
        assert prompt in text and right in text
        starts = [k + len(prompt) for k in range(len(text)) if text.startswith(prompt, k)]
        # the right answer follows the prompt after punctuation, quotes or line breaks only
        assert any(text[k:].lstrip("，。；？！、：“”‘’「」『』《》（）\n ").startswith(right) for k in starts)
        for k, c in enumerate(it["choices"]):
            assert len(c) == len(right)  # distractors of the same length
            if k != it["answer"]:
                assert c not in text


def test_dpo_pairs_and_sft_dialogs(built):
    out, _, _ = built
    pairs = list(read_jsonl(out / "dpo.jsonl"))
    assert pairs
    kinds = set()
    for p in pairs:
        assert p["chosen"] != p["rejected"] and p["rejected"].strip()
        assert p["prompt"] and p["prompt"][-1]["role"] == "user"
        assert p["score_chosen"] > p["score_rejected"]
        assert p["meta"]["synthetic"] is True
        kinds.add(p["meta"]["rejected_kind"])
    assert kinds == {"other", "truncated", "shuffled"}
    sft = list(read_jsonl(out / "sft.jsonl"))
    langs = {s["meta"]["lang"] for s in sft}
    assert langs == {"en", "zh"}
    for s in sft:
        roles = [m["role"] for m in s["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:]))  # alternating


def test_chatterbot_yaml_scalars_stay_strings(tmp_path):
    # "yes"/"no"/"1.0" must not turn into booleans or numbers (BaseLoader)
    text = "categories:\n- test\nconversations:\n- - yes\n  - no\n- - 1.0\n  - on\n"
    write_jsonl(tmp_path / "sample" / "chatterbot.jsonl.zst", [{"lang": "en", "file": "english/t.yml", "text": text}])
    (tmp_path / "sample" / "manifest.json").write_text(json.dumps({"chatterbot": {"version": "x"}}))
    build_corpus(tmp_path / "o", sources="chatterbot", from_sample=True, sample_dir=tmp_path / "sample",
                 log=lambda m: None)
    sft = list(read_jsonl(tmp_path / "o" / "sft.jsonl"))
    assert [m["content"] for s in sft for m in s["messages"]] == ["yes", "no", "1.0", "on"]


def test_chinese_is_simplified(built):
    if zh.converter() is None:
        pytest.skip("opencc is not installed (pip install opencc==1.4.2)")
    assert zh.to_simplified("漢字國語") == "汉字国语"
    raw = "".join(json.dumps(r, ensure_ascii=False) for r in load_sample("poetry")[0])
    present = [c for c in TRADITIONAL if c in raw]
    assert present, "the sample should hold traditional characters"
    out, summary, _ = built
    text = "".join(d["text"] for d in read_jsonl(out / "docs/poetry.jsonl.zst"))
    text += "".join(json.dumps(i, ensure_ascii=False) for i in read_jsonl(out / "mcq_poems.jsonl"))
    for c in present:
        assert c not in text, c
        assert zh.to_simplified(c) in text
    assert summary["zh_script"].startswith("simplified")


def test_without_opencc_text_is_kept_and_the_build_says_so(tmp_path, monkeypatch):
    from lmforge.corpus import build as build_mod

    monkeypatch.setattr(build_mod.zh, "converter", lambda: None)
    msgs = []
    summary = build_corpus(tmp_path / "o", sources="poetry", from_sample=True, max_mb=0.2, log=msgs.append)
    assert any("opencc is not installed" in m and "pip install opencc" in m for m in msgs)
    assert summary["zh_script"] == "as in the source"
    raw = {r["id"]: r for r in load_sample("poetry")[0]}
    for d in read_jsonl(tmp_path / "o" / "docs/poetry.jsonl.zst"):
        assert d["text"].endswith("\n".join(x for x in raw[d["id"].split("/", 1)[1]]["lines"] if x.strip()))


def test_licenses_recorded(built):
    out, summary, _ = built
    md = (out / "LICENSES.md").read_text()
    for name, src in SOURCES.items():
        assert summary["sources"][name]["license"] == src.license
        assert summary["sources"][name]["version"] not in ("", "unknown")
        assert f"| {name} |" in md and src.license in md
    for f in sorted((out / "docs").glob("*.jsonl.zst")) + [out / "sft.jsonl", out / "mcq_quiz.jsonl"]:
        licenses = {r["meta"]["license"] for r in read_jsonl(f)}
        assert licenses and licenses <= {s.license for s in SOURCES.values()}


def test_missing_source_names_the_setup_command(tmp_path):
    msgs = []
    stdlib = sysconfig.get_paths()["stdlib"]
    summary = build_corpus(tmp_path / "o", sources="quiz,stdlib", fallback=False, max_mb=0.05,
                           paths={"quiz": tmp_path / "nowhere", "stdlib": stdlib}, log=msgs.append)
    line = next(m for m in msgs if "'quiz'" in m)
    assert "not installed" in line and "scripts/setup_sources.sh" in line
    assert "apt-get install bsdgames" in line and "LMFORGE_QUIZ_DIR" in line
    assert summary["sources"]["quiz"]["status"] == "missing"
    assert summary["sources"]["stdlib"]["status"] == "installed"
    assert not (tmp_path / "o" / "mcq_quiz.jsonl").exists()
    # with the fallback the sample stands in, and the message says so
    msgs.clear()
    summary = build_corpus(tmp_path / "p", sources="quiz", paths={"quiz": tmp_path / "nowhere"},
                           log=msgs.append)
    assert any("using the committed sample instead" in m for m in msgs)
    assert summary["sources"]["quiz"]["status"] == "sample"
    assert (tmp_path / "p" / "mcq_quiz.jsonl").exists()


def test_nothing_available_fails_clearly(tmp_path):
    paths = {name: tmp_path / "nowhere" for name in SOURCES}
    with pytest.raises(CorpusError, match="no source available"):
        build_corpus(tmp_path / "o", fallback=False, paths=paths, log=lambda m: None)
    with pytest.raises(CorpusError, match="unknown source 'bogus'"):
        build_corpus(tmp_path / "o", sources="quiz,bogus", log=lambda m: None)


def test_budget_caps_each_source(tmp_path):
    summary = build_corpus(tmp_path / "o", from_sample=True, sources="poetry,stdlib", max_mb=0.05,
                           log=lambda m: None)
    for name in ("poetry", "stdlib"):
        e = summary["sources"][name]
        assert e["records_read"] == 1 or e["bytes_read"] <= 0.05 * 2**20
    full = load_sample("poetry")[0]
    assert summary["sources"]["poetry"]["records_read"] < len(full)


def _fake_quiz(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "index").write_text(f"{folder}/caps:country:cap{{ital}}\n{folder}/seq:seq{{uence}}:next\n")
    (folder / "caps").write_text("France:Paris\nItaly:Rome\nSpain:Madrid\nJapan:Tokyo\n"
                                 "{The }Netherlands|Holland:Amsterdam|{The }Hague\nPeru:Lima:extra\n")
    (folder / "seq").write_text("1,2,3:4\n2,4,6:8\n")  # too few distinct answers for 4 choices
    return folder


def test_write_sample_then_build_from_it(tmp_path):
    quiz_dir = _fake_quiz(tmp_path / "quiz")
    msgs = []
    manifest = write_sample(tmp_path / "sample", sources="quiz", paths={"quiz": quiz_dir}, log=msgs.append)
    assert manifest["quiz"]["records"] == 2
    summary = build_corpus(tmp_path / "o", sources="quiz", from_sample=True, sample_dir=tmp_path / "sample",
                           log=msgs.append)
    items = list(read_jsonl(tmp_path / "o" / "mcq_quiz.jsonl"))
    ref = tmp_path / "o" / "mcq_quiz_reference.jsonl"
    held = list(read_jsonl(ref)) if ref.exists() else []
    counts = summary["sources"]["quiz"]["counts"]
    assert counts["mcq"] == len(items) and counts["mcq_reference"] == len(held) and len(items) + len(held) == 5
    items += held
    nl = next(i for i in items if "Netherlands" in i["question"])
    assert nl["question"].startswith("country: The Netherlands")
    assert nl["choices"][nl["answer"]] == "Amsterdam"
    assert "The Hague" not in nl["choices"]
    rejects = list(read_jsonl(tmp_path / "o" / "rejects.jsonl"))
    assert rejects == [{"source": "quiz", "where": "caps:6", "reason": "3 fields, index says 2"}]


def test_quiz_format_parser():
    assert forms("{G{eorge} }Washington") == ["George Washington"]
    assert forms("Alabama|Ala|AL") == ["Alabama", "Ala", "AL"]
    assert forms("forget{-| }me{-| }not") == ["forget-me-not"]
    assert forms("C[^o|o^|o]te d'Ivoire") == ["Cote d'Ivoire"]  # the unaccented spelling
    assert forms("M[iddle{-}Earth|E]") == ["Middle-Earth"]
    assert forms("{Lee Harvey }Oswald|{the }FBI") == ["Lee Harvey Oswald", "the FBI"]
    assert split_top("a{b:c}:d\\:e:f", ":") == ["a{b:c}", "d\\:e", "f"]
    assert forms("d\\:e") == ["d:e"]
    assert join_lines("a:\\\nb\nc:d\n\n") == [(1, "a:b"), (3, "c:d")]


def test_make_item_excludes_every_accepted_answer():
    pool = sorted(["Paris", "paris ", "Rome", "Lima", "The Hague", "Madrid", "Tokyo"])
    for k in range(30):
        it = make_item("x", "q", "Amsterdam", pool, f"seed{k}", {}, accepted=["Amsterdam", "The Hague"])
        assert check_item(it) is None
        assert it["choices"][it["answer"]] == "Amsterdam"
        assert "The Hague" not in it["choices"]
    assert make_item("x", "q", "a", ["a", "b", "c"], "s", {}) is None  # two distractors only
    # the same seed gives the same item
    assert make_item("x", "q", "A", pool, "s", {}) == make_item("x", "q", "A", pool, "s", {})


def test_dpo_pairs_from_a_small_conversation_set():
    convs = [{"id": f"c{i}", "meta": {"lang": "en"},
              "messages": [{"role": "user", "content": f"question {i}"},
                           {"role": "assistant", "content": f"a long enough answer number {i} here"}]}
             for i in range(20)]
    pairs = make_pairs(convs, "s")
    assert len(pairs) == 20 and pairs == make_pairs(convs, "s")
    for p in pairs:
        assert p["chosen"] != p["rejected"]
        if p["meta"]["rejected_kind"] == "other":
            assert p["rejected"] != p["chosen"] and p["rejected"].startswith("a long enough answer")
        if p["meta"]["rejected_kind"] == "truncated":
            assert p["chosen"].startswith(p["rejected"])
        if p["meta"]["rejected_kind"] == "shuffled":
            assert sorted(p["rejected"].split()) == sorted(p["chosen"].split())


def test_cli_register_and_build(tmp_path, capsys):
    from lmforge.cli.corpus import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["corpus", "build", "--from-sample", "--sources", "quiz,chatterbot",
                              "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert "mcq_quiz.jsonl" in capsys.readouterr().out
    args = parser.parse_args(["corpus", "build", "--sources", "nope", "--out", str(tmp_path / "o")])
    assert args.func(args) == 1
    assert "unknown source 'nope'" in capsys.readouterr().err


# --- the real installed sources (skip where scripts/setup_sources.sh has not run) ---------

@pytest.mark.parametrize("name", list(SOURCES))
def test_installed_source_reads_and_builds(name, tmp_path):
    src = SOURCES[name]
    root = src.locate(None)
    if root is None:
        pytest.skip(f"{name} not installed ({src.setup})")
    assert src.version(root) != "unknown"
    summary = build_corpus(tmp_path / "o", sources=name, max_mb=0.1, fallback=False, log=lambda m: None)
    entry = summary["sources"][name]
    assert entry["status"] == "installed" and entry["records_read"] > 0
    assert validate(tmp_path / "o") == []
