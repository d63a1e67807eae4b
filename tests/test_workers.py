"""Forked pool workers can run torch after the parent has: the parent's OpenMP thread pool
does not survive fork(), and a child's first parallel op used to wait forever (the `data`
stage with `topics.backend: embedding` and two workers hung at its first shard). Each case runs
in a subprocess with a timeout, so a regression fails instead of hanging the suite."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STDLIB = Path(json.__file__).resolve().parents[1]

FORK_AFTER_TORCH = textwrap.dedent("""
    import torch
    from lmforge.workers import worker_pool

    def work(i):
        with torch.no_grad():
            e = torch.nn.Embedding(30000, 384)
            x = torch.randint(0, 30000, (64, 256))
            return float(e(x).sum() + (torch.randn(512, 512) @ torch.randn(512, 512)).sum())

    if __name__ == "__main__":
        torch.set_num_threads(2)             # the parent's thread pool is started...
        with torch.no_grad():
            e = torch.nn.Embedding(30000, 384)
            x = torch.randint(0, 30000, (64, 256))
            for _ in range(3):
                e(x).sum(), torch.randn(512, 512) @ torch.randn(512, 512)
        with worker_pool(2) as pool:         # ...then the workers are forked
            print(len(list(pool.imap(work, range(4)))), "results")
""")


def test_forked_workers_run_torch_after_the_parent_did(tmp_path):
    script = tmp_path / "fork_after_torch.py"
    script.write_text(FORK_AFTER_TORCH)
    try:
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("pool workers hung in their first torch op after fork")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("4 results"), p.stdout


def test_data_run_with_embedding_topics_and_two_workers_finishes(tmp_path):
    from lmforge.data import embed

    if not embed.available():
        pytest.skip("optional extra lmforge[embed] not installed")
    n = 0
    with open(tmp_path / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, path in enumerate(sorted(STDLIB.glob("*.py"))):
            for j, chunk in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n\n\n")):
                if 300 < len(chunk) and n < 96:
                    f.write(json.dumps({"id": f"{i}-{j}", "text": chunk[:600]}) + "\n")
                    n += 1
    (tmp_path / "cfg.yaml").write_text(
        f"input: [{tmp_path / 'docs.jsonl'}]\noutput: {tmp_path / 'out'}\nsteps: [topics]\nworkers: 2\n"
        f"docs_per_shard: 24\ntopics: {{clusters: 4, backend: embedding, embed_chars: 600, downsample: none}}\n")
    try:
        p = subprocess.run([sys.executable, "-m", "lmforge", "data", str(tmp_path / "cfg.yaml")],
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the data run with embedding topics and 2 workers hung")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "[data] done in " in p.stdout       # the stage contract's closing line
    topics = json.loads((tmp_path / "out" / "summary.json").read_text())["steps"][-1]
    assert topics["step"] == "topics" and topics["backend"] == "embedding", topics
    assert topics["in"]["docs"] == 96 and sum(topics["cluster_sizes"]) == 96, topics
