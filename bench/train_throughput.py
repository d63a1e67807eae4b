"""Training-step throughput: lmforge's model vs Hugging Face transformers' LlamaForCausalLM.

Both models get the same shape (converted config), the same random token batches and the
same AdamW step, in the same process, so the table's ratio is meaningful even on a noisy
machine. Rows:
  - hf-llama (causal):   transformers LlamaForCausalLM, SDPA attention, plain causal mask
  - lmforge (causal):    our model, plain causal mask
  - lmforge (packed):    our model with packed documents (block-diagonal causal mask and
                         per-document positions), loss on full materialised logits
  - lmforge (packed, fused CE): the same with the chunked fused head + cross-entropy
                         (lmforge/model/fused_loss.py), what pretraining actually runs
  - lmforge (packed, fused CE, foreach AdamW): the same with AdamW(foreach) instead of
                         AdamW(fused=True), to show the fused optimizer's share (CUDA)
  - lmforge (causal, sdpa) / (packed, sdpa mask): attn_backend forced to sdpa (on CUDA the
                         default is FlexAttention: causal or document BlockMask, built once per
                         forward and shared by all layers); the packed row then materialises a
                         [B, 1, T, T] boolean mask
On CUDA: bf16 autocast, optional torch.compile of our whole model (--compile), activation
checkpointing per block (--ac), and MFU with FLOPs/token = 6*N_matmul + 12*L*d*T (PaLM,
appendix B). A row that runs out of memory prints OOM instead of stopping the table.

    python bench/train_throughput.py                       # CPU, tiny preset
    python bench/train_throughput.py --preset small-125m --seq-len 2048 --batch 8 --compile   # GPU
    python bench/train_throughput.py --preset index-1.9b --seq-len 32768 --batch 1 --ac --rows fused   # 32K
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from lmforge import config
from lmforge.model import ModelConfig, Transformer
from lmforge.model.convert import hf_config_dict
from lmforge.model.flops import flops_per_token, peak_flops


ROWS = ["hf", "causal", "causal_sdpa", "packed", "packed_sdpa", "fused", "foreach_adam"]


def packed_doc_ids(batch: int, seq_len: int, mean_doc: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random document boundaries (about `mean_doc` tokens each); returns (doc_ids, position_ids)."""
    doc_ids = torch.zeros(batch, seq_len, dtype=torch.long)
    pos = torch.zeros(batch, seq_len, dtype=torch.long)
    for b in range(batch):
        t, d = 0, 0
        while t < seq_len:
            n = int(torch.randint(mean_doc // 2, mean_doc * 3 // 2 + 1, (1,), generator=gen))
            n = min(n, seq_len - t)
            doc_ids[b, t:t + n] = d
            pos[b, t:t + n] = torch.arange(n)
            t, d = t + n, d + 1
    return doc_ids, pos


def timed_steps(step_fn, warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def make_step(model, forward, batch_kwargs, labels, device, vocab, fused=False, fused_adam=True):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                            **({"fused": True} if fused_adam and device.type == "cuda" else {"foreach": True}))
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())

    def step():
        with amp:
            if fused:
                loss = forward(**batch_kwargs, labels=labels)[0] / labels.numel()
            else:
                logits = forward(**batch_kwargs)
        if not fused:
            loss = torch.nn.functional.cross_entropy(logits[..., :vocab].float().flatten(0, 1), labels.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mean-doc", type=int, default=200, help="mean packed document length")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--compile-hf", action="store_true",
                    help="torch.compile the transformers model too (a compiled-vs-compiled hf row)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing per block")
    ap.add_argument("--layers", type=int, default=None, help="override the preset's n_layers (memory)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--json", default=None, help="append one JSON line per row to this file")
    args = ap.parse_args()
    rows_wanted = args.rows.split(",")
    unknown = set(rows_wanted) - set(ROWS)
    if unknown:
        ap.error(f"--rows: unknown {sorted(unknown)} (known: {','.join(ROWS)})")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    overrides = {"n_layers": args.layers} if args.layers else {}
    cfg = config.from_dict(ModelConfig, {"preset": args.preset, "max_seq_len": max(args.seq_len, 64), **overrides})
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len + 1), generator=gen)
    inputs, labels = ids[:, :-1].to(device), ids[:, 1:].to(device)
    doc_ids, pos = (t.to(device) for t in packed_doc_ids(args.batch, args.seq_len, args.mean_doc, gen))
    tokens = args.batch * args.seq_len
    fpt = flops_per_token(cfg, args.seq_len)
    peak = peak_flops(device)

    causal = {"input_ids": inputs}
    packed = {"input_ids": inputs, "position_ids": pos, "doc_ids": doc_ids}

    rows = []
    def bench(name, model, forward, kwargs, fused=False, fused_adam=True, backend=None):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        old = cfg.attn_backend
        if backend:
            object.__setattr__(model.cfg, "attn_backend", backend)
        try:
            s = timed_steps(make_step(model, forward, kwargs, labels, device, cfg.vocab_size, fused, fused_adam),
                            args.warmup, args.steps, device)
        except torch.OutOfMemoryError:
            rows.append((name, None, None, None))
            return
        finally:
            if backend:
                object.__setattr__(model.cfg, "attn_backend", old)
            model.zero_grad(set_to_none=True)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        rows.append((name, tokens / s, tokens / s * fpt / peak if peak else None, mem))

    if "hf" in rows_wanted:
        from transformers import LlamaConfig, LlamaForCausalLM
        hf_cfg = hf_config_dict(cfg)
        hf_cfg.pop("architectures", None)
        torch.manual_seed(0)
        hf = LlamaForCausalLM(LlamaConfig(**{**hf_cfg, "attn_implementation": "sdpa"})).to(device)
        hf_fwd = torch.compile(hf) if args.compile_hf else hf
        bench("hf-llama (causal, sdpa" + (", compiled)" if args.compile_hf else ")"), hf,
              lambda input_ids: hf_fwd(input_ids=input_ids).logits, causal)
        del hf
    ours = Transformer(cfg).to(device)
    ours.activation_checkpointing = args.ac
    fwd = torch.compile(ours) if args.compile else ours
    table = {
        "causal": lambda: bench("lmforge (causal)", ours, fwd, causal),
        "causal_sdpa": lambda: bench("lmforge (causal, sdpa)", ours, fwd, causal, backend="sdpa"),
        "packed": lambda: bench("lmforge (packed)", ours, fwd, packed),
        "packed_sdpa": lambda: bench("lmforge (packed, sdpa mask)", ours, fwd, packed, backend="sdpa"),
        "fused": lambda: bench("lmforge (packed, fused CE)", ours, fwd, packed, fused=True),
        "foreach_adam": lambda: bench("lmforge (packed, fused CE, foreach AdamW)", ours, fwd, packed, fused=True,
                                      fused_adam=False),
    }
    for key in ROWS[1:]:
        if key in rows_wanted:
            table[key]()
    report(args, cfg, fpt, peak, rows, device)


def report(args, cfg, fpt, peak, rows, device) -> None:
    base = rows[0][1]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndevice={device} ({name}) torch={torch.__version__} preset={args.preset} "
          f"layers={cfg.n_layers} params={cfg.n_params() / 1e6:.1f}M seq_len={args.seq_len} batch={args.batch} "
          f"compile={args.compile} compile_hf={args.compile_hf} ac={args.ac}")
    print(f"FLOPs/token = 6*N_matmul + 12*L*d*T = {fpt / 1e6:.1f} MFLOP" + (f", peak {peak / 1e12:.0f} TFLOP/s" if peak else ""))
    print(f"{'model':<44}{'tokens/s':>12}{'vs first':>9}{'MFU':>8}{'peak GiB':>10}")
    for row, tps, mfu, mem in rows:
        if tps is None:
            print(f"{row:<44}{'OOM':>12}")
            continue
        ratio = f"{tps / base:.2f}x" if base else "-"
        print(f"{row:<44}{tps:>12.0f}{ratio:>9}{(f'{mfu * 100:.1f}%' if mfu is not None else '-'):>8}"
              f"{(f'{mem:.1f}' if mem is not None else '-'):>10}")
    if args.json:
        with open(args.json, "a") as f:
            for row, tps, mfu, mem in rows:
                f.write(json.dumps({"device": name, "preset": args.preset, "layers": cfg.n_layers,
                                    "seq_len": args.seq_len, "batch": args.batch, "compile": args.compile,
                                    "compile_hf": args.compile_hf, "mean_doc": args.mean_doc,
                                    "ac": args.ac, "row": row, "tokens_per_s": tps, "mfu": mfu,
                                    "peak_gib": mem}) + "\n")

if __name__ == "__main__":
    main()
