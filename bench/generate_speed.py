"""Greedy generation speed: lmforge with the KV cache vs lmforge recomputing the whole
sequence every step vs transformers' `generate` on the exported folder, same run.

One random model (a ModelConfig preset, default "tiny": 4 x 256, vocab 4096), exported
with lmforge.model.convert.save_hf and loaded with AutoModelForCausalLM, so all three rows
run the same weights on the same prompts (a batch of random prompts of --prompt-len
tokens, exactly --new-tokens generated, no stop token). Each row is the best of --repeat
runs after one warm-up; tokens/s counts generated tokens (batch x new tokens). The last
column says whether the generated ids equal the transformers row's.

    python bench/generate_speed.py                              # ~1 min on 2 CPU cores
    python bench/generate_speed.py --preset small-125m --batch 4 --new-tokens 64 --device cuda
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from lmforge.infer.generate import generate_ids
from lmforge.model import ModelConfig, Transformer
from lmforge.model.convert import export_arch, save_hf


@torch.inference_mode()
def recompute_greedy(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    """No cache: every step runs the full (equal-length) sequences again."""
    ids = torch.tensor(prompts, device=next(model.parameters()).device)
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[:, len(prompts[0]):].tolist()


@torch.inference_mode()
def hf_greedy(hf, prompts: list[list[int]], n: int) -> list[list[int]]:
    x = torch.tensor(prompts, device=hf.device)
    out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, x.shape[1]:].tolist()


def timed(fn, repeat: int, device: str):
    fn()   # warm-up (allocations, kernels)
    best, out = float("inf"), None
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--rotary-pct", type=float, default=1.0, help="< 1 exports as Phi-3 (partial rotary)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(args.preset, rotary_pct=args.rotary_pct,
                                  max_seq_len=max(1024, args.prompt_len + args.new_tokens))
    model = Transformer(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(model, tmp, arch=export_arch(cfg))
        hf = AutoModelForCausalLM.from_pretrained(tmp, local_files_only=True).eval().to(args.device)
    model = model.to(args.device)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_len), generator=g).tolist()
    n = args.new_tokens

    rows = [
        ("transformers generate (its KV cache)", lambda: hf_greedy(hf, prompts, n)),
        ("lmforge generate, KV cache", lambda: generate_ids(model, prompts, max_new_tokens=n, stop_ids=[])),
        ("lmforge, no cache (recompute)", lambda: recompute_greedy(model, prompts, n)),
    ]
    results = [(name, *timed(fn, args.repeat, args.device)) for name, fn in rows]
    base_s, ref = results[0][1], results[0][2]
    tokens = args.batch * n
    print(f"\n{cfg.n_params() / 1e6:.1f}M params ({type(hf).__name__}), batch {args.batch}, prompt "
          f"{args.prompt_len}, {n} new tokens, {args.device}, threads {torch.get_num_threads()}, "
          f"best of {args.repeat}\n")
    print(f"{'':40s} {'seconds':>9s} {'tokens/s':>10s} {'vs transformers':>16s} {'same ids':>9s}")
    for name, s, out in results:
        print(f"{name:40s} {s:9.3f} {tokens / s:10.1f} {base_s / s:15.2f}x {'yes' if out == ref else 'NO':>9s}")


if __name__ == "__main__":
    main()
