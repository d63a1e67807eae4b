"""Middle truncation of over-long prompts (Index-1.9B-32K, LongBench).

The start of a prompt usually holds the instruction and the end the question, so when a
prompt exceeds the window the middle is dropped: keep the first ceil(max_len/2) and the
last floor(max_len/2) tokens.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def truncate_middle(ids: Sequence[T], max_len: int) -> list[T]:
    """`ids` unchanged if it fits in max_len, else its first and last halves of max_len."""
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    head = (max_len + 1) // 2
    tail = max_len - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


def fit_to_window(prompt: Sequence[T], window: int, keep_after: int = 0) -> list[T]:
    """The prompt middle-truncated so that it plus `keep_after` tokens (a continuation being
    scored or generated) fit in `window`; the continuation itself is never cut."""
    if keep_after >= window:
        raise ValueError(f"a continuation of {keep_after} tokens leaves no room for the prompt in a "
                         f"window of {window}")
    return truncate_middle(prompt, window - keep_after)
