"""`lmforge selfknow`: self-knowledge by RLCD pairs + C-RLFT training (StableLM 2).

    lmforge selfknow --set init.from_checkpoint=runs/dpo --set out_dir=runs/selfknow \\
                     --set sources.sft=corpus/sft.jsonl --set class_weights.sft=0.5

1. RLCD generation (lmforge.align.self_knowledge): the starting model answers each of
   `prompts` `samples_per_prompt` times with the `facts` in a few-shot system prompt
   (class "positive") and without (class "negative"). Written to out_dir/rlcd.jsonl
   (conversations with "class", without the facts prompt), out_dir/rlcd_pairs.jsonl
   (chosen = positive, rejected = negative: also usable by `lmforge dpo`) and
   out_dir/rlcd_stats.json; reused when the stage resumes.
2. C-RLFT (lmforge.train.objectives.crlft): SFT on those conversations plus any `sources`
   (class name -> conversation jsonl, one class per source), each conversation conditioned
   on its class tag (`tag_format`, at the start of the system message), each target token
   weighted by its class weight, plus `kl_coef` * KL(policy || starting model) per target.
   At inference, ask for the good class with its tag as the system prompt: "<class:positive>".
Same stage contract as `lmforge sft` (DONE.json, resume, tokenizer/, stats.json).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmforge.align.self_knowledge import DEFAULT_FACTS, DEFAULT_FEW_SHOT, DEFAULT_PROMPTS
from lmforge.config import ConfigError, check
from lmforge.device import resolve_device
from lmforge.io.atomic import read_json, write_json, write_jsonl
from lmforge.stagekit.conversations import CHAT_TRAIN, MixConfig, build_conversation_objective
from lmforge.stagekit.runner import check_steps_unset, reject_sink, run_trainer_stage, stage_defaults, start_fresh
from lmforge.stagekit.source import InitConfig, Source, load_source
from lmforge.train.trainer import TrainConfig, Trainer


# C-RLFT class weights (OpenChat: 1.0 for the expert source, 0.1 for the sub-optimal one)
DEFAULT_WEIGHTS = {"positive": 1.0, "negative": 0.1}


@dataclass
class SelfKnowConfig:
    out_dir: str = "runs/selfknow"
    init: InitConfig = field(default_factory=InitConfig)
    tokenizer: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    # RLCD generation
    facts: list[str] = field(default_factory=lambda: list(DEFAULT_FACTS))
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    few_shot: list[dict[str, str]] = field(default_factory=lambda: [dict(x) for x in DEFAULT_FEW_SHOT])
    samples_per_prompt: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95
    # C-RLFT
    sources: dict[str, str] = field(default_factory=dict)   # extra class name -> conversation jsonl
    class_weights: dict[str, float] = field(default_factory=dict)  # over DEFAULT_WEIGHTS; each source needs one
    tag_format: str = "<class:{name}>"
    kl_coef: float = 0.05
    epochs: int = 6                # StableLM 2: 6 epochs
    max_steps: int = 0
    max_turns: int = 8
    neftune_alpha: float = 0.0
    mix: MixConfig = field(default_factory=MixConfig)
    val_fraction: float = 0.0

    @classmethod
    def _base(cls, data):
        return stage_defaults(data, CHAT_TRAIN)

    def weights(self) -> dict[str, float]:
        return {**DEFAULT_WEIGHTS, **self.class_weights}

    def __post_init__(self):
        check(bool(self.init.from_checkpoint), "init.from_checkpoint", "self-knowledge starts from a checkpoint")
        check(bool(self.facts), "facts", "give at least one self-knowledge fact")
        check(bool(self.prompts), "prompts", "give at least one prompt")
        for i, ex in enumerate(self.few_shot):
            check(set(ex) == {"user", "assistant"}, f"few_shot[{i}]", "needs exactly the keys user and assistant")
        check(self.samples_per_prompt >= 1, "samples_per_prompt", "must be >= 1")
        check(self.max_new_tokens > 0, "max_new_tokens", "must be > 0")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        for name in self.sources:
            check(name in self.class_weights, f"class_weights.{name}", f"source {name!r} needs a class weight")
        for name, w in self.weights().items():
            check(w >= 0, f"class_weights.{name}", "must be >= 0")
        check("{name}" in self.tag_format, "tag_format", "must contain {name}")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0")
        check(self.max_turns >= 0, "max_turns", "must be >= 0")
        check(self.neftune_alpha >= 0, "neftune_alpha", "must be >= 0")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check_steps_unset(self.train)


def generate_rlcd(cfg: SelfKnowConfig, src: Source, progress: bool) -> tuple[Path, dict]:
    """out_dir/rlcd.jsonl (+ rlcd_pairs.jsonl, rlcd_stats.json); kept if already complete."""
    from lmforge.align.self_knowledge import rlcd_samples
    from lmforge.infer.generate import default_stop_ids, generate_ids
    from lmforge.model.load import load_checkpoint

    out = Path(cfg.out_dir)
    path, stats_path = out / "rlcd.jsonl", out / "rlcd_stats.json"
    if path.exists() and stats_path.exists():   # stats are written last: their presence marks completion
        return path, read_json(stats_path)
    out.mkdir(parents=True, exist_ok=True)
    model, _ = load_checkpoint(src.step_dir, resolve_device(cfg.train.device))
    stop = default_stop_ids(src.tok)

    def sample(prompts: list[list[int]], seed: int) -> list[list[int]]:
        return generate_ids(model, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_p=cfg.top_p, stop_ids=stop, seed=seed, pad_id=src.info["pad_id"])

    convs, pairs, stats = rlcd_samples(src.tok, cfg.prompts, cfg.facts, cfg.few_shot, cfg.samples_per_prompt,
                                       sample, cfg.train.seed, progress)
    write_jsonl(path, convs)
    write_jsonl(out / "rlcd_pairs.jsonl", pairs)
    write_json(stats_path, stats)
    return path, stats


def build(cfg: SelfKnowConfig, progress: bool = True) -> Trainer:
    from lmforge.model.load import load_checkpoint
    from lmforge.train.objectives.crlft import CRLFTObjective

    src = load_source(cfg.init, cfg.tokenizer)
    rlcd_path, rlcd_stats = generate_rlcd(cfg, src, progress)
    if not any(rlcd_stats.get(f"kept_{c}") for c in ("positive", "negative")) and not cfg.sources:
        raise ConfigError(f"prompts: the model gave only empty replies (see {cfg.out_dir}/rlcd_stats.json)")
    weights = cfg.weights()
    names = list(weights)
    classes = {n: i for i, n in enumerate(names)}
    path_classes = {str(Path(p)): name for name, p in cfg.sources.items()}
    reference = load_checkpoint(src.step_dir)[0] if cfg.kl_coef > 0 else None  # always the starting model
    with reject_sink(cfg.out_dir) as errors:
        objective, stats, steps = build_conversation_objective(
            cfg, [str(rlcd_path), *cfg.sources.values()], src, errors, progress, None, classes,
            [weights[n] for n in names], objective_cls=CRLFTObjective,
            load_kwargs={"path_classes": path_classes, "tag_format": cfg.tag_format},
            reference=reference, kl_coef=cfg.kl_coef, vocab_size=src.model_cfg.vocab_size)
    stats = {"rlcd": rlcd_stats, "classes": classes, **stats}
    return start_fresh(cfg, src, objective, steps, stats, progress)


def run(cfg: SelfKnowConfig, progress: bool = True) -> dict:
    return run_trainer_stage(cfg, build, progress)
