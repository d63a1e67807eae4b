"""Run an lmforge GGUF export in llama.cpp and compare with lmforge: tokens, logits, greedy text.

llama.cpp is not a dependency of lmforge. Build it once in a separate environment, e.g.

    python3 -m venv /tmp/llvenv
    CMAKE_ARGS="-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \\
        /tmp/llvenv/bin/pip install llama-cpp-python==0.3.36 numpy     # compiles llama.cpp

then, with lmforge's Python:

    python scripts/check_gguf_llamacpp.py RUN_DIR --llama-python /tmp/llvenv/bin/python

It exports RUN_DIR (a lmforge run or checkpoint) to GGUF, computes our token ids, logits
and greedy continuations, then runs the same in llama.cpp (a child process under
--llama-python) and prints one table: token-id agreement on a few texts, the largest
logit difference, and whether greedy continuations match.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = ["The quick brown fox jumps over the lazy dog. 1234567 + 89 = ?",
         "def add(a, b):\n    return a + b\n\n\nclass  Foo:  pass\t\t",
         "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
         "<|im_start|>user\nhi 42<|im_end|>\n"]
N_NEW = 24


def ours(run_dir: str, work: Path) -> dict:
    import numpy as np
    import torch

    from lmforge.infer.generate import generate_ids
    from lmforge.export.gguf import export_gguf
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of
    from lmforge.tokenizer.train import load_tokenizer

    gguf_file = export_gguf(run_dir, work / "model.gguf")
    model, step = load_checkpoint(run_dir)
    tok = load_tokenizer(tokenizer_dir_of(step))
    ids = [tok.encode(t).ids for t in TEXTS]
    ids = [[i for i in x if i != tok.token_to_id("<|endoftext|>")] for x in ids]   # encode may append eos
    with torch.no_grad():
        logits = [model(torch.tensor([x]))[0, :, :model.cfg.vocab_size].float().numpy() for x in ids]
    greedy = generate_ids(model, [x[:8] for x in ids], max_new_tokens=N_NEW, stop_ids=[])
    np.savez(work / "ours.npz", *logits)
    spec = {"gguf": str(gguf_file), "texts": TEXTS, "ids": ids, "greedy": greedy, "n_new": N_NEW}
    (work / "ours.json").write_text(json.dumps(spec))
    return spec


def llama_cpp_side(work: Path) -> None:
    """Runs under --llama-python: llama.cpp's tokens, logits and greedy tokens for the same inputs."""
    import numpy as np
    from llama_cpp import Llama

    spec = json.loads((work / "ours.json").read_text())
    llm = Llama(spec["gguf"], n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    out = {"ids": [llm.tokenize(t.encode(), add_bos=False, special=True) for t in spec["texts"]],
           "logits_maxdiff": [], "greedy": []}
    ours = np.load(work / "ours.npz")
    for k, x in enumerate(spec["ids"]):
        llm.reset()
        llm.eval(x)
        got = np.asarray(llm.scores[:len(x)], dtype=np.float64)
        out["logits_maxdiff"].append(float(np.abs(got - ours[f"arr_{k}"]).max()))
        scale = float(np.abs(ours[f"arr_{k}"]).max())
        out.setdefault("logits_scale", []).append(scale)
    for x in spec["ids"]:
        llm.reset()
        llm.eval(x[:8])
        new = []
        for _ in range(spec["n_new"]):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            new.append(t)
            llm.eval([t])
        out["greedy"].append(new)
    (work / "llama_cpp.json").write_text(json.dumps(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--llama-python", default=None, help="a Python with llama-cpp-python installed")
    ap.add_argument("--llama-side", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.llama_side:
        llama_cpp_side(Path(args.llama_side))
        return 0
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        spec = ours(args.run_dir, work)
        subprocess.run([args.llama_python or sys.executable, __file__, "--llama-side", str(work)], check=True)
        got = json.loads((work / "llama_cpp.json").read_text())
    print("| text | tokens | token ids equal | max abs logit diff (max abs logit) | greedy 24 tokens equal |")
    print("| --- | --- | --- | --- | --- |")
    for k, text in enumerate(TEXTS):
        print(f"| {json.dumps(text[:24], ensure_ascii=False)} | {len(spec['ids'][k])} | "
              f"{got['ids'][k] == spec['ids'][k]} | {got['logits_maxdiff'][k]:.2e} ({got['logits_scale'][k]:.2f}) | "
              f"{got['greedy'][k] == spec['greedy'][k]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
