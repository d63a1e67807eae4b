"""DPO reference precision on a device (issue 17 item 8): the margin at step 0 must be ~0.

The policy trains under autocast (bf16 on CUDA); the precomputed reference log-probs must go
through the same precision path, or the first steps push on rounding error. This builds a
randomly initialised model of a preset on the device, random preference pairs (prompt, then a
reply that is the target), and prints the step-0 margin three ways:
  - reference in the training precision (what `lmforge dpo` does): step0_check and the margin
    the training loss itself computes on the first micro-batch (with grad, as the loop runs it);
  - reference in fp32 under a bf16 policy (the bug the check guards against), for contrast.
As in the stage, the reference is precomputed in order, in batches of the micro-batch size,
while training micro-batches are shuffled: a pair meets other pairs (other padding, so other
kernels) in the two passes. The stage warns when the step-0 margin exceeds 1e-2 * beta.

    python bench/dpo_step0.py --device cuda --preset small-125m
    python bench/dpo_step0.py --device cpu --preset tiny          # CPU, bf16 autocast
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from lmforge import config
from lmforge.align.preference_data import Pair
from lmforge.device import autocast as autocast_context
from lmforge.model import ModelConfig, Transformer
from lmforge.train.objectives.dpo import DPOObjective, reference_logps, step0_check


def random_pairs(n: int, vocab: int, prompt_len: int, reply_len: int, seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)

    def seq():
        p = int(rng.integers(prompt_len // 2, prompt_len + 1))
        r = int(rng.integers(reply_len // 2, reply_len + 1))
        ids = rng.integers(0, vocab, p + r).astype(np.int32)
        return ids, np.arange(p + r) >= p

    return [Pair(*seq(), *seq()) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--ref-batch", type=int, default=None, help="default: --micro-batch (as the stage does)")
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--reply-len", type=int, default=160)
    ap.add_argument("--beta", type=float, default=0.1)
    args = ap.parse_args()
    args.ref_batch = args.ref_batch or args.micro_batch
    amp = torch.bfloat16
    cfg = config.from_dict(ModelConfig, {"preset": args.preset, "max_seq_len": args.prompt_len + args.reply_len})
    torch.manual_seed(0)
    model = Transformer(cfg).to(args.device)
    pairs = random_pairs(args.pairs, cfg.vocab_size, args.prompt_len, args.reply_len)
    rows = []
    for name, ref_amp in (("reference in bf16 autocast (lmforge dpo)", amp), ("reference in fp32 (the bug)", None)):
        ref = reference_logps(model, pairs, 0, args.ref_batch, args.device, autocast=ref_amp)
        obj = DPOObjective(pairs, args.micro_batch, 1, 0, 0, beta=args.beta, ref_logps=ref)
        check = step0_check(model, obj, args.device, amp)
        model.train()
        batch = {k: v.to(args.device) for k, v in obj.next_batch().items()}
        with autocast_context(args.device, amp):
            _, metrics = obj.loss(model, batch)
        model.zero_grad(set_to_none=True)
        loop_margin = float(metrics["margin_sum"]) / args.micro_batch
        rows.append((name, check["max_abs_logp_diff"], check["max_abs_margin"], loop_margin))
    dev = torch.cuda.get_device_name() if str(args.device).startswith("cuda") else "cpu"
    print(f"device={args.device} ({dev}) torch={torch.__version__} preset={args.preset} "
          f"params={cfg.n_params() / 1e6:.1f}M policy autocast=bf16 beta={args.beta} "
          f"micro-batch={args.micro_batch} ref-batch={args.ref_batch}")
    print(f"{'reference':<44}{'max |logp diff|':>16}{'max |margin|':>14}{'loop margin':>13}")
    for name, d, m, lm in rows:
        print(f"{name:<44}{d:>16.2e}{m:>14.2e}{lm:>13.2e}")


if __name__ == "__main__":
    main()
