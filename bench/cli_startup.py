"""CLI start-up time: `lmforge --help` and friends, against a bare Python start, same run.

Each row starts a fresh interpreter (`python -m lmforge ...` would add runpy; the rows run the
console entry point's code, `from lmforge.cli import main; main([...])`), best and median of
--repeat runs, and the time over the `python -c pass` baseline. The issue's target: `lmforge
--help` under 1 s (it took 4-5 s when the parser imported the model code and torch).

    python bench/cli_startup.py              # ~20 s on 2 cores
    python bench/cli_startup.py --repeat 20
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

ROWS = [
    ("python -c pass (baseline)", "pass"),
    ("import lmforge", "import lmforge"),
    ("lmforge --help", "from lmforge.cli import main; main(['--help'])"),
    ("lmforge data --help", "from lmforge.cli import main; main(['data', '--help'])"),
    ("lmforge sft --help", "from lmforge.cli import main; main(['sft', '--help'])"),
    ("lmforge run --help", "from lmforge.cli import main; main(['run', '--help'])"),
    ("lmforge sft --help-config", "from lmforge.cli import main; main(['sft', '--help-config'])"),
    ("import torch (for scale)", "import torch"),
]


def once(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, best / median of {args.repeat} fresh processes\n")
    print(f"| {'command':28s} | {'best s':>7s} | {'median s':>8s} | {'over baseline s':>15s} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 10}|{'-' * 17}|")
    base = None
    for name, code in ROWS:
        once(code)  # warm the file cache
        times = [once(code) for _ in range(args.repeat)]
        best, med = min(times), statistics.median(times)
        base = best if base is None else base
        print(f"| {name:28s} | {best:7.3f} | {med:8.3f} | {best - base:15.3f} |")


if __name__ == "__main__":
    main()
