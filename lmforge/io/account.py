"""The one-line account every stage ends with, and the error for input that yields nothing.

    [sft] read 1200 records, kept 1150, rejected 50 (malformed 40, too_long 10); rejects: runs/sft/rejects.jsonl

A stage whose every record was rejected (or whose inputs held none) raises DataError with
the count, the reasons and the first few rejected lines, so a run never "succeeds" with
nothing: the CLI turns it into one line and exit code 5.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataError(RuntimeError):
    """Input that cannot be used: a corrupt file, or a run whose every record was rejected."""


def format_reasons(rejected: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0])) if v)


def first_rejects(records: list[dict], n: int = 3) -> list[str]:
    """`file:line: reason (detail)` of the first `n` records an ErrorSink kept."""
    out = []
    for r in records[:n]:
        where = f"{r.get('file')}:{r['line']}" if r.get("line") is not None else str(r.get("file"))
        detail = f" ({str(r.get('detail'))[:100]})" if r.get("detail") else ""
        out.append(f"{where}: {r.get('reason')}{detail}")
    return out


@dataclass
class Account:
    stage: str
    read: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejects_at: str | Path | None = None   # where the rejected records are written
    unit: str = "records"

    @classmethod
    def from_stats(cls, stage: str, stats: dict, rejects_at=None, unit: str = "records",
                   read_key: str = "records", kept_key: str = "kept") -> "Account":
        """From a stats dict of counters {read_key, kept_key, reason: n, ...}."""
        rejected = {k: int(v) for k, v in stats.items()
                    if k not in (read_key, kept_key) and isinstance(v, int) and not isinstance(v, bool)}
        return cls(stage, int(stats.get(read_key, 0)), int(stats.get(kept_key, 0)), rejected, rejects_at, unit)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def line(self) -> str:
        text = f"[{self.stage}] read {self.read} {self.unit}, kept {self.kept}, rejected {self.n_rejected}"
        if self.n_rejected:
            text += f" ({format_reasons(self.rejected)})"
            if self.rejects_at and Path(self.rejects_at).exists():
                text += f"; rejects: {self.rejects_at}"
        return text

    def require_kept(self, examples: list[str] | None = None, what: str = "") -> "Account":
        """DataError unless something was kept: the count, the reasons, the first rejects."""
        if self.kept > 0:
            return self
        where = f" in {what}" if what else ""
        if self.read == 0:
            raise DataError(f"no {self.unit} found{where}: nothing to do")
        msg = f"all {self.read} {self.unit}{where} were rejected ({format_reasons(self.rejected)})"
        if examples:
            msg += "; first: " + "; ".join(examples[:3])
        if self.rejects_at and Path(self.rejects_at).exists():
            msg += f"; all rejects in {self.rejects_at}"
        raise DataError(msg)

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "rejected": dict(self.rejected),
                "rejects": str(self.rejects_at) if self.rejects_at else None, "line": self.line()}
