"""Where an SFT run's memory goes (issue 34: LoRA SFT of the 6.9M tiny model peaked at 1.9 GB).

    python scripts/sft_memory.py --set init.from_checkpoint=RUN --set 'data=[SFT.jsonl]' --set out_dir=OUT \\
        [--set lora.r=8 ...]

Runs the sft stage's own steps in this process (imports, build: model load + data, training,
the before/after effect) and prints after each: the resident set (psutil), the process's peak so
far (getrusage), and the Python-level allocations tracemalloc sees (numpy arrays, lists, dicts;
torch's tensors are not traced: the RSS minus them is torch's and the libraries' own).
"""
import resource
import sys
import threading
import time
import tracemalloc

import psutil

MB = 1 << 20
proc = psutil.Process()
t0 = time.time()


def mark(what: str) -> None:
    cur, peak = tracemalloc.get_traced_memory()
    print(f"{time.time() - t0:6.1f}s  {what:38s} rss {proc.memory_info().rss / MB:7.1f} MB  "
          f"peak rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.1f} MB  "
          f"python heap {cur / MB:6.1f} MB (peak {peak / MB:6.1f})", flush=True)


def sampler(every: float = 0.05) -> None:
    """Print the resident set whenever it has grown by 20 MB since the last line: the jumps'
    times place them among the phases (and, in training, among the steps)."""
    last = 0
    while True:
        rss = proc.memory_info().rss
        if rss > last + 20 * MB:
            print(f"{time.time() - t0:6.1f}s    rss grew to {rss / MB:7.1f} MB", flush=True)
            last = rss
        time.sleep(every)


def main(args: list[str]) -> None:
    if "--no-trace" in args:   # tracemalloc slows imports ~3x and adds its own bookkeeping
        args.remove("--no-trace")
    else:
        tracemalloc.start()
    threading.Thread(target=sampler, daemon=True).start()
    mark("start (python + psutil)")
    import numpy  # noqa: F401
    mark("import numpy")
    import torch
    mark("import torch")
    from lmforge import config
    from lmforge.stages.sft import SFTConfig, build
    from lmforge.stagekit.effects import sft_effect
    mark("import lmforge.stages.sft")
    sets = [a for pair in zip(args[::2], args[1::2]) if pair[0] == "--set" for a in pair[1:]]
    cfg = config.load(SFTConfig, None, sets)
    trainer = build(cfg, progress=False)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    mark(f"build ({n_params / 1e6:.1f}M params, {n_train / 1e6:.2f}M trained)")
    if tracemalloc.is_tracing():
        for stat in tracemalloc.take_snapshot().statistics("filename")[:5]:
            print(f"          {stat.size / MB:6.1f} MB  {stat.traceback}")
    trainer.progress = True
    summary = trainer.fit()
    mark(f"trained {summary.get('step')} steps")
    effect = sft_effect(cfg, trainer)
    mark("before/after effect")
    print("threads:", torch.get_num_threads(), " effect:", effect and effect.get("verdict"))


if __name__ == "__main__":
    main(sys.argv[1:])
