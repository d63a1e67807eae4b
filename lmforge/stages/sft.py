"""`lmforge sft`: supervised fine-tuning on ChatML conversations (Yi, Index-1.9B, StableLM 2).

    lmforge sft --set init.from_checkpoint=runs/pretrain --set data=[corpus/sft.jsonl] --set out_dir=runs/sft

Defaults follow the reports: constant LR 1e-5 (Yi), 2 epochs (2-3 in the reports; the
step count is computed from the epochs before training starts), conversations over 8
turns dropped (StableLM 2), optional NEFTune (Yi: alpha 5 for 6B, 45 for 34B), optional
pretraining text mixed in at 4:6 pretraining:response tokens (`mix.share: 0.4`, Index)
and the pretraining optimizer state loaded with the weights (`init.load_optimizer`, Index).
Long instructions can be mixed in at a set share of conversations (`long: {data, share}`;
Index-32K's long SFT, and its failed 1-per-mille attempt: `share: 0.001`); stats.json's
`long` records the realised share. `packing: false` puts one conversation in each row
(padded) instead of packing several (Index-32K: packing or not, <1% apart): the same
conversations and epochs, so more rows and steps.

Data: any of the formats of lmforge.align.formats (OpenAI messages, ShareGPT, Alpaca, TRL
prompt/completion, plain text), detected per record or named per file. `init.from_checkpoint`
may be a Hugging Face folder. `lora: {r: 8}` trains LoRA adapters only (merged on export).

Like pretraining: a rerun of a finished out_dir skips (DONE.json), an interrupted one
resumes exactly from its last checkpoint; a new out_dir starts from `init.from_checkpoint`.
out_dir gets stats.json (every input line accounted for), rejects.jsonl (malformed lines
with file and line), metrics.jsonl, mixture.json (realised pretraining share), tokenizer/.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lmforge.align.formats import DataFile
from lmforge.align.sft_data import MAX_RECORD_BYTES
from lmforge.config import check
from lmforge.model.lora import LoRAConfig
from lmforge.stagekit.conversations import CHAT_TRAIN, LongInstructConfig, MixConfig, build_sft_trainer
from lmforge.stagekit.effects import sft_effect
from lmforge.stagekit.runner import check_steps_unset, stage_defaults, trainer_body
from lmforge.stagekit.source import InitConfig
from lmforge.stagekit.facts import conversations
from lmforge.stagekit.stage import DONE, Arg, Stage
from lmforge.train.objectives.distill import DistillConfig
from lmforge.train.trainer import TrainConfig, Trainer


@dataclass
class SFTConfig:
    # conversation files (.jsonl / .json / .parquet / .arrow / a datasets save_to_disk folder): a path (format detected per record) or
    # {path, format, columns, tags} (lmforge.align.formats: messages, sharegpt, alpaca, prompt_completion, text)
    data: list[str | DataFile] = field(default_factory=list)
    lora: LoRAConfig | None = None # train LoRA adapters instead of all weights (merged on export)
    out_dir: str = "runs/sft"
    init: InitConfig = field(default_factory=InitConfig)
    tokenizer: str = ""            # tokenizer folder; "" = the one beside init.from_checkpoint's run
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: int = 2
    max_steps: int = 0             # > 0: stop after this many steps (smoke tests); 0 = all epochs
    max_turns: int = 8             # drop conversations with more assistant turns (0 = keep all)
    system_prompt: str = ""        # added to conversations that have no system message
    neftune_alpha: float = 0.0     # 0 = off; Yi: 5 (6B), 45 (34B)
    mix: MixConfig = field(default_factory=MixConfig)
    long: LongInstructConfig = field(default_factory=LongInstructConfig)   # long instructions at a share
    packing: bool = True           # false: one conversation per row, padded (Index-32K's packing ablation)
    val_fraction: float = 0.0      # conversations held out for val/sft_loss
    distill: DistillConfig | None = None   # logit distillation from a teacher with the same tokenizer (mixed with the reply loss)
    max_record_bytes: int = MAX_RECORD_BYTES   # a longer line is too_long, never read whole (16 MiB)

    @classmethod
    def _base(cls, data):
        return stage_defaults(data, CHAT_TRAIN)

    def __post_init__(self):
        check(len(self.data) > 0, "data", "give at least one conversation file")
        check(self.lora is None or not self.init.load_optimizer, "init.load_optimizer",
              "cannot continue a full-weight optimizer state with lora (set one of them)")
        check(bool(self.init.from_checkpoint), "init.from_checkpoint", "SFT starts from a pretrained checkpoint")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = all epochs)")
        check(self.max_turns >= 0, "max_turns", "must be >= 0 (0 = no limit)")
        check(self.neftune_alpha >= 0, "neftune_alpha", "must be >= 0")
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        check(self.max_record_bytes > 0, "max_record_bytes", "must be > 0")
        check_steps_unset(self.train)


def build(cfg: SFTConfig, progress: bool = True) -> Trainer:
    return build_sft_trainer(cfg, progress)


SMOKE_SYSTEM_CHARS = 16


def smoke_settings(cfg: SFTConfig, sizes: dict) -> SFTConfig:
    """A system prompt is fixed text: it does not shrink with the smoke context (Index's 70-character
    Chinese prompt is 110 of the 128 smoke tokens under the 1024-token smoke vocabulary, so every
    conversation was too long). The smoke run keeps one, cut to its first characters."""
    if len(cfg.system_prompt) <= SMOKE_SYSTEM_CHARS:
        return cfg
    return dataclasses.replace(cfg, system_prompt=cfg.system_prompt[:SMOKE_SYSTEM_CHARS])


STAGE = Stage(kind="sft", config=SFTConfig, body=trainer_body(build, sft_effect), inputs=("data",), distributed=True,
              help="supervised fine-tuning on ChatML conversations (loss on replies only)", example="epochs=3",
              args=(Arg("--data", "data", "conversation jsonl ({'messages': [...]}), added to `data` (repeatable)",
                        append=True, metavar="JSONL"),),
              outputs=("checkpoints", "tokenizer", "metrics.jsonl", DONE),
              check=conversations, smoke=smoke_settings)
run = STAGE.run
