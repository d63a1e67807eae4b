"""Every bench script still imports and parses its arguments (`--help`): benches are not run
in CI, so a moved module would otherwise break them silently (bench/dedup.py did once)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH, ids=[p.name for p in BENCH])
def test_bench_script_starts(script):
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage" in p.stdout.lower()


def test_gpu_suite_is_valid_bash():
    suite = BENCH[0].parent / "gpu_suite.sh"
    assert subprocess.run(["bash", "-n", str(suite)]).returncode == 0
