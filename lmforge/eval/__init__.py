"""Evaluation: per-domain perplexity and bits-per-byte, multiple choice by log-likelihood,
contamination checks, needle-in-a-haystack, and the run report.

Kept import-light: submodules load torch/matplotlib only when used.
"""
from lmforge.eval.truncate import truncate_middle

__all__ = ["truncate_middle"]
