"""Issue 34's DPO diagnosis: which synthetic pairs can a model learn from, and why the DPO loss
ends above ln 2 while accuracy is near a coin flip.

    python scripts/dpo_pair_kinds.py CHECKPOINT TOKENIZER_DIR CORPUS/dpo.jsonl \\
        '[{"lr": 5e-5, "steps": 30, "mbs": 4, "beta": 1.0}, {"lr": 5e-4, "steps": 30, "mbs": 4, "beta": 1.0}]'

Holds out 240 pairs (seeded), scores them with the starting model, then for each setting
trains a copy with DPO (frozen reference = the start, AdamW, cosine LR, clip 1.0, one pass over
fresh pairs as the stage does) and prints, on the held-out pairs: preference accuracy
(log p chosen > log p rejected) before -> after with its paired noise, the mean margin change
(= the mean DPO reward margin / beta), the reward accuracy (margin raised) per rejected kind
(other conversation's reply / truncated / word-shuffled) and the held-out DPO loss.
"""
import copy
import json
import sys
import time

import numpy as np
import torch

from lmforge.align.preference_data import encode_pair, normalise
from lmforge.eval.effect import paired_effect, target_logps
from lmforge.model.load import load_checkpoint
from lmforge.tokenizer.train import load_tokenizer
from lmforge.train.objectives.dpo import DPOObjective

KINDS = ("other", "truncated", "shuffled")


def main(ckpt: str, tokdir: str, pairs_file: str, settings: list[dict], held_n: int = 240, seq_len: int = 256):
    tok = load_tokenizer(tokdir)
    recs = [json.loads(line) for line in open(pairs_file, encoding="utf-8")]
    perm = np.random.default_rng(0).permutation(len(recs))
    kinds = [recs[i]["meta"]["rejected_kind"] for i in perm]
    pairs = []
    for i in perm:
        prompt, chosen, rejected, *_ = normalise(recs[i])
        pairs.append(encode_pair(tok, prompt, chosen, rejected))
    ok = [i for i, p in enumerate(pairs) if max(len(p.chosen), len(p.rejected)) <= seq_len]
    held, train = ok[:held_n], ok[held_n:]
    hk = np.array([kinds[i] for i in held])

    def margins(model):
        c, _ = target_logps(model, [(pairs[i].chosen, pairs[i].chosen_mask) for i in held])
        r, _ = target_logps(model, [(pairs[i].rejected, pairs[i].rejected_mask) for i in held])
        return c - r

    start, _ = load_checkpoint(ckpt)
    t0 = time.time()
    before = margins(start)
    print(f"before: held-out n={len(held)} acc {np.mean(before > 0):.3f}; by kind "
          + ", ".join(f"{k} {np.mean(before[hk == k] > 0):.2f} (n={np.sum(hk == k)})" for k in KINDS), flush=True)
    pad = tok.token_to_id("<|pad|>") or 0
    for s in settings:
        torch.manual_seed(0)
        policy, ref = copy.deepcopy(start).train(), copy.deepcopy(start)
        obj = DPOObjective([pairs[i] for i in train], s["mbs"], 1, 0, pad_id=pad, beta=s["beta"], reference=ref)
        opt = torch.optim.AdamW(policy.parameters(), lr=s["lr"], betas=(0.9, 0.95), weight_decay=0.0)
        losses, accs = [], []
        for step in range(s["steps"]):
            for g in opt.param_groups:
                g["lr"] = s["lr"] * 0.5 * (1 + np.cos(np.pi * step / s["steps"]))
            batch = obj.next_batch()
            loss, m = obj.loss(policy, batch)
            n = batch["pair_index"].numel()
            (loss / n).backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(m["dpo_loss_sum"]) / n)
            accs.append(float(m["accuracy_sum"]) / n)
        after = margins(policy)
        acc = paired_effect("acc", (before > 0).astype(float), (after > 0).astype(float), True)
        mg = paired_effect("margin", before, after, True)
        moved = after - before
        heldout_loss = float(np.mean(np.logaddexp(0.0, -s["beta"] * moved)))
        print(json.dumps(s), f"train loss last 7 steps {np.mean(losses[-7:]):.3f}, accuracy {np.mean(accs[-7:]):.2f} | "
              f"held-out accuracy {acc['before']:.3f} -> {acc['after']:.3f} ({acc['delta']:+.3f} +- "
              f"{2 * acc['stderr']:.3f}, {acc['verdict']}), margin {mg['delta']:+.2f} +- {2 * mg['stderr']:.2f} "
              f"({mg['verdict']}) | reward accuracy by kind "
              + ", ".join(f"{k} {np.mean(moved[hk == k] > 0):.2f}" for k in KINDS)
              + f" | held-out DPO loss {heldout_loss:.3f} (ln 2 = 0.693) [{time.time() - t0:.0f}s]", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
