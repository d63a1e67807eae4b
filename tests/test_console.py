"""A quiet console: a data run with pool workers prints no worker traceback when it is stopped
by SIGTERM or Ctrl-C (exit 130, resumable) nor when it finishes; a stage ends on one readable
summary line with its validation loss first."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.stagekit.summary import summary_line, val_loss

STDLIB = Path(json.__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    """~1 MB of real text (stdlib sources split at blank-line runs) in 8 shards of work for 2 workers."""
    d = tmp_path_factory.mktemp("quiet")
    n = 0
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, p in enumerate(sorted(STDLIB.glob("*.py"))):
            for j, chunk in enumerate(p.read_text(encoding="utf-8", errors="replace").split("\n\n\n")):
                if len(chunk) > 300 and n < 800:
                    f.write(json.dumps({"id": f"{i}-{j}", "text": chunk}) + "\n")
                    n += 1
    assert n == 800
    (d / "cfg.yaml").write_text(f"input: [{d / 'docs.jsonl'}]\noutput: {d / 'out'}\nsteps: [filters, minhash]\n"
                                f"workers: 2\ndocs_per_shard: 100\nfilters: {{min_units: 5}}\n")
    return d


def _start(d: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", "data", str(d / "cfg.yaml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _interrupt_when_workers_run(proc: subprocess.Popen, send) -> list[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        kids = [k for k in _children(proc.pid) if _alive(k)]
        if len(kids) >= 2:            # the pool is up: the run is mid-step
            send(proc)
            return kids
        time.sleep(0.05)
    pytest.fail(f"the pool never started (rc {proc.poll()})")


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_interrupted_data_run_prints_no_worker_traceback(data_config, how):
    import shutil
    shutil.rmtree(data_config / "out", ignore_errors=True)
    proc = _start(data_config)
    if how == "sigterm":      # a scheduler or `kill PID`: the main process only
        kids = _interrupt_when_workers_run(proc, lambda p: p.send_signal(signal.SIGTERM))
    else:                     # Ctrl-C: the terminal signals the whole foreground process group
        kids = _interrupt_when_workers_run(proc, lambda p: os.killpg(p.pid, signal.SIGINT))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "interrupted; rerun the same command to resume" in err
    time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "pool workers outlived the interrupted run"


def test_finished_data_run_prints_no_traceback(data_config):
    proc = _start(data_config)      # resumes whatever an interrupted run left
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out
    assert "[data] done" in out or "[data] already done" in out


def test_summary_line_puts_validation_loss_first():
    pretrain = {"step": 600, "tokens_seen": 1_228_800, "bad_steps": 0, "checkpoint": "runs/x/checkpoints/step-600",
                "final_loss": 5.81234, "val/prose": 5.5, "val/zh": 6.1, "val/code": 4.9, "val/mean": 5.5,
                "val/ppl": 244.0, "val_bpb/zh": 1.2}
    line = summary_line(pretrain)
    assert line.startswith("val loss 5.5 (mean of 3 domains)")
    assert "train loss 5.812" in line and "tokens 1.23M" in line and "checkpoint" not in line
    assert "LM + distill" not in line and "LM loss" not in line    # only a distilled run's loss is mixed
    assert len(line.split(" | ")) <= 5
    assert summary_line({"val/sft_ppl": 10.0, "val/sft_loss": 2.3026, "step": 20}).startswith(
        "val loss 2.303 (val/sft_loss)")
    assert val_loss({"val/accuracy": 0.5, "val/loss": 0.69}) == ("val/loss", 0.69)
    assert val_loss({"step": 3, "final_loss": 1.0}) is None and val_loss({"val/mean": float("nan")}) is None
    assert summary_line({"docs": 1234, "bytes": 1_634_000, "final": "runs/x/final", "shards": 3}) == \
        "docs 1234 | bytes 1.63 MB | shards 3"


def test_stage_command_prints_one_summary_line(capsys, tmp_path):
    from lmforge.cli.common import run_stage

    class Cfg:
        out_dir = str(tmp_path)

    def run(cfg, progress):
        (tmp_path / "DONE.json").write_text("{}")
        return {"step": 5, "final_loss": 2.0, "val/mean": 1.5, "val/a": 1.5, "checkpoint": "x/step-5"}

    assert run_stage("pretrain", Cfg(), run, quiet=True) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("[pretrain] done in ")
    assert ": val loss 1.5 (mean of 1 domain) | train loss 2 | step 5" in out[0]
    assert out[0].endswith(f"(all numbers: {tmp_path}/DONE.json)")


def test_help_starts_on_the_standard_library_alone():
    """`lmforge --help` imports nothing outside lmforge and the standard library (no torch, numpy,
    yaml): its start-up time is measured by bench/cli_startup.py (0.08 s vs 0.05 s for bare Python)."""
    code = ("import sys\nfrom lmforge.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: lmforge" in r.stdout and "config" in r.stdout
    third_party = [m for m in eval(r.stderr.strip().splitlines()[-1])
                   if m != "lmforge" and not m.startswith(("_", "__"))]
    assert third_party == [], third_party


def test_interrupts_are_held_while_a_pool_starts_or_stops():
    """A signal inside deferred_interrupts() acts when the block ends, never inside it (inside
    multiprocessing's fork hooks it used to be swallowed, or to hang the exit)."""
    from lmforge.workers import Terminated, deferred_interrupts, sigterm_as_interrupt, worker_pool
    old = signal.getsignal(signal.SIGTERM)
    try:
        sigterm_as_interrupt()
        reached = []
        with pytest.raises(Terminated):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                reached.append("end of block")
        assert reached == ["end of block"]
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                reached.append("again")
        assert reached[-1] == "again"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with worker_pool(2) as pool:            # and the pool still works, its workers quiet
            assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_summary_numbers_read_right():
    """584,000 tokens read as 584k (not 58.4k); small counts stay whole; bytes in kB/MB."""
    from lmforge.stagekit.summary import human
    assert human(584_000) == "584k"
    assert human(9_999) == "9999"
    assert human(12_345) == "12.3k"
    assert human(2_460_000) == "2.46M"
    assert human(1_680_000, "bytes") == "1.68 MB"
