"""`lmforge sftgrid`: task-mix grid search for SFT (Yi chose its task-mix ratios by grid search).

    lmforge sftgrid --data runs/sftdata/sft.jsonl --set init.from_checkpoint=runs/pretrain \\
        --set out_dir=runs/sftgrid --set 'weights={code: [1, 3], chat: [1, 3]}' --set size=2000 \\
        --set max_steps=200

Conversations are grouped by task (`task_key`, default the `curation.task` that `lmforge
sftdata` writes; else the file's stem). Each task holds out `heldout` conversations. Every
grid point (a share per task: the product of `weights`, or the explicit `points`) gets
`size` training conversations in its proportions (lmforge.align.task_mix), and one short
SFT from the same starting checkpoint with the same settings, trained exactly as `lmforge
sft` trains (the stage kit's build_sft_trainer; the SFT keys below are `lmforge sft`'s).
Each point is then evaluated per task: held-out reply loss (nats per reply token, as
lmforge.eval.judge computes it) and, for tasks given an MCQ file, multiple-choice
accuracy. The best point is chosen by `rule` (task_mix.RULES, stated in grid.json).

out_dir: heldout.jsonl (the held-out conversations), points/NN/ (data.jsonl, the SFT run,
heldout.json: its evaluation), grid.json (every point, its
metrics, the rule and the choice), best.jsonl (the best point's training conversations),
best_mix.json (its shares: use them for the full SFT), DONE.json. Points already trained
and evaluated are kept when an interrupted search is rerun.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.align import task_mix
from lmforge.align.curate import read_items
from lmforge.align.formats import DataFile
from lmforge.config import ConfigError, check, to_dict
from lmforge.io.atomic import atomic_path, read_json, write_json, write_jsonl
from lmforge.io.documents import ErrorSink
from lmforge.stagekit.conversations import CHAT_TRAIN, MixConfig, build_sft_trainer
from lmforge.stagekit.runner import check_steps_unset, reject_sink, run_trainer_stage, stage_defaults
from lmforge.stagekit.source import InitConfig
from lmforge.stagekit.stage import DONE, Arg, Stage
from lmforge.train.trainer import TrainConfig


@dataclass
class SFTGridConfig:
    data: list[str | DataFile] = field(default_factory=list)   # conversation files (lmforge.align.formats)
    out_dir: str = "runs/sftgrid"
    task_key: str = "curation.task"   # dotted key of a record's task (sftdata writes curation.task)
    weights: dict[str, list[float]] = field(default_factory=dict)    # task -> weights; grid = product
    points: list[dict[str, float]] = field(default_factory=list)     # or explicit points (task -> weight)
    size: int = 0                  # training conversations per point (0: all training conversations)
    heldout: int = 20              # held-out conversations per task
    mcq: dict[str, str] = field(default_factory=dict)                # task -> MCQ jsonl (lmforge eval format)
    mcq_shots: int = 0             # few-shot examples per MCQ item
    rule: Literal["mean_loss", "max_loss", "mcq"] = "mean_loss"   # how the best point is chosen; ties: earlier point
    keep_checkpoints: Literal["all", "best", "none"] = "best"   # which points keep their SFT checkpoint
    seed: int = 0                  # sampling of the held-out and the per-point training sets
    # the SFT of each point: `lmforge sft`'s keys and defaults
    init: InitConfig = field(default_factory=InitConfig)
    tokenizer: str = ""            # tokenizer folder ("": the one beside the checkpoint)
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: int = 1                # SFT epochs per point
    max_steps: int = 0             # cap on steps per point (0: all epochs)
    max_turns: int = 8             # drop conversations with more assistant turns (0 = keep all)
    system_prompt: str = ""        # default system prompt for conversations without one
    neftune_alpha: float = 0.0     # NEFTune noise on embeddings (0: off)
    mix: MixConfig = field(default_factory=MixConfig)
    val_fraction: float = 0.0      # conversations of each point held out for its val/sft_loss

    @classmethod
    def _base(cls, data):
        return stage_defaults(data, CHAT_TRAIN)

    def __post_init__(self):
        check(len(self.data) > 0, "data", "give at least one conversation jsonl file")
        check(bool(self.init.from_checkpoint), "init.from_checkpoint", "every grid point starts from this checkpoint")
        check(bool(self.weights) != bool(self.points), "weights", "give either weights (a product grid) or points")
        for t, ws in self.weights.items():
            check(bool(ws) and all(w >= 0 for w in ws), f"weights.{t}", "a non-empty list of weights >= 0")
        check(self.size >= 0, "size", "must be >= 0 (0 = all training conversations)")
        check(self.heldout >= 1, "heldout", "must be >= 1")
        check(self.rule != "mcq" or bool(self.mcq), "rule", "rule mcq needs mcq files (mcq.TASK=FILE)")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = all epochs)")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check_steps_unset(self.train)


def _tasks(cfg: SFTGridConfig, out: Path) -> dict[str, list[dict]]:
    """Conversation records by task, in input order (malformed lines to rejects.jsonl)."""
    with reject_sink(out) if _is_main() else ErrorSink(None) as errors:
        try:
            items, _ = read_items(cfg.data, errors, cfg.task_key)
        except FileNotFoundError as e:
            raise ConfigError(f"data: {e}") from None
    by_task: dict[str, list[dict]] = {}
    for it in items:
        if cfg.max_turns and _assistant_turns(it.rec) > cfg.max_turns:
            continue   # SFT would drop it (too_many_turns): a point must not draw what cannot train
        by_task.setdefault(it.task, []).append(it.rec)
    named = set(cfg.weights) | {t for p in cfg.points for t in p} | set(cfg.mcq)
    unknown = sorted(named - set(by_task))
    if unknown:
        raise ConfigError(f"weights: task {unknown[0]!r} is not in the data (tasks: {', '.join(sorted(by_task))})")
    return by_task


def _assistant_turns(rec: dict) -> int:
    msgs = rec.get("messages")
    return sum(1 for m in msgs if isinstance(m, dict) and m.get("role") == "assistant") if isinstance(msgs, list) else 0


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    """Under torchrun every rank trains each point (FSDP); wait until rank 0's checkpoint is whole."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _evaluate(point_dir: Path, held: dict[str, list[dict]], cfg: SFTGridConfig, progress: bool) -> dict:
    """Held-out reply loss per task (and MCQ accuracy where given) of a point's final model."""
    import torch

    from lmforge.eval.judge import heldout_loss
    from lmforge.eval.mcq import evaluate_mcq, load_items
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of
    from lmforge.device import resolve_device
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info

    model, step_dir = load_checkpoint(point_dir, resolve_device(cfg.train.device))
    tok_dir = tokenizer_dir_of(step_dir)
    tok, pad = load_tokenizer(tok_dir), tokenizer_info(tok_dir).get("pad_id") or 0
    res = {"checkpoint": str(step_dir), "heldout": {}, "mcq": {}}
    for t, recs in held.items():
        convs = [r["messages"] for r in recs]
        res["heldout"][t] = heldout_loss(model, tok, convs, max_len=model.cfg.max_seq_len, pad_id=pad)
    for t, path in cfg.mcq.items():
        loaded = load_items(path)
        if not loaded.items:
            raise ConfigError(f"mcq.{t}: no usable items in {path} ({'; '.join(loaded.errors[:2])})")
        r = evaluate_mcq(model, tok, loaded.items, shots=cfg.mcq_shots, seed=cfg.seed, progress=progress)
        res["mcq"][t] = {k: r[k] for k in ("n", "acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "chance")}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return res


def run_point(cfg: SFTGridConfig, k: int, shares: dict[str, float], pools: dict, held: dict, size: int,
              progress: bool) -> dict:
    """Train (or skip) and evaluate (or read back) grid point k."""
    d = Path(cfg.out_dir) / "points" / f"{k:02d}"
    done = d / "heldout.json"
    if done.is_file():
        return read_json(done)
    recs, counts = task_mix.point_data(pools, shares, size, cfg.seed)
    data = d / "data.jsonl"
    write_jsonl(data, recs)   # every rank writes the same file (atomically), then reads its own
    pcfg = dataclasses.replace(cfg, out_dir=str(d), data=[str(data)])
    if progress:
        print(f"sftgrid point {k}: {task_mix.label(shares)} ({len(recs)} conversations)")
    summary = run_trainer_stage(pcfg, build_sft_trainer, progress)
    _barrier()
    res = {"point": k, "shares": shares, "counts": counts, "label": task_mix.label(shares),
           "train": {key: summary.get(key) for key in ("step", "loss", "tokens_seen") if key in summary},
           **_evaluate(d, held, cfg, progress and _is_main())}
    if _is_main():
        write_json(done, res)
    return res


def winner_effect(results: list[dict], best: int, rule: str) -> dict | None:
    """The winner against the runner-up (the next best point with different shares: 1:1 and
    2:2 are one mix) on the same held-out conversations, paired per conversation: is the
    choice beyond noise? (Each conversation's nats per reply token; the rule's mean_loss
    weights tokens within a task, so `before`/`after` can differ from the scores slightly.)"""
    from lmforge.eval.effect import paired_effect

    def shares(r):
        total = sum(r["shares"].values()) or 1.0
        return tuple(sorted((t, round(v / total, 6)) for t, v in r["shares"].items()))

    order = sorted(range(len(results)), key=lambda i: (task_mix.rule_key(results[i], rule), i))
    runner = next((i for i in order if shares(results[i]) != shares(results[best])), None)
    if runner is None or any("per_conversation" not in v for r in (results[best], results[runner])
                             for v in r["heldout"].values()):
        return None
    items = lambda r: [x for t in sorted(r["heldout"]) for x in r["heldout"][t]["per_conversation"]]  # noqa: E731
    return paired_effect("held-out reply loss: runner-up mix -> chosen mix (nats/token)", items(results[runner]),
                         items(results[best]), False, winner=results[best]["label"],
                         runner_up=results[runner]["label"])


def body(cfg: SFTGridConfig, progress: bool = True) -> dict:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_task = _tasks(cfg, out)
    tasks = sorted(by_task)
    try:
        points = task_mix.grid_points(tasks, cfg.weights or None, cfg.points or None)
        pools, held = task_mix.split_heldout(by_task, cfg.heldout, cfg.seed)
    except ValueError as e:
        raise ConfigError(f"{'points' if cfg.points else 'weights'}: {e}") from None
    if not points:
        raise ConfigError("weights: the grid has no point with a positive weight")
    if _is_main():
        write_jsonl(out / "heldout.jsonl", [r for t in tasks for r in held[t]])
    size = cfg.size or sum(len(v) for v in pools.values())
    results = [run_point(cfg, k, p, pools, held, size, progress) for k, p in enumerate(points)]
    best = task_mix.choose(results, cfg.rule)
    for r in results:
        r["score"] = list(task_mix.rule_key(r, cfg.rule))
    summary = {"best": best, "best_label": results[best]["label"], "rule": cfg.rule, "points": len(results),
               "best_score": results[best]["score"], "grid": str(out / "grid.json"),
               "best_data": str(out / "best.jsonl")}
    effect = winner_effect(results, best, cfg.rule)
    if effect:
        summary["effect"] = effect
    if not _is_main():
        return summary
    grid = {"tasks": tasks, "rule": cfg.rule, "rule_text": task_mix.RULES[cfg.rule], "best": best,
            "best_label": results[best]["label"], "best_shares": results[best]["shares"], "size": size,
            "heldout_per_task": cfg.heldout, "points": results,
            "axes": {t: cfg.weights[t] for t in tasks if t in cfg.weights and len(cfg.weights[t]) > 1},
            "config": to_dict(cfg)}
    write_json(out / "grid.json", grid)
    with atomic_path(out / "best.jsonl") as tmp:
        shutil.copyfile(out / "points" / f"{best:02d}" / "data.jsonl", tmp)
    write_json(out / "best_mix.json", {"shares": results[best]["shares"], "rule": cfg.rule,
                                       "label": results[best]["label"]})
    if cfg.keep_checkpoints != "all":
        for r in results:
            if cfg.keep_checkpoints == "none" or r["point"] != best:
                shutil.rmtree(out / "points" / f"{r['point']:02d}" / "checkpoints", ignore_errors=True)
    return summary


SMOKE_MAX_TURNS, SMOKE_HELDOUT = 2, 4


def smoke_settings(cfg: SFTGridConfig, sizes: dict) -> SFTGridConfig:
    """The smoke corpus leaves a task only a handful of conversations (9 Chinese ones in the tiny
    smoke run), and the smoke context (128 tokens, a 1024-token vocabulary) holds none of its
    multi-turn Chinese dialogs: after 8 were held out, a Chinese-only point drew all its rows from
    the one left, a 4-turn dialog too long to train on. The smoke grid holds out at most 4 per task
    and keeps conversations of at most two assistant turns."""
    turns = SMOKE_MAX_TURNS if not cfg.max_turns else min(cfg.max_turns, SMOKE_MAX_TURNS)
    return dataclasses.replace(cfg, max_turns=turns, heldout=min(cfg.heldout, SMOKE_HELDOUT))


STAGE = Stage(kind="sftgrid", config=SFTGridConfig, body=body, inputs=("data",), distributed=True,   # each point trains
              help="task-mix grid search: one short SFT per mix, the best by held-out loss",
              example="weights={code: [1, 3], chat: [1, 3]}",
              args=(Arg("--data", "data", "conversation jsonl with a task per record (task_key), added to `data` "
                        "(repeatable)", append=True, metavar="JSONL"),),
              outputs=("grid.json", "best.jsonl", "best_mix.json", DONE), smoke=smoke_settings)
run = STAGE.run
