"""The data stage on a Ray cluster of two nodes on this machine (two `ray start` processes,
their own ports and temp folders, 1 CPU each) writes the same bytes as a local run.

    python scripts/ray_two_nodes.py                 # a few minutes on 2 busy cores
    python scripts/ray_two_nodes.py --docs 2000 --keep /tmp/two-nodes

Steps: read, filters, minhash, substring (shuffle mode: window, repeat and span tasks). The Ray
run joins the cluster with `ray_address: 127.0.0.1:PORT` (a second process, as a user's
`lmforge data` would); tasks read and write the shared output folder themselves (one machine:
the same path on both nodes, as docs/scale.md asks of a cluster). Afterwards every file of both
outputs is compared byte for byte (stats.json without its timings, summary.json and DONE.json
with the output folder's name replaced), and the tasks each node ran are counted from the
`:task_name:` markers Ray writes into every worker's log. The nodes are stopped by their own
process groups (never `ray stop`, which would stop every Ray on the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
STEPS = ["filters", "minhash", "substring"]
TOKEN = secrets.token_hex(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_corpus(raw: Path, n_docs: int, seed: int = 0) -> int:
    """Four jsonl files of stdlib text with planted near-copies (MinHash) and a shared trailer
    (exact substrings)."""
    sys.path.insert(0, str(ROOT))
    from lmforge.data.dedup.synthetic import plant_near_duplicates, stdlib_documents

    texts = stdlib_documents(max_docs=n_docs)
    texts, _ = plant_near_duplicates(texts, n_copies=max(1, len(texts) // 10), edit=0.02, seed=seed)
    rng = random.Random(seed)
    trailer = " -- Read more about this module in the standard library reference and its howtos."
    texts = [t + trailer if rng.random() < 0.2 else t for t in texts]
    raw.mkdir(parents=True, exist_ok=True)
    per = -(-len(texts) // 4)
    for f in range(4):
        with open(raw / f"part{f}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(f * per, min(len(texts), (f + 1) * per)):
                fh.write(json.dumps({"id": f"doc{i}", "text": texts[i]}) + "\n")
    return sum(len(t.encode()) for t in texts)


def ray_env() -> dict:
    """Ray 2.60 starts `ray start --head` clusters with token authentication: the two nodes and
    the driver share one token made for this run (RAY_AUTH_TOKEN), nothing read from ~/.ray."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


def start_node(tmp: Path, name: str, head_port: int, head: bool) -> subprocess.Popen:
    temp = tmp / f"ray-{name}"          # its own temp folder (sessions, sockets, logs)
    temp.mkdir(parents=True, exist_ok=True)
    ports = {f"--{k}": str(free_port()) for k in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")}
    cmd = [RAY, "start", "--block", "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats",
           f"--resources={json.dumps({name: 1})}", "--object-store-memory=200000000",
           *[x for kv in ports.items() for x in kv]]
    if head:
        cmd += ["--head", f"--port={head_port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}"]
    else:
        cmd += [f"--address=127.0.0.1:{head_port}", "--node-ip-address=127.0.0.1"]
    log = open(tmp / f"{name}.log", "w")
    # its own session: stopped by its process group id, nothing else on the machine
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ray_env())


def wait_for_nodes(address: str, n: int, timeout: float = 120) -> None:
    code = ("import ray, sys, time\n"
            f"ray.init(address={address!r}, log_to_driver=False)\n"
            f"t = time.time()\n"
            f"while len([x for x in ray.nodes() if x['Alive']]) < {n} and time.time() - t < {timeout}:\n"
            "    time.sleep(1)\n"
            "alive = [x for x in ray.nodes() if x['Alive']]\n"
            "print(len(alive), ray.cluster_resources().get('CPU'))\n"
            f"sys.exit(0 if len(alive) >= {n} else 1)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 60,
                       env=ray_env())
    if r.returncode:
        raise SystemExit(f"the cluster did not come up with {n} nodes:\n{r.stdout}\n{r.stderr[-2000:]}")
    print(f"cluster up: {r.stdout.split()[0]} nodes, {r.stdout.split()[1]} CPUs")


def run_data(raw: Path, out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "lmforge", "data", "--quiet", "--set", f"input=[{raw}]", "--set", f"output={out}",
           "--set", f"steps=[{','.join(STEPS)}]", "--set", "docs_per_shard=150", "--set", "workers=2",
           "--set", "substring.mode=shuffle", "--set", "substring.partitions=2",
           "--set", "filters.min_units=20", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env={**ray_env(), "PYTHONPATH": str(ROOT)})
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dt


def normalise(path: Path, root: Path):
    data = path.read_bytes()
    if path.name.endswith(".json") or path.name in ("DONE", "PREPARED"):
        def drop(o):
            if isinstance(o, dict):
                return {k: drop(v) for k, v in o.items() if k != "seconds"}
            if isinstance(o, list):
                return [drop(v) for v in o]
            return o.replace(str(root), "OUT") if isinstance(o, str) else o
        return drop(json.loads(data))
    return data


def compare(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """(files compared, bytes compared, differences)."""
    fa = {str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and p.name != ".lock"}
    fb = {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and p.name != ".lock"}
    diff = sorted(fa ^ fb)
    nbytes = 0
    for rel in sorted(fa & fb):
        nbytes += (a / rel).stat().st_size
        if normalise(a / rel, a) != normalise(b / rel, b):
            diff.append(rel)
    return len(fa & fb), nbytes, diff


def tasks_per_node(tmp: Path) -> dict[str, int]:
    counts = {}
    for name in ("head", "node2"):
        n = 0
        for f in (tmp / f"ray-{name}").glob("session_*/logs/worker-*.out"):
            n += f.read_text(errors="replace").count(":task_name:_run_task")
        counts[name] = n
    return counts


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):           # the worker node first, then the head
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=400, help="stdlib documents before the planted copies")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="lmforge-2nodes-"))
    tmp.mkdir(parents=True, exist_ok=True)
    nbytes = write_corpus(tmp / "raw", args.docs)
    print(f"corpus: {nbytes / 1e6:.2f} MB in 4 files under {tmp / 'raw'}")
    t_local = run_data(tmp / "raw", tmp / "out-local", [])
    print(f"local run (executor: local, workers 2): {t_local:.1f} s")
    port = free_port()
    procs = []
    try:
        procs.append(start_node(tmp, "head", port, head=True))
        time.sleep(3)
        procs.append(start_node(tmp, "node2", port, head=False))
        wait_for_nodes(f"127.0.0.1:{port}", 2)
        t_ray = run_data(tmp / "raw", tmp / "out-ray",
                         ["--set", "executor=ray", "--set", f"ray_address=127.0.0.1:{port}"])
        print(f"Ray run (2 nodes x 1 CPU, ray_address 127.0.0.1:{port}): {t_ray:.1f} s")
        per_node = tasks_per_node(tmp)
    finally:
        stop(procs)
    n, size, diff = compare(tmp / "out-local", tmp / "out-ray")
    summary = json.loads((tmp / "out-local" / "summary.json").read_text())
    kept = {s["step"]: s["kept"]["docs"] for s in summary["steps"]}
    print(f"documents kept per step: {kept}")
    print(f"Ray tasks per node (from the workers' logs): {per_node}")
    print(f"compared {n} files, {size / 1e6:.2f} MB: " + ("identical" if not diff else f"{len(diff)} differ: {diff[:10]}"))
    if not args.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    ok = not diff and all(per_node.values())
    if not all(per_node.values()):
        print("note: a node ran no task (the run did not use both nodes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
