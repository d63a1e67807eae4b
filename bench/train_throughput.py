"""Training-step throughput: lmforge's model vs Hugging Face transformers' LlamaForCausalLM.

Both models get the same shape (converted config), the same random token batches and the
same AdamW step, in the same process, so the table's ratio is meaningful even on a noisy
machine. Rows:
  - hf-llama (causal):   transformers LlamaForCausalLM, SDPA attention, plain causal mask
                         (row `hf`; `hf_compiled`: the same model under torch.compile)
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
  - lmforge (packed, fused CE, Muon + AdamW) (row `muon`): the optimizer `train.optim.name: muon`
                         builds, to time Muon's Newton-Schulz step against AdamW's
  - lmforge (packed, fused CE, fp8 ...) (row `fp8`): a fresh copy with torchao float8 linears, the
                         layers `train.precision: fp8` converts (the count is printed); on a CPU
                         torchao's emulation (a code-path check, not a speed)
Rows run in the order --rows gives them, each printed (and appended to --json) as it is measured,
so a step stopped by a timeout keeps what it measured; the closing table compares each row with
the eager transformers row when there is one, else with the first row.
On CUDA: bf16 autocast, optional torch.compile of our whole model (--compile), activation
checkpointing per block (--ac), and MFU with FLOPs/token = 6*N_matmul + 12*L*d*T (PaLM,
appendix B). A row that runs out of memory prints OOM instead of stopping the table.

    python bench/train_throughput.py                       # CPU, tiny preset
    python bench/train_throughput.py --preset small-125m --seq-len 2048 --batch 8 --compile   # GPU
    python bench/train_throughput.py --preset index-1.9b --seq-len 32768 --batch 1 --ac --rows fused   # 32K
    python bench/train_throughput.py --preset large-1b --seq-len 2048 --batch 8 --compile \
        --rows fused,hf,hf_compiled,muon,fp8                 # GPU: compiled vs compiled, Muon, FP8
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
from lmforge.train import fp8
from lmforge.train.optim import OptimConfig, build_optimizer


ROWS = ["hf", "hf_compiled", "causal", "causal_sdpa", "packed", "packed_sdpa", "fused", "foreach_adam",
        "muon", "fp8"]
DEFAULT_ROWS = "hf,causal,causal_sdpa,packed,packed_sdpa,fused,foreach_adam"


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


def make_optimizer(model, optim: str, device: torch.device) -> torch.optim.Optimizer:
    """adamw: AdamW(fused) on CUDA, foreach elsewhere; foreach: AdamW(foreach); muon: what
    `train.optim.name: muon` builds (Muon on the blocks' matrices, fused AdamW on the rest)."""
    if optim == "muon":
        return build_optimizer(model, OptimConfig(name="muon", lr=1e-4))
    fused = optim == "adamw" and device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                             **({"fused": True} if fused else {"foreach": True}))


def make_step(model, forward, batch_kwargs, labels, device, vocab, fused=False, optim="adamw"):
    opt = make_optimizer(model, optim, device)
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


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mean-doc", type=int, default=200, help="mean packed document length")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing per block")
    ap.add_argument("--layers", type=int, default=None, help="override the preset's n_layers (memory)")
    ap.add_argument("--fp8-recipe", default="tensorwise", choices=fp8.RECIPES, help="torchao scaling of the fp8 row")
    ap.add_argument("--rows", default=DEFAULT_ROWS,
                    help=f"comma-separated rows, measured in this order (known: {','.join(ROWS)})")
    ap.add_argument("--json", default=None, help="append one JSON line per row to this file, as each is measured")
    args = ap.parse_args()
    args.rows = args.rows.split(",")
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        ap.error(f"--rows: unknown {sorted(unknown)} (known: {','.join(ROWS)})")
    return args


class Runner:
    """One shape, one batch of random tokens, and the rows measured on it in --rows order."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if args.device == "auto" else args.device))
        overrides = {"n_layers": args.layers} if args.layers else {}
        self.cfg = config.from_dict(ModelConfig, {"preset": args.preset, "max_seq_len": max(args.seq_len, 64),
                                                  **overrides})
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.cfg.vocab_size, (args.batch, args.seq_len + 1), generator=gen)
        inputs, self.labels = ids[:, :-1].to(self.device), ids[:, 1:].to(self.device)
        doc_ids, pos = (t.to(self.device) for t in packed_doc_ids(args.batch, args.seq_len, args.mean_doc, gen))
        self.causal = {"input_ids": inputs}
        self.packed = {"input_ids": inputs, "position_ids": pos, "doc_ids": doc_ids}
        self.tokens = args.batch * args.seq_len
        self.fpt = flops_per_token(self.cfg, args.seq_len)
        self.peak = peak_flops(self.device)
        self.name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.rows: list[tuple] = []
        self.models: dict = {}

    def header(self) -> None:
        a, cfg = self.args, self.cfg
        print(f"device={self.device} ({self.name}) torch={torch.__version__} preset={a.preset} "
              f"layers={cfg.n_layers} params={cfg.n_params() / 1e6:.1f}M seq_len={a.seq_len} batch={a.batch} "
              f"compile={a.compile} ac={a.ac}", flush=True)
        print(f"FLOPs/token = 6*N_matmul + 12*L*d*T = {self.fpt / 1e6:.1f} MFLOP"
              + (f", peak {self.peak / 1e12:.0f} TFLOP/s" if self.peak else ""), flush=True)

    def bench(self, row, model, forward, kwargs, fused=False, optim="adamw", backend=None) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        old = model.cfg.attn_backend if backend else None     # transformers' model has no .cfg
        if backend:
            object.__setattr__(model.cfg, "attn_backend", backend)
        try:
            step = make_step(model, forward, kwargs, self.labels, self.device, self.cfg.vocab_size, fused, optim)
            s = timed_steps(step, self.args.warmup, self.args.steps, self.device)
            mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            result = (row, self.tokens / s, self.tokens / s * self.fpt / self.peak if self.peak else None, mem)
        except torch.OutOfMemoryError:
            result = (row, None, None, None)
        finally:
            if backend:
                object.__setattr__(model.cfg, "attn_backend", old)
            model.zero_grad(set_to_none=True)
        self.rows.append(result)
        print_row(*result)          # as measured: a step stopped by its timeout keeps the rows before
        if self.args.json:
            write_json(self.args, self.cfg, self.name, *result)

    def hf_model(self):
        if "hf" not in self.models:
            from transformers import LlamaConfig, LlamaForCausalLM
            hf_cfg = hf_config_dict(self.cfg)
            hf_cfg.pop("architectures", None)
            torch.manual_seed(0)
            hf = LlamaForCausalLM(LlamaConfig(**{**hf_cfg, "attn_implementation": "sdpa"}))
            self.models["hf"] = hf.to(self.device)
        return self.models["hf"]

    def ours(self) -> tuple:
        """(model, forward): our model and what runs it (torch.compile of it with --compile)."""
        if "ours" not in self.models:
            torch.manual_seed(0)
            m = Transformer(self.cfg).to(self.device)
            m.activation_checkpointing = self.args.ac
            self.models["ours"] = m, (torch.compile(m) if self.args.compile else m)
        return self.models["ours"]

    def hf_row(self, compiled: bool) -> None:
        hf = self.hf_model()
        fwd = torch.compile(hf) if compiled else hf
        self.bench("hf-llama (causal, sdpa" + (", compiled)" if compiled else ")"), hf,
                   lambda input_ids: fwd(input_ids=input_ids).logits, self.causal)

    def fp8_row(self) -> None:
        """A fresh copy of our model with torchao's float8 linears (the trainer's plan); on a
        CPU torchao's emulation runs the same casts with fp32 matmuls (a code-path check, not a speed)."""
        recipe, emulate = self.args.fp8_recipe, self.device.type != "cuda"
        if not emulate:
            fp8.check_supported(self.device)
        torch.manual_seed(0)
        m = Transformer(self.cfg).to(self.device)
        m.activation_checkpointing = self.args.ac
        decisions = fp8.convert(m, recipe, emulate=emulate)
        print(fp8.summary(decisions, recipe) + (" (emulated on CPU)" if emulate else ""), flush=True)
        self.bench(f"lmforge (packed, fused CE, fp8 {recipe})", m, torch.compile(m) if self.args.compile else m,
                   self.packed, fused=True)

    def ours_row(self, row: str, packed: bool, **kw) -> None:
        self.bench(row, *self.ours(), self.packed if packed else self.causal, **kw)

    def run(self) -> None:
        table = {
            "hf": lambda: self.hf_row(False),
            "hf_compiled": lambda: self.hf_row(True),
            "causal": lambda: self.ours_row("lmforge (causal)", False),
            "causal_sdpa": lambda: self.ours_row("lmforge (causal, sdpa)", False, backend="sdpa"),
            "packed": lambda: self.ours_row("lmforge (packed)", True),
            "packed_sdpa": lambda: self.ours_row("lmforge (packed, sdpa mask)", True, backend="sdpa"),
            "fused": lambda: self.ours_row("lmforge (packed, fused CE)", True, fused=True),
            "foreach_adam": lambda: self.ours_row("lmforge (packed, fused CE, foreach AdamW)", True, fused=True,
                                                  optim="foreach"),
            "muon": lambda: self.ours_row("lmforge (packed, fused CE, Muon + AdamW)", True, fused=True,
                                          optim="muon"),
            "fp8": self.fp8_row,
        }
        uses = {"hf": {"hf", "hf_compiled"}, "ours": set(ROWS) - {"hf", "hf_compiled", "fp8"}}
        rows = self.args.rows
        for i, key in enumerate(rows):
            table[key]()
            for model, keys in uses.items():      # free a model after its last row (two 2B models need not fit)
                if model in self.models and not keys & set(rows[i + 1:]):
                    del self.models[model]
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()


def main() -> None:
    runner = Runner(parse_args())
    runner.header()
    runner.run()
    report(runner.rows)


def print_row(row, tps, mfu, mem, base=None) -> None:
    if tps is None:
        print(f"{row:<44}{'OOM':>12}", flush=True)
        return
    ratio = f"{tps / base:.2f}x" if base else "-"
    print(f"{row:<44}{tps:>12.0f}{ratio:>9}{(f'{mfu * 100:.1f}%' if mfu is not None else '-'):>8}"
          f"{(f'{mem:.1f}' if mem is not None else '-'):>10}", flush=True)


def report(rows) -> None:
    """The table again, each row against the eager transformers row where there is one, else the first."""
    base = next((r[1] for r in rows if r[0] == "hf-llama (causal, sdpa)"), rows[0][1] if rows else None)
    print(f"\n{'model':<44}{'tokens/s':>12}{'vs base':>9}{'MFU':>8}{'peak GiB':>10}")
    for r in rows:
        print_row(*r, base=base)


def write_json(args, cfg, device_name, row, tps, mfu, mem) -> None:
    with open(args.json, "a") as f:
        f.write(json.dumps({"device": device_name, "preset": args.preset, "layers": cfg.n_layers,
                            "seq_len": args.seq_len, "batch": args.batch, "compile": args.compile,
                            "mean_doc": args.mean_doc, "ac": args.ac, "row": row, "tokens_per_s": tps,
                            "mfu": mfu, "peak_gib": mem}) + "\n")


if __name__ == "__main__":
    main()
