"""Every bench script still imports and parses its arguments (`--help`): benches are not run
in CI, so a moved module would otherwise break them silently (bench/dedup.py did once)."""
import json
import os
import re
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


def test_gpu_suite_names_each_step_once():
    """Every step id PART lists has its `step` line and every `step` line is listed, so a
    renamed step cannot silently drop out of a GPU session's one prepared call."""
    text = (BENCH[0].parent / "gpu_suite.sh").read_text()
    listed = re.search(r'FIRST="([^"]+)"', text).group(1).split() + re.search(r'REST="([^"]+)"', text).group(1).split()
    defined = re.findall(r"^step ([\w-]+) \d+ ", text, flags=re.M)
    assert sorted(set(listed)) == sorted(defined) and len(defined) == len(set(defined))


def test_gpu_suite_dry_run_on_cpu(tmp_path):
    """DRY=1 runs chosen steps at the tiny shape on the CPU: the suite's mechanics (step choice,
    the shape rewrite, the log) and the commands themselves work before they cost device time."""
    root = BENCH[0].parents[1]
    env = {**os.environ, "OUT": str(tmp_path), "DRY": "1", "STEPS": "125m-eager", "PY": sys.executable}
    p = subprocess.run(["bash", "bench/gpu_suite.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    log = (tmp_path / "gpu.log").read_text()
    assert "## 125m-eager: 125M seq 2048" in log and "## rc=0" in log and "## rc=1" not in log
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["preset"] for r in rows] == ["tiny"] * 4 and all(r["tokens_per_s"] > 0 for r in rows)
    assert {r["seq_len"] for r in rows} == {128}


def test_train_throughput_muon_and_fp8_rows(tmp_path):
    """The rows issue 31 asks of a GPU: Muon's step and torchao's float8 linears (emulated on a
    CPU), each measured and written as it finishes, with the converted-layer count printed."""
    out = tmp_path / "rows.jsonl"
    p = subprocess.run([sys.executable, str(BENCH[0].parent / "train_throughput.py"), "--preset", "small-125m",
                        "--layers", "1", "--seq-len", "32", "--batch", "1", "--steps", "1", "--warmup", "0",
                        "--rows", "fused,muon,fp8", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "fp8 (tensorwise): 2 of 8 linear layers converted" in p.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in rows] == ["lmforge (packed, fused CE)", "lmforge (packed, fused CE, Muon + AdamW)",
                                        "lmforge (packed, fused CE, fp8 tensorwise)"]
    assert all(r["tokens_per_s"] > 0 for r in rows)


def test_gpu_suite_refuses_an_unknown_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "DRY": "1", "STEPS": "125m-eager 1b-compild"}
    p = subprocess.run(["bash", str(BENCH[0].parent / "gpu_suite.sh")], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("gpu_suite: STEPS: no step '1b-compild' (known: device ")
    assert not (tmp_path / "train.jsonl").exists()
