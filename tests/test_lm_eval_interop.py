"""lm-evaluation-harness on an `lmforge export` agrees with `lmforge eval` on the same MCQ jsonl.

The shipped task (examples/lm_eval, `--include_path`) runs in lm-eval 0.4.13's own Python API
(lm_eval.simple_evaluate, HF backend, float32) on the exported folder; lmforge scores the
checkpoint the export came from (the eval stage, and lmforge.eval.mcq for per-choice numbers).
Asserted: every prompt identical character for character (context and " " + choice), every
choice's log-likelihood within 1e-4 (float32 arithmetic in two different batchings), acc /
acc_norm / acc_bytes and their standard errors equal, at 0 and 3 shots (the task's sampler
reproduces lmforge's few-shot draw). Three tokenizers: ours (byte-level BPE); ours with a
BOS-adding post-processor (as Llama 3's); a SentencePiece-style one (Llama 2: "▁" prepended to
the text, no pre-tokenizer). The last two disagreed before lmforge split context and
continuation tokens the way lm-eval does (mcq.encode_pair).

Skipped where lm-eval is not installed (it is in the dev extra, so CI runs it).
"""
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed: pip install -e .[lmeval] (the dev extra has it)")
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers  # noqa: E402

from lmforge import config  # noqa: E402
from lmforge.config import to_dict  # noqa: E402
from lmforge.eval.mcq import build_requests, continuation_logprobs, few_shot_prefix, format_question, load_items  # noqa: E402
from lmforge.export.hf import export  # noqa: E402
from lmforge.model import Transformer  # noqa: E402
from lmforge.model.load import copy_tokenizer, load_checkpoint  # noqa: E402
from lmforge.stages.eval import EvalConfig, run as run_eval  # noqa: E402
from lmforge.tokenizer.train import load_tokenizer, save_tokenizer  # noqa: E402
from lmforge.train.checkpoint import save as save_checkpoint  # noqa: E402
from test_align_utils import SPECIALS, make_tokenizer, tiny_model_cfg  # noqa: E402

TASKS = Path(__file__).resolve().parents[1] / "examples" / "lm_eval"

# Items in the corpus's shape: ids, subjects under meta (quiz) or top level; awkward text on purpose:
# a question with surrounding whitespace, choices starting with digits, quotes, brackets, accents.
QUIZ = [
    ("African: Angola\nWhat is the capital?", ["Conakry", "Dakar", "N'Djamena", "Luanda"], 3, "africa"),
    ("African: Benin\nWhat is the capital?", ["Nouakchott", "Porto-Novo", "Lilongwe", "Niamey"], 1, "africa"),
    ("African: Sao Tome\nWhat is the capital?", ["São Tomé", "Bissau", "Praia", "Malabo"], 0, "africa"),
    ("  What color is the sky?\n", ["blue", "red", "green (dark)", "\"white\""], 0, "colors"),
    ("What color is the snow?", ["white", "black", "yellow"], 0, "colors"),
    ("What color is the coal?", ["orange", "black", "purple", "red"], 1, "colors"),
    ("In what year did the Berlin wall fall?", ["1989", "1961", "2001", "1848"], 0, "history"),
    ("Who wrote 'Hamlet'?", ["Shakespeare", "Marlowe", "Jonson", "Kyd"], 0, "history"),
    ("def add(a, b):\nWhat does it return?", ["a + b", "a - b", "print(a)", "None"], 0, "code"),
    ("What is 12 * 12?", ["144", "124", "1,212", "24"], 0, "math"),
]
POEMS = [
    ("“床前明月光”的下一句是？", ["疑是地上霜", "低头思故乡", "春眠不觉晓", "处处闻啼鸟"], 0),
    ("“举头望明月”的下一句是？", ["疑是地上霜", "低头思故乡", "白日依山尽", "黄河入海流"], 1),
    ("“春眠不觉晓”的下一句是？", ["处处闻啼鸟", "夜来风雨声", "花落知多少", "床前明月光"], 0),
    ("“白日依山尽”的下一句是？", ["欲穷千里目", "更上一层楼", "黄河入海流", "举头望明月"], 2),
    ("“欲穷千里目”的下一句是？", ["更上一层楼", "低头思故乡", "夜来风雨声", "花落知多少"], 0),
    ("“夜来风雨声”的下一句是？", ["花落知多少", "处处闻啼鸟", "疑是地上霜", "欲穷千里目"], 0),
]


def write_sets(folder: Path) -> dict[str, Path]:
    """mcq_quiz.jsonl / mcq_poems.jsonl where the shipped tasks look for them (runs/tiny/corpus)."""
    folder.mkdir(parents=True, exist_ok=True)
    quiz = [{"id": f"quiz/{s}:{i}", "question": q, "choices": c, "answer": a, "meta": {"file": s, "line": i}}
            for i, (q, c, a, s) in enumerate(QUIZ, 1)]
    poems = [{"id": f"poem:{i}", "question": q, "choices": c, "answer": a, "subject": "next_line"}
             for i, (q, c, a) in enumerate(POEMS, 1)]
    out = {}
    for name, recs in (("quiz", quiz), ("poems", poems)):
        out[name] = folder / f"mcq_{name}.jsonl"
        out[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return out


def bos_tokenizer(folder: Path) -> Path:
    """Ours, with a post-processor that puts <|endoftext|> before every text (as Llama 3's BOS)."""
    make_tokenizer(folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    bos = SPECIALS[0]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(str(folder / "tokenizer.json"))
    return folder


def sentencepiece_tokenizer(folder: Path) -> Path:
    """Llama 2's layout: normalizer prepends "▁" and turns spaces into "▁", no pre-tokenizer
    (merges may span words), "<s>" added before every text. Trained on the items' own text and
    some English, so no character is unknown."""
    texts = [q + " " + " ".join(c) for q, c, *_ in QUIZ + POEMS]
    texts += ["The quick brown fox jumps over the lazy dog. What is the answer?"] * 5
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, min_frequency=1))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    save_tokenizer(tok, folder, special_tokens=specials, bos_token="<s>", eos_token="</s>", pad_token=None,
                   chat_template=None)
    return folder


TOKENIZERS = {"bytelevel": make_tokenizer, "bos": bos_tokenizer, "sentencepiece": sentencepiece_tokenizer}


def make_run(tmp: Path, kind: str) -> tuple[Path, Path]:
    """(a lmforge run folder with a random tiny model, its export); 512 positions, so no 3-shot
    prompt is truncated (lm-eval cuts on the left, lmforge in the middle)."""
    tok_dir = TOKENIZERS[kind](tmp / "tok")
    vocab = json.loads((tok_dir / "lmforge_tokenizer.json").read_text())["vocab_size"]
    cfg = tiny_model_cfg(vocab, seq=512)
    torch.manual_seed(0)
    model = Transformer(cfg)
    run = tmp / "run"
    save_checkpoint(run / "checkpoints", 1, model, None, {"config": {"model": to_dict(cfg)}})
    copy_tokenizer(tok_dir, run)
    return run, export(run, tmp / "export")


def lm_eval_samples(export_dir: Path, workdir: Path, shots: list[int], monkeypatch) -> dict:
    """{shots: {set name: (lm-eval's per-task metrics, its samples by doc_id)}}: the shipped
    group `lmforge_mcq`, run where its data_files (runs/tiny/corpus/...) point."""
    import datasets
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", workdir / "hf_datasets")
    lm = HFLM(pretrained=str(export_dir), dtype="float32", batch_size=8, device="cpu")
    tm = TaskManager(include_path=str(TASKS), include_defaults=False)
    out = {}
    for k in shots:
        res = lm_eval.simple_evaluate(model=lm, tasks=["lmforge_mcq"], num_fewshot=k, task_manager=tm,
                                      log_samples=True, random_seed=1, fewshot_random_seed=7)
        out[k] = {name: (res["results"][f"lmforge_{name}"], sorted(res["samples"][f"lmforge_{name}"],
                                                                  key=lambda s: s["doc_id"]))
                  for name in ("quiz", "poems")}
    return out


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_lm_eval_on_export_agrees_with_lmforge_eval(kind, tmp_path, monkeypatch):
    run, exported = make_run(tmp_path, kind)
    sets = write_sets(tmp_path / "runs" / "tiny" / "corpus")
    shots = [0, 3] if kind == "bytelevel" else [0]      # few-shot adds no new token boundary
    theirs = lm_eval_samples(exported, tmp_path, shots, monkeypatch)

    ours = run_eval(config.from_dict(EvalConfig, {
        "checkpoint": str(run), "out_dir": str(tmp_path / "eval"),
        "mcq": {"sets": [{"name": n, "path": str(p)} for n, p in sets.items()], "shots": shots},
        "contamination": {"auto": False}}), progress=False)
    result = json.loads(Path(ours["eval"]).read_text())["mcq"]
    model, step = load_checkpoint(run)
    tok = load_tokenizer(run / "tokenizer")
    worst = 0.0
    for k in shots:
        for name, path in sets.items():
            metrics, samples = theirs[k][name]
            items = load_items(path).items
            assert [s["doc_id"] for s in samples] == list(range(len(items)))
            lls = continuation_logprobs(model, build_requests(items, tok, model.cfg.max_seq_len, k, items, 0))
            j = 0
            for item, s in zip(items, samples):
                context = few_shot_prefix(item, items, k, 0) + format_question(item)
                assert [tuple(a) for a in s["arguments"]] == [(context, " " + c) for c in item.choices]
                for (ll, _greedy), mine in zip((r[0] for r in s["resps"]), lls[j:j + len(item.choices)]):
                    worst = max(worst, abs(float(ll) - mine))
                j += len(item.choices)
                for m in ("acc", "acc_norm", "acc_bytes"):
                    assert s[m] == _item_metric(item, lls[j - len(item.choices):j], m), (kind, k, name, item.id, m)
            mine = result[name]["results"][str(k)]
            for m in ("acc", "acc_norm", "acc_bytes"):
                assert metrics[f"{m},none"] == mine[m], (kind, k, name, m)
                assert math.isclose(metrics[f"{m}_stderr,none"], mine[f"{m}_stderr"], rel_tol=1e-9, abs_tol=1e-12)
    assert worst < 1e-4, (kind, worst)
    print(f"{kind}: largest |lm-eval - lmforge| log-likelihood {worst:.2g}", file=sys.stderr)
    if kind == "bytelevel":
        check_compare_script(theirs[3]["quiz"][1], sets["quiz"], exported, tmp_path)


def check_compare_script(samples: list[dict], items: Path, exported: Path, tmp: Path) -> None:
    """scripts/compare_lm_eval.py (how the README's figures were measured) on the same samples."""
    import contextlib
    import importlib.util
    import io
    spec = importlib.util.spec_from_file_location("compare_lm_eval", TASKS.parents[1] / "scripts" / "compare_lm_eval.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    f = tmp / "samples_lmforge_quiz.jsonl"
    f.write_text("".join(json.dumps(r, default=str) + "\n" for r in samples), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert script.main([str(f), "--items", str(items), "--checkpoint", str(exported), "--shots", "3"]) == 0
    text = out.getvalue()
    n = sum(len(c) for _, c, *_ in QUIZ)
    assert f"prompts identical (context + continuation text): {n} / {n}" in text, text
    for m in ("acc", "acc_norm", "acc_bytes"):
        assert re.search(rf"^\| {m} \| ([\d.]+) \| \1 \| 0 \|$", text, re.M), text


def _item_metric(item, lls, metric):
    from lmforge.eval.mcq import item_correct
    return item_correct(item, lls)[metric]


def test_shipped_tasks_are_indexed_and_read_the_tiny_recipes_corpus():
    tm = TaskManager(include_path=str(TASKS), include_defaults=False)
    assert {"lmforge_quiz", "lmforge_poems", "lmforge_mcq"} <= set(tm.all_tasks)
    from lm_eval.tasks._yaml_loader import load_yaml
    for name in ("quiz", "poems"):
        cfg = load_yaml(TASKS / f"lmforge_{name}.yaml")
        assert cfg["dataset_kwargs"]["data_files"]["test"] == f"runs/tiny/corpus/mcq_{name}.jsonl"
        assert cfg["doc_to_text"] == "{{question.strip()}}\nAnswer:" and cfg["target_delimiter"] == " "
