"""`lmforge run RECIPE --smoke`: the whole recipe, every stage and branch, shrunk to minutes on CPU.

One set of factors is derived from the recipe and applied to every stage's typed config:

    length  L = min(1, 128 / the longest pretraining seq_len): every length-like value (sequence
            and context lengths, needle prompt lengths, long-document cutoffs, RoPE scaling's
            original length) is multiplied by L, so the long-context stage stays (say) 8x the
            pretraining length and the needle still probes past the base model's window.
    steps   S = min(1, 48 / the longest pretraining run in steps): every step count (stage
            lengths, warmup, checkpoint and eval intervals, batch-growth steps) times S, at
            least 1 (checkpoint and eval intervals at least 8): the WSD decay fraction and the
            stage proportions stay as written.
    depth   D = min(1, 8 / the deepest model): layers (and the layer block `grow` duplicates)
            times D, so Yi's 32 -> 48 growth of layers 12..28 becomes 8 -> 12 of layers 3..7.
    width   every model becomes 64 wide with 4 heads (the GQA ratio, FFN ratio, partial rotary
            share, Norm-Head and tying kept); vocabularies become 1024.
    batch   grad_accum divided by the recipe's largest (growth schedules keep their multiples);
            micro-batches at most 4 rows.
    data    the committed sample corpus (offline), 2 workers, small eval and sampling caps.

What is kept exactly: every ratio the reports give (mixture weights, ramp start and end, the
decay share, the SFT pretraining share, DPO beta, C-RLFT weights, learning rates). The SFT,
DPO and self-knowledge stages are capped at SMOKE_MAX_STEPS optimizer steps (their step
count comes from epochs over the data, not from a number S could scale). The smoke run goes
to RUN_DIR-smoke, and recipe.json and the report say it is a smoke run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmforge.model.config import ModelConfig, RopeScaling

SMOKE_SEQ, SMOKE_STEPS, SMOKE_LAYERS, SMOKE_WIDTH, SMOKE_HEADS, SMOKE_VOCAB = 128, 48, 8, 64, 4, 1024
SMOKE_MAX_STEPS, SMOKE_MICRO_BATCH, SMOKE_MIN_INTERVAL = 12, 4, 8
SIZES = {"vocab": SMOKE_VOCAB, "max_steps": SMOKE_MAX_STEPS}   # what a stage's smoke hook may use

LENGTH_KEYS = {"seq_len", "max_seq_len", "min_doc_tokens", "model_max_length", "original_max_position_embeddings"}
STEP_KEYS = {"steps", "warmup_steps", "ckpt_every", "eval_every"}
# caps: key -> most allowed in a smoke run (applied wherever the key appears)
CAPS = {"workers": 2, "eval_batches": 2, "max_items": 16, "mcq_max_items": 16, "max_seqs": 2, "max_docs_per_domain": 4, "samples_per_prompt": 1,
        "max_new_tokens": 16, "calib_tokens": 2048, "trials": 1, "distractors": 2, "val_docs_per_domain": 8,
        "batch_size": 8, "keep_last": 1, "add_tokens": 128, "long_count": 24, "general_count": 48,
        "target": 120, "clusters": 8, "size": 80, "heldout": 8,
        "count": 32,      # selfknow first_messages.count
        "fit_docs": 200, "embed_chars": 200}   # data topics: the embedding backend reads ~10 docs/s on a CPU core
ZERO_MEANS_ALL = {"workers", "max_items", "max_docs_per_domain", "mcq_max_items"}   # 0 = unlimited: capped too


@dataclass(frozen=True)
class Factors:
    length: float
    steps: float
    depth: float
    grad_accum: int           # the recipe's largest grad_accum (divided out)
    extra_vocab: int = 0      # tokens a vocabulary-extension stage adds (models get room for them)

    def to_dict(self) -> dict:
        return {"length": self.length, "steps": self.steps, "depth": self.depth, "grad_accum_divisor": self.grad_accum,
                "width": SMOKE_WIDTH, "heads": SMOKE_HEADS, "vocab": SMOKE_VOCAB, "max_steps_cap": SMOKE_MAX_STEPS}


def _walk(obj: Any):
    """Every dataclass instance inside obj (itself included)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield obj
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name))
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _walk(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _walk(x)


def factors(stages) -> Factors:
    """The common factors of a recipe's stages (lmforge.recipe.config.RecipeStage list)."""
    seq, steps, layers, accum, extra = 1, 1, 1, 1, 0
    for st in stages:
        cfg = st.config
        if isinstance(getattr(cfg, "add_tokens", None), int):     # a vocabulary extension
            extra = max(extra, min(cfg.add_tokens, CAPS["add_tokens"]))
        if st.stage.extra.get("sets_smoke_scale"):                 # pretraining's length and steps
            seq = max(seq, cfg.train.seq_len)
            total = sum(s.steps for s in cfg.stages) if cfg.stages else cfg.train.steps
            steps = max(steps, total)
        for obj in _walk(cfg):
            if isinstance(obj, ModelConfig) and obj != ModelConfig():
                layers = max(layers, obj.n_layers)
            if hasattr(obj, "grad_accum") and isinstance(obj.grad_accum, int):
                accum = max(accum, obj.grad_accum)
    return Factors(min(1.0, SMOKE_SEQ / seq), min(1.0, SMOKE_STEPS / steps), min(1.0, SMOKE_LAYERS / layers), accum,
                   extra)


def _len(v: int, f: Factors) -> int:
    return max(16, int(v * f.length / 8 + 1e-9) * 8) if v else v      # floor: a length that fit still fits


def _steps(v: int, f: Factors) -> int:
    """v x S, at least 1 when v was set (a warmup stays a warmup, a stage stays a stage)."""
    return max(1, int(round(v * f.steps))) if v else v


def shrink_model(m: ModelConfig, f: Factors) -> ModelConfig:
    if m == ModelConfig():
        return m     # "take the source checkpoint's architecture": nothing of its own to shrink
    group = m.n_heads // m.kv_heads
    kv = max(1, SMOKE_HEADS // group) if SMOKE_HEADS % group == 0 else None
    ffn = None if m.ffn_hidden is None else max(8, int(round(m.ffn_hidden / m.d_model * SMOKE_WIDTH / 8)) * 8)
    changes = dict(d_model=SMOKE_WIDTH, n_heads=SMOKE_HEADS, n_kv_heads=kv, ffn_hidden=ffn,
                   n_layers=max(2, int(round(m.n_layers * f.depth))), vocab_size=SMOKE_VOCAB + f.extra_vocab,
                   max_seq_len=_len(m.max_seq_len, f))
    names = {x.name for x in dataclasses.fields(m)}
    if "head_dim" in names and getattr(m, "head_dim") is not None:
        changes["head_dim"] = SMOKE_WIDTH // SMOKE_HEADS      # an explicit head size (Qwen3) shrinks too
    return dataclasses.replace(m, **{k: v for k, v in changes.items() if k in names})


def _block(block, f: Factors):
    if not block:
        return block
    a, b = block
    a2 = int(round(a * f.depth))
    return [a2, max(a2 + 1, int(round(b * f.depth)))]


def shrink(obj: Any, f: Factors, key: str = "") -> Any:
    """A shrunk copy of a config tree (dataclasses rebuilt, so every __post_init__ check runs again)."""
    if isinstance(obj, ModelConfig):
        return shrink_model(obj, f)
    if isinstance(obj, RopeScaling):
        o = obj.original_max_position_embeddings
        return dataclasses.replace(obj, original_max_position_embeddings=_len(o, f) if o else o)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {}
        for fld in dataclasses.fields(obj):
            if not fld.init:
                continue
            v = getattr(obj, fld.name)
            nv = _field(fld.name, v, f)
            if nv is not v:
                changes[fld.name] = nv
        _keep_step_rules(obj, changes)
        return dataclasses.replace(obj, **changes) if changes else obj
    if isinstance(obj, list):
        return [shrink(x, f) for x in obj]
    if isinstance(obj, dict):
        return {k: shrink(v, f) for k, v in obj.items()}
    return obj


def _keep_step_rules(obj: Any, changes: dict) -> None:
    """A stage whose steps come from epochs keeps train.steps unset; a curriculum's train.steps
    is the sum of its (shrunk) stages."""
    train = changes.get("train")
    if train is None or not hasattr(train, "steps"):
        return
    if hasattr(obj, "max_steps") and hasattr(obj, "epochs"):
        changes["train"] = dataclasses.replace(train, steps=obj.train.steps)
    elif getattr(obj, "stages", None) and hasattr(obj, "effective_stages"):
        total = sum(s.steps for s in changes.get("stages", obj.stages))
        changes["train"] = dataclasses.replace(train, steps=total if obj.train.steps != type(obj.train)().steps
                                               else obj.train.steps)


def _field(name: str, v: Any, f: Factors) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        if name in LENGTH_KEYS:
            return _len(v, f)
        if name in ("ckpt_every", "eval_every"):      # at least 8 steps apart: checkpoints and evals
            return max(_steps(v, f), SMOKE_MIN_INTERVAL) if v else v   # every step would dominate the run
        if name in STEP_KEYS:
            return _steps(v, f)
        if name == "grad_accum":
            return max(1, int(round(v / f.grad_accum)))
        if name == "micro_batch_size":
            return min(v, SMOKE_MICRO_BATCH)
        if name == "max_steps":
            return min(v, SMOKE_MAX_STEPS) if v else SMOKE_MAX_STEPS
        if name == "add_layers":
            return max(1, int(round(v * f.depth))) if v else v
        if name in CAPS:
            return min(v, CAPS[name]) if v else (CAPS[name] if name in ZERO_MEANS_ALL else v)
        return v
    if name == "lengths" and isinstance(v, list):
        return sorted({_len(x, f) for x in v})
    if name == "length_range" and isinstance(v, list):
        return [_len(x, f) for x in v]
    if name == "block":
        return _block(v, f)
    if name == "schedule" and isinstance(v, dict):          # batch growth: {step: grad_accum}
        return {(_steps(int(k), f) if int(k) else 0): max(1, int(round(a / f.grad_accum))) for k, a in v.items()}
    return shrink(v, f)


def smoke_recipe(recipe) -> dict:
    """Shrink every stage of `recipe` in place (its configs replaced); returns the factors used."""
    f = factors(recipe.stages)
    for st in recipe.stages:
        cfg = shrink(st.config, f)
        if st.stage.smoke is not None:
            cfg = st.stage.smoke(cfg, SIZES)
        st.config = _any_stage(cfg)
    recipe.smoke = f.to_dict()
    return recipe.smoke


def _any_stage(cfg: Any) -> Any:
    """Settings that are not a scale, for every stage: no torch.compile, the source's shape. (A
    stage's own ones, e.g. the offline sample corpus or the tokenizer's size, are its descriptor's
    `smoke` hook, called with SIZES.)"""
    train = getattr(cfg, "train", None)
    if train is not None and hasattr(train, "compile"):
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(train, compile=False, precision="auto"))
    init = getattr(cfg, "init", None)
    if init is not None and getattr(init, "from_checkpoint", None) and hasattr(cfg, "model") \
            and isinstance(cfg.model, ModelConfig):
        # the source's (shrunk) architecture decides; a restated shape could round differently
        cfg = dataclasses.replace(cfg, model=ModelConfig())
    return cfg


__all__ = ["smoke_recipe", "factors", "shrink", "Factors", "SMOKE_MAX_STEPS"]
