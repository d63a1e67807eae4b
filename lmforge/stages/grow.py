"""`lmforge grow`: depth up-scaling of a checkpoint (Yi-9B / SOLAR).

    lmforge grow --set init.from_checkpoint=runs/pretrain --set data=runs/tokens --set out_dir=runs/grow
    lmforge pretrain cfg.yaml --set init.from_checkpoint=runs/grow --set model.n_layers=<new count>

Writes into out_dir: similarity.json / similarity.md / similarity.png (cosine similarity of
each layer's input and output on calibration text), grow.json (block and layer mapping),
model.json (the new model config), checkpoints/step-0 (lmforge.checkpoint format,
run_config "model" = the new config, no optimizer state), tokenizer/ and DONE.json.
The work is one pass, so an interrupted run is simply redone.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError, check, to_dict
from lmforge.device import resolve_device
from lmforge.grow import depth
from lmforge.io.atomic import save_figure, write_json, write_text
from lmforge.model.config import ModelConfig
from lmforge.model.load import load_weights, tokenizer_dir_of
from lmforge.model.transformer import Transformer
from lmforge.shards import TokenDataset
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.lm_effects import grow_effect
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import InitConfig, source_checkpoint
from lmforge.stagekit.tokendata import open_tokens
from lmforge.train.checkpoint import save as save_checkpoint
from lmforge.train.loader import PackedLoader, SequentialDocs


GROW_SEED = 0   # the RNG state step-0 records (nothing random happens in grow)


@dataclass
class GrowConfig:
    init: InitConfig = field(default_factory=InitConfig)   # init.from_checkpoint: the model to grow
    data: str = ""                 # token dataset for calibration (its val split, else train); "" = none
    out_dir: str = "runs/grow"
    block: list[int] | None = None  # [start, end) layers to duplicate (Yi-9B: [12, 28]); None = automatic
    add_layers: int = 0            # size of the automatic block; 0 = half the layers (Yi: 16 of 32)
    calib_tokens: int = 32768      # calibration tokens for the similarity measure
    seq_len: int = 0               # calibration row length; 0 = min(model max_seq_len, 2048)
    micro_batch_size: int = 4
    device: str = "auto"

    def __post_init__(self):
        check(bool(self.init.from_checkpoint), "init.from_checkpoint", "set the checkpoint (or run dir) to grow")
        if self.block is not None:
            check(len(self.block) == 2 and 0 <= self.block[0] < self.block[1], "block",
                  f"expected [start, end) with 0 <= start < end, got {self.block}")
            check(self.add_layers in (0, self.block[1] - self.block[0]), "add_layers",
                  f"{self.add_layers} disagrees with block {self.block} ({self.block[1] - self.block[0]} layers)")
        else:
            check(bool(self.data), "data", "set calibration data (token dataset) or give block=[start, end]")
        for name in ("add_layers", "seq_len"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("calib_tokens", "micro_batch_size"):
            check(getattr(self, name) > 0, name, "must be > 0")


def validate(cfg: GrowConfig) -> tuple[Path, ModelConfig, list[TokenDataset]]:
    """Everything that can be checked before loading weights; ConfigError naming the key."""
    step_dir, mcfg = source_checkpoint(cfg.init.from_checkpoint, load_optimizer=cfg.init.load_optimizer)
    n = mcfg.n_layers
    if cfg.block is not None and cfg.block[1] > n:
        raise ConfigError(f"block: {cfg.block} is outside the {n} layers of {step_dir} (indices 0..{n - 1}, "
                          f"end exclusive)")
    if cfg.add_layers > n:
        raise ConfigError(f"add_layers: {cfg.add_layers} > the {n} layers of {step_dir}")
    if cfg.seq_len > mcfg.max_seq_len:
        raise ConfigError(f"seq_len: {cfg.seq_len} exceeds the model's max_seq_len {mcfg.max_seq_len}")
    sets = []
    if cfg.data:
        # held-out text first, then the training documents if more calibration is wanted
        sets = [d for d in (open_tokens(cfg.data, "val"), open_tokens(cfg.data, "train")) if d.n_docs]
        if not sets:
            raise ConfigError(f"data: {cfg.data} has no documents")
        if sets[0].vocab_size > mcfg.vocab_size:
            raise ConfigError(f"data: vocabulary {sets[0].vocab_size} exceeds the model's {mcfg.vocab_size}")
    return step_dir, mcfg, sets


def calibration_batches(sets: list[TokenDataset], seq_len: int, batch_size: int, n_tokens: int):
    """Packed rows (documents in order, doc masks and position resets) up to ~n_tokens tokens."""
    seen = 0
    for ds in sets:
        loader = PackedLoader(ds, seq_len, batch_size, SequentialDocs(np.arange(ds.n_docs)))
        while seen < n_tokens:
            batch = loader.next_batch()
            if batch is None:
                break
            seen += int((batch["doc_ids"] >= 0).sum())
            yield batch


def write_similarity(out: Path, sims: list[float], block: tuple[int, int] | None, size: int,
                     why: dict | None = None) -> dict:
    scores = depth.block_scores(sims, size) if size else []
    info = {"layers": [{"layer": i, "cosine": s} for i, s in enumerate(sims)],
            "block_size": size, "block_scores": scores, "chosen_block": list(block) if block else None,
            **(why or {})}    # how the block was chosen: the run report's table shows it
    write_json(out / "similarity.json", info)
    lines = ["| layer | cos(input, output) | duplicated |", "|---:|---:|:---:|"]
    for i, s in enumerate(sims):
        mark = "yes" if block and block[0] <= i < block[1] else ""
        lines.append(f"| {i} | {s:.4f} | {mark} |")
    write_text(out / "similarity.md", "\n".join(lines) + "\n")
    plot_similarity(out / "similarity.png", sims, block)
    return info


def why_this_block(sims: list[float] | None, block: tuple[int, int], size: int, given: bool) -> dict:
    """How the block was chosen, with the scores that decided it: the configured block's rank among
    every candidate of its size, or the automatic choice (the highest mean cosine) and the runner-up."""
    if sims is None:
        return {"chosen_by": "config (no calibration data: not measured)"}
    scores = depth.block_scores(sims, size)
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    best = ranked[0]
    out = {"chosen_by": "config" if given else "similarity: the highest mean cos(input, output) of "
                                                  f"the {len(scores)} blocks of {size} layers",
           "candidates": len(scores), "rank": ranked.index(block[0]) + 1,
           "best_block": [best, best + size], "best_mean_cosine": scores[best]}
    if len(ranked) > 1:
        nxt = ranked[1] if ranked[0] == block[0] else ranked[0]
        out.update(runner_up=[nxt, nxt + size], runner_up_mean_cosine=scores[nxt])
    return out


def plot_similarity(path: Path, sims: list[float], block: tuple[int, int] | None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, len(sims) * 0.25), 3.2))
    ax.plot(range(len(sims)), sims, marker="o", ms=3)
    if block:
        ax.axvspan(block[0] - 0.5, block[1] - 0.5, alpha=0.2, color="tab:orange", label="duplicated block")
        ax.legend(loc="lower right")
    ax.set_xticks(range(0, len(sims), max(1, len(sims) // 24)))
    ax.set_xlabel("layer")
    ax.set_ylabel("cos(input, output)")
    ax.set_title("Layer input/output cosine similarity")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def body(cfg: GrowConfig, progress: bool = True) -> dict:
    out = Path(cfg.out_dir)
    step_dir, mcfg, sets = validate(cfg)
    # grow trains nothing, but its step-0 records the RNG state (rng.pt, trainer.json) like any
    # checkpoint: fixed here, so two runs write identical checkpoints (torch's own start-up seed is random)
    torch.manual_seed(GROW_SEED)
    np.random.seed(GROW_SEED)
    random.seed(GROW_SEED)
    device = resolve_device(cfg.device)
    model = Transformer(mcfg).to(device)
    load_weights(step_dir, model)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    size = (cfg.block[1] - cfg.block[0]) if cfg.block else (cfg.add_layers or max(1, mcfg.n_layers // 2))
    sims, n_calib = None, 0
    if sets:
        T = cfg.seq_len or min(mcfg.max_seq_len, 2048)
        batches = tqdm(calibration_batches(sets, T, cfg.micro_batch_size, cfg.calib_tokens),
                       desc="grow: layer similarity", unit="batch", disable=not progress)
        sims, n_calib = depth.layer_similarity(model, batches)
    block = tuple(cfg.block) if cfg.block else depth.choose_block(sims, size)
    if sims is not None:
        write_similarity(out, sims, block, size, why_this_block(sims, block, size, given=cfg.block is not None))

    grown = depth.grow_model(model.cpu(), *block)
    mapping = depth.layer_mapping(mcfg.n_layers, *block)
    new_cfg = grown.cfg
    state = {"config": {**to_dict(cfg), "model": to_dict(new_cfg)}, "objective_name": "grow",
             "source": str(step_dir), "tokens_seen": 0, "bad_steps": 0}
    path = save_checkpoint(out / "checkpoints", 0, grown, None, state)
    ckpt.copy_tokenizer(tokenizer_dir_of(step_dir), out)
    write_json(out / "model.json", to_dict(new_cfg))
    grow_info = {"source": str(step_dir), "block": list(block), "n_layers_before": mcfg.n_layers,
                 "n_layers_after": new_cfg.n_layers, "mapping": mapping,
                 "block_mean_cosine": (sum(sims[block[0]:block[1]]) / size) if sims else None,
                 **why_this_block(sims, block, size, given=cfg.block is not None)}
    write_json(out / "grow.json", grow_info)
    summary = {**{k: v for k, v in grow_info.items() if k != "mapping"}, "checkpoint": str(path),
               "similarity": [round(s, 6) for s in sims] if sims else None,
               "calibration_tokens": n_calib,
               "continue_with": [f"init.from_checkpoint={out}", f"model.n_layers={new_cfg.n_layers}"]}
    if cfg.data:   # the pre-growth model vs the grown one on held-out windows (the function should be kept)
        effect = grow_effect(step_dir, grown.to(device), cfg.data, cfg.seq_len or min(mcfg.max_seq_len, 2048))
        if effect:
            summary["effect"] = effect
    return summary


def recipe_check(checker, st, cfg: GrowConfig) -> Facts:
    """The block fits the source model; the grown model is the source's, deeper."""
    source = checker.model_of(cfg.init.from_checkpoint)
    if source is None:
        return Facts()
    n = source.n_layers
    if cfg.block is not None and cfg.block[1] > n:
        checker.problem(st, "block", f"{cfg.block} is outside the {n} layers of the source model")
        return Facts()
    size = (cfg.block[1] - cfg.block[0]) if cfg.block else (cfg.add_layers or max(1, n // 2))
    if size > n:
        checker.problem(st, "add_layers", f"{size} > the {n} layers of the source model")
    if cfg.seq_len:
        checker.check_len(st, "seq_len", cfg.seq_len, source)
    return Facts(model=dataclasses.replace(source, n_layers=n + size))


STAGE = Stage(kind="grow", config=GrowConfig, body=body,
              help="depth up-scaling: measure layer similarity, duplicate a block of layers",
              example="init.from_checkpoint=runs/pretrain",
              outputs=("checkpoints/step-0", "tokenizer", "grow.json", DONE), check=recipe_check)
run = STAGE.run
