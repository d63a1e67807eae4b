"""Compare an lm-evaluation-harness run of examples/lm_eval with `lmforge eval`'s scoring, item by item.

First run lm-eval on an export with the shipped task and --log_samples, e.g.

    lm_eval --model hf --model_args pretrained=runs/tiny/export,dtype=float32 \\
        --tasks lmforge_quiz --include_path examples/lm_eval --log_samples --output_path runs/lm_eval

then, with lmforge's Python,

    python scripts/compare_lm_eval.py runs/lm_eval/*/samples_lmforge_quiz_*.jsonl \\
        --items runs/tiny/corpus/mcq_quiz.jsonl --checkpoint runs/tiny/export [--shots 0]

It scores the same items with lmforge.eval.mcq (the code `lmforge eval` runs; --checkpoint is a
lmforge checkpoint or the export itself) and prints: how many prompts (context and continuation
text) are identical, the largest and mean |difference| of the per-choice log-likelihoods, and
acc / acc_norm / acc_bytes from both sides with the number of items on which they differ.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_samples(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def compare(samples: list[dict], items, pool, logprobs: list[float], shots: int, seed: int) -> dict:
    """The agreement figures; `logprobs` are lmforge's, item-major over `items`."""
    from lmforge.eval.mcq import METRICS, few_shot_prefix, format_question, item_correct

    k, same_prompt, n_req, diffs, differ = 0, 0, 0, [], {m: 0 for m in METRICS}
    ours = {m: 0.0 for m in METRICS}
    theirs = {m: 0.0 for m in METRICS}
    for row, item in zip(samples, items, strict=True):
        ctx = few_shot_prefix(item, pool, shots, seed) + format_question(item)
        args = row["arguments"]      # the samples file's {"gen_args_0": {"arg_0", "arg_1"}}, or in memory pairs
        lm_args = ([(a["arg_0"], a["arg_1"]) for a in args.values()] if isinstance(args, dict)
                   else [tuple(a) for a in args])
        same_prompt += sum(a == (ctx, " " + c) for a, c in zip(lm_args, item.choices, strict=True))
        n_req += len(item.choices)
        lm_lls = [float(r[0][0]) for r in row["resps"]]
        ours_lls = logprobs[k:k + len(item.choices)]
        k += len(item.choices)
        diffs += [abs(a - b) for a, b in zip(lm_lls, ours_lls, strict=True)]
        mine = item_correct(item, ours_lls)
        for m in METRICS:
            ours[m] += mine[m]
            theirs[m] += float(row[m])
            differ[m] += mine[m] != float(row[m])
    n = len(items)
    return {"items": n, "requests": n_req, "same_prompt": same_prompt,
            "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
            "lm_eval": {m: v / n for m, v in theirs.items()}, "lmforge": {m: v / n for m, v in ours.items()},
            "items_differing": differ}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("samples", help="lm-eval's samples_<task>_*.jsonl (--log_samples)")
    ap.add_argument("--items", required=True, help="the task's jsonl item file")
    ap.add_argument("--checkpoint", required=True, help="lmforge checkpoint or Hugging Face folder")
    ap.add_argument("--shots", type=int, default=0, help="the --num_fewshot lm-eval ran with")
    ap.add_argument("--seed", type=int, default=0, help="lmforge's mcq.seed (examples/lm_eval/utils.py SEED)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)

    from lmforge.eval.mcq import build_requests, continuation_logprobs, load_items
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of
    from lmforge.tokenizer.train import load_tokenizer

    samples = read_samples(args.samples)
    loaded = load_items(args.items)
    if loaded.errors:
        print(f"{args.items}: {len(loaded.errors)} malformed lines; lm-eval's json loader would have stopped",
              file=sys.stderr)
        return 1
    pool = loaded.items
    items = [pool[r["doc_id"]] for r in samples]       # --limit N scores the first N
    model, step = load_checkpoint(args.checkpoint)
    tok = load_tokenizer(tokenizer_dir_of(step))
    reqs = build_requests(items, tok, model.cfg.max_seq_len, args.shots, pool, args.seed)
    lps = continuation_logprobs(model, reqs, args.batch_size)
    res = compare(samples, items, pool, lps, args.shots, args.seed)
    print(f"{Path(args.samples).name}: {res['items']} items, {res['requests']} requests, {args.shots}-shot")
    print(f"prompts identical (context + continuation text): {res['same_prompt']} / {res['requests']}")
    print(f"log-likelihood |lm-eval - lmforge|: max {res['max_abs_diff']:.3g}, mean {res['mean_abs_diff']:.3g}")
    print("| metric | lm-eval | lmforge | items differing |\n|---|---|---|---|")
    for m in res["lm_eval"]:
        print(f"| {m} | {res['lm_eval'][m]:.4f} | {res['lmforge'][m]:.4f} | {res['items_differing'][m]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
