"""LongBench-format JSONL (Bai et al. 2023; Index-1.9B-32K reports LongBench): reader, prompts,
middle truncation and the per-task metrics, as LongBench's own scorer defines them.

A record (one per line; LongBench's data/{dataset}.jsonl, or {dataset}_e.jsonl for LongBench-E):
    {"input": str, "context": str, "answers": [str, ...], "length": int, "dataset": str,
     "language": "en"|"zh", "all_classes": [str] | null, "_id": str}
The dataset name is the record's "dataset", else the file name without .jsonl and "_e".

Prediction, as LongBench's pred.py does it: the dataset's prompt template (LongBench's
config/dataset2prompt.json, given with `prompt_file`; else a plain "context, question,
answer" template) formatted with the record; if the prompt's tokens exceed `max_length`,
the first and last max_length/2 tokens are kept and decoded back (middle truncation: the
instruction and the question survive); chat models get the chat template except on the
few-shot and code tasks (trec, triviaqa, samsum, lsht, lcc, repobench-p); greedy decoding
for the dataset's answer length (config/dataset2maxlen.json via `maxlen_file`, else 64).

Scoring, as LongBench's eval.py/metrics.py do it: per prediction the best score over the
answers; on trec/triviaqa/samsum/lsht only the prediction's first non-empty line counts;
a dataset's score is round(100 * mean, 2); LongBench-E also splits it by length (0-4k,
4-8k, 8k+ words). Metrics: qa F1 over normalised words (lower case, punctuation and
English articles removed; Chinese: jieba words, Chinese and ASCII punctuation removed),
ROUGE-L F (the `rouge` package LongBench uses; Chinese after jieba segmentation),
classification (share of the class names found in the prediction, LongBench's quirks
kept: a matched name that is a substring of the answer is dropped while iterating, and
the "no match" fallback never triggers), retrieval and count (share of the numbers in the
prediction that equal the answer's paragraph id / count), code similarity (fuzzywuzzy's
ratio, i.e. difflib's SequenceMatcher without python-Levenshtein, of the first code line).
"""
from __future__ import annotations

import difflib
import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

METRIC_OF = {
    "narrativeqa": "qa_f1", "qasper": "qa_f1", "multifieldqa_en": "qa_f1", "multifieldqa_zh": "qa_f1_zh",
    "hotpotqa": "qa_f1", "2wikimqa": "qa_f1", "musique": "qa_f1", "dureader": "rouge_zh", "gov_report": "rouge",
    "qmsum": "rouge", "multi_news": "rouge", "vcsum": "rouge_zh", "trec": "classification", "triviaqa": "qa_f1",
    "samsum": "rouge", "lsht": "classification", "passage_retrieval_en": "retrieval", "passage_count": "count",
    "passage_retrieval_zh": "retrieval_zh", "lcc": "code_sim", "repobench-p": "code_sim",
}
FIRST_LINE = ("trec", "triviaqa", "samsum", "lsht")                  # only the first line is scored
NO_CHAT = ("trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p")   # raw prompt, no chat template
DEFAULT_PROMPT = "{context}\n\nAnswer the question based on the text above.\n\nQuestion: {input}\nAnswer:"
DEFAULT_MAX_GEN = 64
ZH_PUNCT = ("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟"
            "〰〾〿–—‘’‛“”„‟…‧﹏.")


@dataclass
class Item:
    dataset: str
    input: str
    context: str
    answers: list[str]
    all_classes: list[str] | None = None
    length: int = 0
    language: str = "en"
    id: str = ""


@dataclass
class Loaded:
    items: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)     # "file:line: reason"


def dataset_of(path: Path) -> str:
    return path.name.removesuffix(".jsonl").removesuffix("_e")


def parse(rec, default_dataset: str) -> Item:
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    for key in ("input", "context"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"'{key}' must be a string")
    answers = rec.get("answers")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError("'answers' must be a non-empty list of strings")
    dataset = rec.get("dataset") or default_dataset
    if dataset not in METRIC_OF:
        raise ValueError(f"unknown LongBench dataset {dataset!r} (known: {', '.join(METRIC_OF)})")
    classes = rec.get("all_classes")
    if METRIC_OF[dataset] == "classification" and not (isinstance(classes, list) and classes):
        raise ValueError(f"{dataset}: 'all_classes' must list the class names")
    return Item(dataset, rec["input"], rec["context"], list(answers), classes, int(rec.get("length") or 0),
                str(rec.get("language") or "en"), str(rec.get("_id", "")))


def load(paths: list[str]) -> Loaded:
    """Items of LongBench-format files; malformed lines are listed in `errors`, never dropped silently."""
    out = Loaded()
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such LongBench file")
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.items.append(parse(json.loads(line), dataset_of(p)))
                except ValueError as e:
                    out.errors.append(f"{p}:{n}: {e}")
    return out


# ------------------------------------------------------------------ metrics (LongBench's definitions)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    punct = set(string.punctuation + ZH_PUNCT)
    return "".join("".join(ch for ch in s.lower() if ch not in punct).split())


def f1_tokens(pred: list[str], gold: list[str]) -> float:
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def _jieba(text: str) -> list[str]:
    import jieba
    jieba.setLogLevel(60)     # no "Building prefix dict" chatter
    return list(jieba.cut(text, cut_all=False))


def qa_f1(pred: str, gold: str, **_) -> float:
    return f1_tokens(normalize_answer(pred).split(), normalize_answer(gold).split())


def qa_f1_zh(pred: str, gold: str, **_) -> float:
    p = [t for t in (normalize_zh_answer(x) for x in _jieba(pred)) if t]
    g = [t for t in (normalize_zh_answer(x) for x in _jieba(gold)) if t]
    return f1_tokens(p, g)


def rouge(pred: str, gold: str, **_) -> float:
    from rouge import Rouge
    try:
        return float(Rouge(metrics=["rouge-l"]).get_scores([pred], [gold], avg=True)["rouge-l"]["f"])
    except Exception:   # LongBench scores any failure (e.g. an empty prediction) as 0   # noqa: BLE001
        return 0.0


def rouge_zh(pred: str, gold: str, **_) -> float:
    return rouge(" ".join(_jieba(pred)), " ".join(_jieba(gold)))


def classification(pred: str, gold: str, all_classes=None, **_) -> float:
    found = [c for c in all_classes if c in pred]
    for term in found:                       # mutated while iterating, as LongBench does
        if term in gold and term != gold:
            found.remove(term)
    return 1.0 / len(found) if gold in found else 0.0


def _id_share(pred: str, wanted: str) -> float:
    numbers = re.findall(r"\d+", pred)
    return sum(n == wanted for n in numbers) / len(numbers) if numbers else 0.0


def retrieval(pred: str, gold: str, **_) -> float:
    return _id_share(pred, re.findall(r"Paragraph (\d+)", gold)[0])


def retrieval_zh(pred: str, gold: str, **_) -> float:
    return _id_share(pred, re.findall(r"段落(\d+)", gold)[0])


def count(pred: str, gold: str, **_) -> float:
    return _id_share(pred, str(gold))


def fuzz_ratio(a: str, b: str) -> int:
    """fuzzywuzzy.fuzz.ratio without python-Levenshtein: round(100 * SequenceMatcher ratio)."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, a, b).ratio()))


def code_sim(pred: str, gold: str, **_) -> float:
    first = ""
    for line in pred.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            first = line
            break
    return fuzz_ratio(first, gold) / 100


METRICS = {"qa_f1": qa_f1, "qa_f1_zh": qa_f1_zh, "rouge": rouge, "rouge_zh": rouge_zh,
           "classification": classification, "retrieval": retrieval, "retrieval_zh": retrieval_zh,
           "count": count, "code_sim": code_sim}


def score_one(dataset: str, pred: str, answers: list[str], all_classes=None) -> float:
    if dataset in FIRST_LINE:
        pred = pred.lstrip("\n").split("\n")[0]
    fn = METRICS[METRIC_OF[dataset]]
    return max([0.0] + [fn(pred, a, all_classes=all_classes) for a in answers])


def score_dataset(dataset: str, preds: list[str], items: list[Item]) -> dict:
    """{"metric", "n", "score": round(100 * mean, 2), "by_length": LongBench-E buckets}."""
    scores = [score_one(dataset, p, it.answers, it.all_classes) for p, it in zip(preds, items)]
    buckets: dict[str, list[float]] = {"0-4k": [], "4-8k": [], "8k+": []}
    for s, it in zip(scores, items):
        buckets["0-4k" if it.length < 4000 else "4-8k" if it.length < 8000 else "8k+"].append(s)
    return {"metric": METRIC_OF[dataset], "n": len(scores),
            "score": round(100 * sum(scores) / len(scores), 2) if scores else None,
            "by_length": {k: round(100 * sum(v) / len(v), 2) for k, v in buckets.items() if v}}


# ------------------------------------------------------------------ prompts


def read_templates(prompt_file: str | None, maxlen_file: str | None) -> tuple[dict, dict]:
    """LongBench's dataset2prompt.json and dataset2maxlen.json, when given."""
    prompts = json.loads(Path(prompt_file).read_text(encoding="utf-8")) if prompt_file else {}
    maxlen = json.loads(Path(maxlen_file).read_text(encoding="utf-8")) if maxlen_file else {}
    return prompts, maxlen


def prompt_ids(tok, item: Item, template: str, max_length: int, chat: bool) -> list[int]:
    """The model's input ids: template, middle truncation to max_length tokens (halves decoded
    back to text, as LongBench does), then the ChatML wrapper for chat models."""
    from lmforge.align.chat_template import render

    text = template.format(context=item.context, input=item.input)
    ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) > max_length:
        half = max_length // 2
        text = tok.decode(ids[:half], skip_special_tokens=True) + tok.decode(ids[-half:], skip_special_tokens=True)
    if chat and item.dataset not in NO_CHAT:
        text = render([{"role": "user", "content": text}], add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False).ids
