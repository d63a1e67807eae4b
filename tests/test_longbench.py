"""LongBench-format reader and LongBench's metrics on fixtures written here (issue 17 item 4),
plus middle truncation of an over-long prompt as LongBench's pred.py does it."""
from pathlib import Path

import pytest

from lmforge.eval import longbench as lb

FIX = Path(__file__).parent / "fixtures" / "longbench"


def test_reader_counts_malformed_lines_and_names_datasets():
    loaded = lb.load(sorted(str(p) for p in FIX.glob("*.jsonl")))
    assert [e.split(": ", 1)[1] for e in loaded.errors] == ["'context' must be a string"]
    assert "hotpotqa.jsonl:3" in loaded.errors[0]
    by = {}
    for it in loaded.items:
        by.setdefault(it.dataset, []).append(it)
    assert {k: len(v) for k, v in by.items()} == {"hotpotqa": 2, "trec": 2, "multifieldqa_zh": 1,
                                                  "passage_retrieval_en": 1}   # trec from the file name "trec_e"
    with pytest.raises(FileNotFoundError):
        lb.load([str(FIX / "nope.jsonl")])


def test_qa_f1_with_longbench_normalisation():
    # lower case, punctuation and articles dropped: "the Eiffel Tower!" -> "eiffel tower"
    assert lb.normalize_answer("The  Eiffel, Tower!") == "eiffel tower"
    assert lb.qa_f1("It is the Eiffel Tower.", "Eiffel Tower") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert lb.qa_f1("Paris", "paris") == 1.0 and lb.qa_f1("London", "Paris") == 0.0
    assert lb.qa_f1("", "Paris") == 0.0
    # Chinese: jieba words, punctuation removed
    assert lb.qa_f1_zh("在中国。", "中国") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert lb.normalize_zh_answer("「长城」，") == "长城" and lb.normalize_zh_answer("《长城》") == "《长城"   # as LongBench: no 《


def test_rouge_l_is_longest_common_subsequence_f():
    # LCS of 5 words out of 6 and 6: F = 5/6 (the rouge package LongBench uses, eps-smoothed)
    assert lb.rouge("a cat sat on my mat", "a cat lay on my mat") == pytest.approx(5 / 6, abs=1e-6)
    # its summary-level union LCS counts a repeated word once ("the" twice): 4/5, not 5/6
    assert lb.rouge("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(0.8, abs=1e-6)
    assert lb.rouge("", "anything") == 0.0            # the rouge package raises; LongBench scores 0
    assert lb.rouge_zh("长城位于中国北方", "长城在中国北方") > 0.5


def test_classification_retrieval_count_code():
    classes = ["City", "Country", "Individual", "Other location"]
    assert lb.classification("City", "City", all_classes=classes) == 1.0
    assert lb.classification("City or Country", "City", all_classes=classes) == 0.5
    assert lb.classification("a location", "Other location", all_classes=classes) == 0.0
    assert lb.retrieval("Paragraph 2", "Paragraph 2") == 1.0
    assert lb.retrieval("2 or 3", "Paragraph 2") == 0.5 and lb.retrieval("none", "Paragraph 2") == 0.0
    assert lb.retrieval_zh("段落3", "段落3") == 1.0
    assert lb.count("There are 4 paragraphs, 4 unique", "4") == 1.0 and lb.count("3 and 4", "4") == 0.5
    assert lb.code_sim("# comment\nreturn a + b\n", "return a + b") == 1.0
    assert lb.fuzz_ratio("abcd", "abce") == 75


def test_scoring_per_dataset_first_line_and_length_buckets():
    items = lb.load([str(FIX / "trec_e.jsonl")]).items
    # trec scores only the first line: "City" counts, the later "Country" does not
    res = lb.score_dataset("trec", ["\nCity\nCountry", "Individual"], items)
    assert res == {"metric": "classification", "n": 2, "score": 50.0, "by_length": {"4-8k": 100.0, "8k+": 0.0}}
    qa = lb.load([str(FIX / "hotpotqa.jsonl")]).items
    assert lb.score_dataset("hotpotqa", ["Paris", "Eiffel"], qa)["score"] == 100.0     # best over the answers
    assert lb.score_dataset("hotpotqa", ["paris, france", "nobody"], qa)["score"] == pytest.approx(
        round(100 * (2 * 0.5 / 1.5) / 2, 2))


def test_prompt_middle_truncation_keeps_the_question(tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from test_eval_helpers import make_tokenizer
    from lmforge.tokenizer.train import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path / "tok"))
    it = lb.Item("hotpotqa", "Which city hosts the tower?", "The quick brown fox. " * 200, ["Paris"])
    ids = lb.prompt_ids(tok, it, lb.DEFAULT_PROMPT, 100, chat=False)
    assert 90 <= len(ids) <= 104            # halves decoded back to text and re-encoded, as LongBench does
    text = tok.decode(ids)
    assert text.startswith("The quick brown fox.") and text.endswith("Question: Which city hosts the tower?\nAnswer:")
    chat = tok.decode(lb.prompt_ids(tok, it, lb.DEFAULT_PROMPT, 100, chat=True), skip_special_tokens=False)
    assert chat.startswith("<|im_start|>user\n") and chat.endswith("<|im_start|>assistant\n")
    raw = lb.Item("trec", "q", "c", ["City"], ["City"])
    assert "<|im_start|>" not in tok.decode(lb.prompt_ids(tok, raw, "{context} {input}", 100, chat=True),
                                            skip_special_tokens=False)
