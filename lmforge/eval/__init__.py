"""Evaluation: per-domain perplexity and bits-per-byte, multiple choice by log-likelihood,
contamination checks, needle-in-a-haystack, and the run report (lmforge.report).

Kept import-light: submodules load torch/matplotlib only when used.
    lmforge.eval.perplexity     perplexity(), score_documents(), val_bpb_metrics(), bytes_per_token()
    lmforge.eval.mcq            load_items(), evaluate_mcq(), stderr()
    lmforge.eval.contamination  perplexity_gap(), ngram_overlap_tokens(), ngram_overlap_text()
    lmforge.eval.run            EvalConfig, run(cfg) -> out_dir/eval.json + eval.md
"""
from lmforge.eval.truncate import truncate_middle

__all__ = ["truncate_middle"]
