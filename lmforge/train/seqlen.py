"""Context-length warmup: the sequence length grows over the first steps of a stage.

Index-1.9B-32K tried it for its 32K continued pretraining (and found no gain, one of the
report's three failed attempts; `lmforge longctx` has it as `seq_warmup` so the ablation
can be rerun). From `start` tokens at step 0 the length grows linearly to the stage's
`train.seq_len` at step `steps`, rounded down to a multiple of `multiple`. The rows per
micro-batch grow the other way, so a micro-batch keeps about the same number of tokens
(and the LR schedule sees the same tokens per step).

The length is a pure function of the step: the loader's position (sampler, document,
offset) does not depend on it, so a run resumed at step k packs exactly the rows an
uninterrupted run would have packed.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmforge.config import check


@dataclass
class SeqWarmupConfig:
    start: int = 0          # tokens per row at step 0; 0 = off (full length from the first step)
    steps: int = 0          # steps to reach train.seq_len
    multiple: int = 64      # lengths are rounded down to a multiple of this (kernel-friendly shapes)

    def __post_init__(self):
        check(self.start >= 0, "start", "must be >= 0 (0 = off)")
        check(self.steps >= 0, "steps", "must be >= 0")
        check(self.multiple >= 1, "multiple", "must be >= 1")
        check(not self.start or self.steps > 0, "steps", "a warmup (start > 0) needs steps > 0")

    @property
    def enabled(self) -> bool:
        return self.start > 0

    def length_at(self, step: int, final: int) -> int:
        """Row length at `step` for a stage whose full length is `final`."""
        if not self.enabled or step >= self.steps or self.start >= final:
            return final
        raw = self.start + (final - self.start) * step / self.steps
        return max(min(final, self.start), int(raw) // self.multiple * self.multiple)

    def rows_at(self, step: int, final: int, rows: int) -> int:
        """Rows per micro-batch at `step`, so that rows x length stays about rows x final."""
        return max(1, rows * final // self.length_at(step, final))
