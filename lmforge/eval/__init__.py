"""Evaluation library: per-domain perplexity and bits-per-byte, multiple choice by
log-likelihood, contamination checks and needle-in-a-haystack cases and scoring.
The `eval` and `needle` stages (lmforge.stages.eval, lmforge.stages.needle) run them.

Kept import-light: submodules load torch/matplotlib only when used.
    lmforge.eval.perplexity     perplexity(), score_documents(), val_bpb_metrics()
    lmforge.eval.mcq            load_items(), evaluate_mcq(), stderr()
    lmforge.eval.contamination  perplexity_gap(), ngram_overlap_tokens(), ngram_overlap_text()
    lmforge.eval.needle         build_cases(), score_case(), grids(), plot_heatmap()
"""
