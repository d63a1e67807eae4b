"""Issue 34: per-domain held-out loss before and after SFT at two learning rates (forgetting).

    lmforge run scripts/sft_lr_probe.yaml --set out_dir=RUN
    python scripts/sft_lr_probe.py RUN [seq_len]

For each domain of RUN/tokens' val split: every consecutive seq_len-token window of its documents
(the tiny split has 20 short zh / instruct documents but 2-3 long prose / code ones), scored by
RUN/pretrain (the decayed base), RUN/sft_hi (lr 3e-4) and RUN/sft_lo (lr 3e-5); prints the
mean loss per token and each SFT's change, paired per window, +- 2 standard errors
(lmforge.eval.effect.paired_effect).
"""
import sys
from pathlib import Path

import numpy as np

from lmforge.eval.effect import mean_target_nll, paired_effect
from lmforge.model.load import load_checkpoint
from lmforge.shards import TokenDataset


def main(run: Path, seq_len: int = 256) -> None:
    val = TokenDataset(run / "tokens", "val")
    models = {name: load_checkpoint(run / name)[0] for name in ("pretrain", "sft_hi", "sft_lo")}
    print(f"{'domain':10} {'wins':>4} {'base':>7} {'sft 3e-4':>9} {'change +- 2se':>16} {'sft 3e-5':>9} {'change +- 2se':>16}")
    for d, name in enumerate(val.domain_names):
        docs = [i for i in range(val.n_docs) if val.doc_domain[i] == d]
        spans = [(i, a) for i in docs for a in range(0, val.doc_len(i), seq_len) if val.doc_len(i) - a >= 16]
        if not spans:
            continue
        items = [(np.asarray(val.doc(i)[a:a + seq_len], dtype=np.int64),
                  np.arange(min(seq_len, val.doc_len(i) - a)) > 0) for i, a in spans]
        base = mean_target_nll(models["pretrain"], items)
        row = f"{name:10} {len(items):4d} {base.mean():7.3f}"
        for m in ("sft_hi", "sft_lo"):
            e = paired_effect("loss", base, mean_target_nll(models[m], items), False)
            row += f" {e['after']:9.3f} {e['delta']:+8.3f} +- {2 * e['stderr']:.3f}"
        print(row)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))
