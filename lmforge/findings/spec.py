"""What a finding declares before it runs: the report's claim, the arms, the metric and the
expected direction of each variant against the baseline. `plan()` is the part written to
plan.json before the first arm trains (and checked on every resume: a changed plan after
results exist is refused unless the change is written down, see `run.guard_plan`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lmforge.findings.verdict import EXPECTATIONS


@dataclass(frozen=True)
class Finding:
    name: str
    source: str                 # report and section
    claim: str                  # the report's claim, quoted or closely paraphrased, one line
    metric: str                 # what the primary metric is, with units
    key: str                    # the primary metric's key in each arm's `metrics`
    higher_is_better: bool
    baseline: str
    expect: dict[str, str]      # variant arm -> "better" | "worse" | "equal" (vs the baseline)
    run: Callable               # (ctx, arm, seed) -> {"metrics": {...}, "curves": {label: [[x, y], ...]}}
    tolerance: float = 0.0      # the "equal" band, in the metric's units
    needs: tuple[str, ...] = ("data",)   # config keys the finding reads
    curve_label: str = "validation loss (nats / token)"
    curve_x: str = "step"
    scale_note: str = ""        # what toy scale can and cannot show of this claim
    deviations: str = ""        # where the miniature differs from the report's procedure, and why
    secondary: tuple[str, ...] = ()   # other metric keys shown per arm (mean +- std), no verdict
    prepare: Callable | None = None   # (ctx) -> None: work every seed shares (e.g. a data variant), run
                                      # once before the seeds, which may run in parallel processes
    # A finding of several experiments (e.g. one in pretraining, one in SFT): a variant may be
    # compared with another arm than `baseline` (an arm named only here runs too, before the
    # variants, with no expectation of its own), on another metric key than `key`.
    against: dict[str, str] = field(default_factory=dict)   # variant -> the arm it is compared with
    keys: dict[str, str] = field(default_factory=dict)      # variant -> its primary metric key

    def __post_init__(self):
        for arm, exp in self.expect.items():
            if exp not in EXPECTATIONS:
                raise ValueError(f"finding {self.name}: expect[{arm}] {exp!r} is not one of {EXPECTATIONS}")
        if self.baseline in self.expect:
            raise ValueError(f"finding {self.name}: the baseline {self.baseline!r} has no expectation of its own")
        for arm in (*self.against, *self.keys):
            if arm not in self.expect:
                raise ValueError(f"finding {self.name}: against/keys name {arm!r}, which is not a variant")
        for arm, ref in self.against.items():
            if ref == arm:
                raise ValueError(f"finding {self.name}: {arm!r} is compared with itself")

    @property
    def arms(self) -> tuple[str, ...]:
        """In run order: the baseline, the arms only other variants are compared with, the variants."""
        refs = [a for a in dict.fromkeys(self.against.values()) if a != self.baseline and a not in self.expect]
        return (self.baseline, *refs, *self.expect)

    def reference(self, variant: str) -> str:
        """The arm a variant is compared with."""
        return self.against.get(variant, self.baseline)

    def key_of(self, variant: str) -> str:
        return self.keys.get(variant, self.key)

    def metric_keys(self) -> tuple[str, ...]:
        """Every metric each arm reports: the primary keys, then the secondary ones."""
        return tuple(dict.fromkeys((self.key, *self.keys.values(), *self.secondary)))

    def plan(self, seeds: list[int], scale: str, steps: int) -> dict:
        return {"finding": self.name, "source": self.source, "claim": self.claim, "metric": self.metric,
                "key": self.key, "higher_is_better": self.higher_is_better, "baseline": self.baseline,
                "expect": dict(self.expect), "tolerance": self.tolerance, "seeds": list(seeds),
                "scale": scale, "steps": steps, "deviations": self.deviations, "scale_note": self.scale_note,
                # only where used: the plans of single-baseline findings stay as they were
                **({"against": dict(self.against)} if self.against else {}),
                **({"keys": dict(self.keys)} if self.keys else {})}
