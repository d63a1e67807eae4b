"""`lmforge selfknow`: self-knowledge as StableLM 2 trains it (RLCD data + C-RLFT).

    lmforge selfknow --set init.from_checkpoint=runs/dpo --set base=runs/pretrain \\
                     --set out_dir=runs/selfknow

1. First messages (lmforge.align.first_messages): `first_messages.count` (StableLM 2:
   10k) first user messages sampled from the BASE model (`base`) with a plain-text
   conversation-opening prompt, deduplicated: normalised exact dedup, then MinHash near
   dedup (lmforge.data.dedup.minhash, word `near_dup_ngram`-grams at Jaccard
   `near_dup_threshold`). `prompts` are hand-written first messages added before them.
   Without `base` and `prompts`, the 10 built-in identity questions stand in (the old
   simplification; the stats say so). -> out_dir/first_messages.jsonl (+ _stats.json).
2. RLCD replies (lmforge.align.self_knowledge): the chat model (init.from_checkpoint)
   answers each first message `samples_per_prompt` times with the `facts` (+ `few_shot`) in
   its system prompt (positive) and without (negative). D_c = positives in plain SFT
   format, negatives opened by a system message holding only `negative_token`.
   -> out_dir/rlcd.jsonl (D_c), rlcd_pairs.jsonl (chosen/rejected, for `lmforge dpo`),
   rlcd_stats.json.
   With `fact_questions`, written positives join D_c: each question answered by each fact
   (out_dir/fact_conversations.jsonl; a deviation for models too small to copy the facts out
   of the RLCD prompt, off by default).
3. Tokenizer: `negative_token` added as a special token -> out_dir/tokenizer (the model
   grows one embedding / LM-head row, the mean of the others; lmforge.stagekit.vocab).
4. Reference (when kl_coef > 0): the chat model SFT'd on D_c (plain, unweighted
   cross-entropy over every class, each conditioned as written) for `reference.epochs`
   -> out_dir/reference/ (a run folder of its own, with DONE.json). This is pi_c of
   C-RLFT: the class-conditioned behaviour policy the KL term points at.
5. C-RLFT (lmforge.train.objectives.crlft): from the chat model again, SFT on D_c plus any
   `sources` (class name -> conversation jsonl, plain format, one class per source), each
   target token weighted by its class weight, plus kl_coef * KL(policy || reference), for
   `epochs` (StableLM 2: 6). At inference the plain chat format asks for the positive class.
Every step is kept when the stage resumes (each file is written atomically, a stats file or
DONE.json last as its completion mark); same stage contract as `lmforge sft`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.align.first_messages import DEFAULT_EXAMPLES, DEFAULT_OPENING
from lmforge.align.self_knowledge import (DEFAULT_FACTS, DEFAULT_FEW_SHOT, DEFAULT_PROMPTS, HELDOUT_QUESTIONS,
                                          NEGATIVE_TOKEN)
from lmforge.config import ConfigError, check
from lmforge.device import resolve_device
from lmforge.io.atomic import read_json, write_json, write_jsonl
from lmforge.stagekit.conversations import CHAT_TRAIN, MixConfig, build_conversation_objective
from lmforge.stagekit.runner import check_steps_unset, done_summary, finish, reject_sink, stage_defaults, \
    start_fresh, trainer_body
from lmforge.stagekit.facts import conversations
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import InitConfig, Source, load_source, source_checkpoint
from lmforge.train.trainer import TrainConfig, Trainer

# C-RLFT class weights (OpenChat: 1.0 for the expert source, 0.1 for the sub-optimal one)
DEFAULT_WEIGHTS = {"positive": 1.0, "negative": 0.1}


@dataclass
class FirstMessagesConfig:
    """First user messages sampled from the base model (StableLM 2: 10k, deduplicated)."""
    count: int = 10000                   # distinct first messages to keep (StableLM 2: 10k)
    opening: str = DEFAULT_OPENING       # the prompt; {examples} = `shots` lines "User: ...\n"
    examples: list[str] = field(default_factory=lambda: list(DEFAULT_EXAMPLES))   # example openings, drawn per prompt
    shots: int = 3                       # examples shown in each sampling prompt
    max_new_tokens: int = 64             # longest sampled first message
    temperature: float = 1.0             # sampling temperature of the base model
    top_p: float = 0.95                  # nucleus sampling of the base model
    min_chars: int = 2                   # shorter samples are discarded
    max_chars: int = 500                 # longer samples are discarded
    max_samples: int = 0                 # give up after this many samples; 0 = 4 x count
    batch_size: int = 32                 # prompts sampled per generate call
    near_dedup: bool = True              # also drop near-duplicate messages (else exact only)
    near_dup_threshold: float = 0.7      # Jaccard of word n-grams (MinHash LSH)
    near_dup_ngram: int = 2              # first messages are short: word bigrams

    def __post_init__(self):
        check(self.count >= 1, "count", "must be >= 1")
        check("{examples}" in self.opening or not self.examples, "opening",
              "must contain {examples} when examples are given")
        check(self.shots >= 0, "shots", "must be >= 0")
        check(self.max_new_tokens > 0, "max_new_tokens", "must be > 0")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(1 <= self.min_chars <= self.max_chars, "min_chars", "need 1 <= min_chars <= max_chars")
        check(self.max_samples >= 0, "max_samples", "must be >= 0")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(0 < self.near_dup_threshold < 1, "near_dup_threshold", "must be in (0, 1)")
        check(self.near_dup_ngram >= 1, "near_dup_ngram", "must be >= 1")


@dataclass
class ReferenceConfig:
    """The KL reference of C-RLFT: the chat model SFT'd on D_c first (unweighted)."""
    epochs: int = 1                      # SFT epochs of the reference on D_c
    max_steps: int = 0                   # cap on its steps (0: all epochs)

    def __post_init__(self):
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0")


@dataclass
class SelfKnowConfig:
    out_dir: str = "runs/selfknow"
    init: InitConfig = field(default_factory=InitConfig)   # the chat model (replies, and the start)
    base: str = ""                       # the base model the first messages are sampled from
    tokenizer: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    first_messages: FirstMessagesConfig = field(default_factory=FirstMessagesConfig)
    prompts: list[str] = field(default_factory=list)       # hand-written first messages, added
    # RLCD replies
    facts: list[str] = field(default_factory=lambda: list(DEFAULT_FACTS))
    few_shot: list[dict[str, str]] = field(default_factory=lambda: [dict(x) for x in DEFAULT_FEW_SHOT])
    samples_per_prompt: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    negative_token: str = NEGATIVE_TOKEN   # special token marking negative replies (added to the vocabulary)
    # C-RLFT
    sources: dict[str, str] = field(default_factory=dict)   # extra class name -> conversation jsonl
    class_weights: dict[str, float] = field(default_factory=dict)  # over DEFAULT_WEIGHTS; each source needs one
    kl_coef: float = 0.05
    # written positives, for a model too small to copy the facts out of the RLCD prompt
    fact_questions: list[str] = field(default_factory=list)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
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
        for i, ex in enumerate(self.few_shot):
            check(set(ex) == {"user", "assistant"}, f"few_shot[{i}]", "needs exactly the keys user and assistant")
        check(self.samples_per_prompt >= 1, "samples_per_prompt", "must be >= 1")
        check(self.max_new_tokens > 0, "max_new_tokens", "must be > 0")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(self.negative_token.startswith("<|") and self.negative_token.endswith("|>")
              and len(self.negative_token) > 4, "negative_token", "must look like <|name|>")
        for name in self.sources:
            check(name in self.class_weights, f"class_weights.{name}", f"source {name!r} needs a class weight")
        for name, w in self.weights().items():
            check(w >= 0, f"class_weights.{name}", "must be >= 0")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        held = {" ".join(q.lower().split()) for q in HELDOUT_QUESTIONS}
        for i, q in enumerate(self.fact_questions):
            check(bool(q.strip()), f"fact_questions[{i}]", "must not be empty")
            check(" ".join(q.lower().split()) not in held, f"fact_questions[{i}]",
                  f"{q!r} is a held-out question of the facts check (lmforge.align.self_knowledge.HELDOUT_QUESTIONS)")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0")
        check(self.max_turns >= 0, "max_turns", "must be >= 0")
        check(self.neftune_alpha >= 0, "neftune_alpha", "must be >= 0")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check_steps_unset(self.train)


# ------------------------------------------------------------------ 1. first messages


def first_line_sampler(model, tok, fm: FirstMessagesConfig, pad_id: int):
    """complete(prompt texts, seed) -> each prompt's first generated line, None when the line
    did not end within fm.max_new_tokens (a document-end token also ends it)."""
    from lmforge.infer.generate import default_stop_ids, generate_ids

    stop = default_stop_ids(tok)

    def ended(_, new: list[int]) -> bool:
        return "\n" in tok.decode(new, skip_special_tokens=True)

    def complete(prompts: list[str], seed: int) -> list[str | None]:
        ids = [tok.encode(p, add_special_tokens=False).ids for p in prompts]
        out: list[str | None] = []
        for start in range(0, len(ids), fm.batch_size):
            gen = generate_ids(model, ids[start:start + fm.batch_size], max_new_tokens=fm.max_new_tokens,
                               temperature=fm.temperature, top_p=fm.top_p, stop_ids=stop, seed=seed + start,
                               should_stop=ended, pad_id=pad_id)
            for g in gen:
                text = tok.decode(g, skip_special_tokens=True)
                out.append(text.split("\n", 1)[0] if "\n" in text or len(g) < fm.max_new_tokens else None)
        return out

    return complete


def near_dedup_mask(fm: FirstMessagesConfig):
    from lmforge.data.config import MinhashConfig
    from lmforge.data.dedup.minhash import dedup_texts

    mh = MinhashConfig(threshold=fm.near_dup_threshold, ngram=fm.near_dup_ngram)
    return lambda texts: dedup_texts(texts, mh).tolist()


def sample_first_messages(cfg: SelfKnowConfig, progress: bool) -> tuple[list[str], dict]:
    """out_dir/first_messages.jsonl (+ first_messages_stats.json, written last); kept if complete."""
    from lmforge.align.first_messages import sample_first_messages as sample
    from lmforge.checkpoint import tokenizer_dir_of
    from lmforge.model.load import load_checkpoint
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info

    out = Path(cfg.out_dir)
    path, stats_path = out / "first_messages.jsonl", out / "first_messages_stats.json"
    if path.is_file() and stats_path.is_file():
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()], \
            read_json(stats_path)
    fm = cfg.first_messages
    if not cfg.base:
        given = cfg.prompts or DEFAULT_PROMPTS
        messages, stats = sample(lambda p, s: [], 0, given=given)
        stats["source"] = "prompts" if cfg.prompts else "builtin prompts (no base model given)"
    else:
        step_dir, _ = source_checkpoint(cfg.base, "base")
        tok_dir = tokenizer_dir_of(step_dir)
        if tok_dir is None:
            raise ConfigError(f"base: no tokenizer folder beside {step_dir}")
        tok = load_tokenizer(tok_dir)
        pad = tokenizer_info(tok_dir, tok).get("pad_id")
        model, _ = load_checkpoint(step_dir, resolve_device(cfg.train.device))
        messages, stats = sample(first_line_sampler(model, tok, fm, 0 if pad is None else pad), fm.count,
                                 opening=fm.opening, examples=fm.examples, shots=fm.shots, seed=cfg.train.seed,
                                 max_samples=fm.max_samples, batch_size=fm.batch_size, min_chars=fm.min_chars,
                                 max_chars=fm.max_chars, given=cfg.prompts,
                                 near_dedup=near_dedup_mask(fm) if fm.near_dedup else None, progress=progress)
        stats.update(source="base", base=str(step_dir))
        del model
    if not messages:
        raise ConfigError(f"first_messages: the base model gave no usable first message "
                          f"({stats}); check base, first_messages.opening and max_new_tokens")
    write_jsonl(path, [{"text": m} for m in messages])
    write_json(stats_path, stats)
    return messages, stats


# ------------------------------------------------------------------ 2. RLCD replies


def generate_rlcd(cfg: SelfKnowConfig, src: Source, messages: list[str], progress: bool) -> tuple[Path, dict]:
    """out_dir/rlcd.jsonl (D_c) + rlcd_pairs.jsonl, rlcd_stats.json (last); kept if complete."""
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

    convs, pairs, stats = rlcd_samples(src.tok, messages, cfg.facts, cfg.few_shot, cfg.samples_per_prompt,
                                       sample, cfg.train.seed, progress, cfg.negative_token)
    write_jsonl(path, convs)
    write_jsonl(out / "rlcd_pairs.jsonl", pairs)
    write_json(stats_path, stats)
    return path, stats


# ------------------------------------------------------------------ 3-5. tokenizer, reference, C-RLFT


def grown_source(cfg: SelfKnowConfig, src: Source):
    """(source with the negative token, the model initialiser for start_fresh or None, info)."""
    from lmforge.stagekit.vocab import load_with_new_rows, with_special_tokens

    grown, new = with_special_tokens(src, [cfg.negative_token], cfg.out_dir)
    info = {"negative_token": cfg.negative_token, "negative_id": grown.tok.token_to_id(cfg.negative_token),
            "added": bool(new), "vocab_size": grown.model_cfg.vocab_size,
            "padded_vocab_size": grown.model_cfg.padded_vocab_size}
    if not new:
        return grown, None, info
    if cfg.init.load_optimizer:
        raise ConfigError("init.load_optimizer: the optimizer state cannot be reused when the vocabulary grows "
                          f"(the negative token {cfg.negative_token} is new)")
    ids = sorted(new.values())
    return grown, (lambda model: load_with_new_rows(model, src.step_dir, src.model_cfg, ids)), info


def fact_questions(cfg: SelfKnowConfig) -> list[str]:
    return [x for q in cfg.fact_questions for x in (DEFAULT_PROMPTS if q == "builtin" else [q])]


def write_fact_conversations(cfg: SelfKnowConfig) -> list[str]:
    """[out_dir/fact_conversations.jsonl] (positives: fact_questions x facts), [] without fact_questions."""
    from lmforge.align.self_knowledge import fact_conversations

    if not cfg.fact_questions:
        return []
    path = Path(cfg.out_dir) / "fact_conversations.jsonl"
    write_jsonl(path, fact_conversations(fact_questions(cfg), cfg.facts))
    return [str(path)]


def conversation_files(cfg: SelfKnowConfig, rlcd_path: Path) -> tuple[list[str], dict, list[float], dict]:
    weights = cfg.weights()
    names = list(weights)
    files = [str(rlcd_path), *write_fact_conversations(cfg), *cfg.sources.values()]
    return (files, {n: i for i, n in enumerate(names)},
            [weights[n] for n in names], {str(Path(p)): name for name, p in cfg.sources.items()})


def train_reference(cfg: SelfKnowConfig, src: Source, init_model, rlcd_path: Path, progress: bool) -> dict:
    """out_dir/reference: the start model SFT'd on D_c (every class weight 1), its own run."""
    rcfg = dataclasses.replace(cfg, out_dir=str(Path(cfg.out_dir) / "reference"), epochs=cfg.reference.epochs,
                               max_steps=cfg.reference.max_steps, kl_coef=0.0)
    done = done_summary(rcfg.out_dir)
    if done:
        return done
    files, classes, _, path_classes = conversation_files(cfg, rlcd_path)
    with reject_sink(rcfg.out_dir) as errors:
        objective, stats, steps = build_conversation_objective(
            rcfg, files, src, errors, progress, None, classes, None, load_kwargs={"path_classes": path_classes},
            stage="selfknow reference")
    return finish(rcfg, start_fresh(rcfg, src, objective, steps, {"role": "C-RLFT reference (SFT on D_c)",
                                                                   "classes": classes, **stats},
                                    progress, init_model))


def build(cfg: SelfKnowConfig, progress: bool = True) -> Trainer:
    from lmforge.model.load import load_checkpoint
    from lmforge.train.objectives.crlft import CRLFTObjective

    src = load_source(cfg.init, cfg.tokenizer)
    messages, fm_stats = sample_first_messages(cfg, progress)
    rlcd_path, rlcd_stats = generate_rlcd(cfg, src, messages, progress)
    if not any(rlcd_stats.get(f"kept_{c}") for c in ("positive", "negative")) and not cfg.sources:
        raise ConfigError(f"first_messages: the model gave only empty replies (see {cfg.out_dir}/rlcd_stats.json)")
    grown, init_model, tok_stats = grown_source(cfg, src)
    files, classes, weights, path_classes = conversation_files(cfg, rlcd_path)
    reference, ref_summary = None, None
    if cfg.kl_coef > 0:
        ref_summary = train_reference(cfg, grown, init_model, rlcd_path, progress)
        reference = load_checkpoint(Path(cfg.out_dir) / "reference")[0]
    with reject_sink(cfg.out_dir) as errors:
        objective, stats, steps = build_conversation_objective(
            cfg, files, grown, errors, progress, None, classes, weights, objective_cls=CRLFTObjective,
            load_kwargs={"path_classes": path_classes}, reference=reference, kl_coef=cfg.kl_coef,
            vocab_size=grown.model_cfg.vocab_size, class_names=sorted(classes, key=classes.get), stage="selfknow")
    stats = {"first_messages": fm_stats, "rlcd": rlcd_stats, "tokenizer": tok_stats, "classes": classes,
             "reference": ref_summary and {k: ref_summary.get(k) for k in ("step", "final_loss", "checkpoint")},
             **stats}
    return start_fresh(cfg, grown, objective, steps, stats, progress, init_model)


def facts_effect(cfg: SelfKnowConfig, trainer: Trainer) -> dict:
    """The taught facts as replies to held-out paraphrased questions (plain chat format), under
    the chat model the stage started from (before) and the trained one (after). The headline is
    fact-specific: per question, the loss of false facts in the same style (CONTROL_FACTS) minus
    the loss of the true ones (higher = the true facts are the likelier); the raw loss of the
    true facts, which also falls when replies in general get likelier, is in `more`."""
    import numpy as np

    from lmforge.align.self_knowledge import CONTROL_FACTS, fact_probe_items
    from lmforge.eval.effect import mean_target_nll, paired_effect
    from lmforge.model.load import load_checkpoint

    src = load_source(cfg.init, cfg.tokenizer)
    start, _ = load_checkpoint(src.step_dir, next(trainer.model.parameters()).device)

    def per_question(model, facts) -> np.ndarray:
        probes = fact_probe_items(src.tok, facts)
        return mean_target_nll(model, [it for q in probes for it in q]).reshape(len(probes), len(facts)).mean(1)

    true_b, true_a = per_question(start, cfg.facts), per_question(trainer.model, cfg.facts)
    ctrl_b, ctrl_a = per_question(start, CONTROL_FACTS), per_question(trainer.model, CONTROL_FACTS)
    raw = paired_effect("taught facts: reply loss on held-out questions (nats/token)", true_b, true_a, False)
    return paired_effect("taught facts vs false ones: control loss - fact loss on held-out questions (nats/token)",
                         ctrl_b - true_b, ctrl_a - true_a, True, more=[raw])


STAGE = Stage(kind="selfknow", config=SelfKnowConfig, body=trainer_body(build, facts_effect), distributed=True,
              help="self-knowledge (StableLM 2): first messages from the base model, RLCD replies, C-RLFT with KL "
                   "to a reference trained on D_c", example="base=runs/pretrain",
              outputs=("checkpoints", "tokenizer", "metrics.jsonl", DONE),
              check=conversations, extra={"objective": "selfknow"})
run = STAGE.run
