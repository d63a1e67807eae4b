"""The stage registry: recipe `kind` -> (config class, run function), imported lazily.

Every run function follows the stage contract: `run(cfg, progress=True) -> dict`, writes
into the config's out_dir, skips when it finds its own finished output and resumes an
interrupted run. The stage modules are lmforge.stages.* (the tokenizer stages keep their
run functions beside the tokenizer code, which they are thin wrappers of).
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from lmforge.config import ConfigError


@dataclass(frozen=True)
class StageKind:
    module: str
    config: str              # class name in `module`
    run: str                 # function name in `module`
    out_key: str = "out_dir"  # the config field that holds the stage's output folder
    distributed: bool = False  # under torchrun every rank runs it (training); else rank 0 only

    def load(self) -> tuple[type, callable]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.run)


KINDS: dict[str, StageKind] = {
    "corpus": StageKind("lmforge.stages.corpus", "CorpusConfig", "run_corpus"),
    "data": StageKind("lmforge.stages.data", "DataConfig", "run_data", out_key="output"),
    "tokenizer": StageKind("lmforge.tokenizer.train", "TrainConfig", "run_train"),
    "extend": StageKind("lmforge.tokenizer.extend", "ExtendConfig", "run_extend"),
    "encode": StageKind("lmforge.tokenizer.encode", "EncodeConfig", "run_encode"),
    "pretrain": StageKind("lmforge.stages.pretrain", "PretrainConfig", "run", distributed=True),
    "grow": StageKind("lmforge.stages.grow", "GrowConfig", "run"),
    "longctx": StageKind("lmforge.stages.longctx", "LongCtxConfig", "run", distributed=True),
    "sftdata": StageKind("lmforge.stages.sftdata", "SFTDataConfig", "run"),
    "sftgrid": StageKind("lmforge.stages.sftgrid", "SFTGridConfig", "run", distributed=True),  # trains
    "sft": StageKind("lmforge.stages.sft", "SFTConfig", "run", distributed=True),
    "dpo": StageKind("lmforge.stages.dpo", "DPOConfig", "run", distributed=True),
    "selfknow": StageKind("lmforge.stages.selfknow", "SelfKnowConfig", "run", distributed=True),
    "longsft": StageKind("lmforge.stages.longsft", "LongSFTConfig", "run"),
    "eval": StageKind("lmforge.stages.eval", "EvalConfig", "run"),
    "needle": StageKind("lmforge.stages.needle", "NeedleConfig", "run"),
    "longstudy": StageKind("lmforge.stages.longstudy", "LongStudyConfig", "run"),
    "export": StageKind("lmforge.stages.export", "ExportConfig", "run"),
    "character": StageKind("lmforge.stages.character", "CharacterConfig", "run"),
    "report": StageKind("lmforge.stages.report", "ReportConfig", "run", out_key="out"),  # skips on unchanged inputs
}


def load_kind(kind: str, where: str) -> tuple[type, callable]:
    """(config class, run function) of `kind`, or a one-line ConfigError naming `where`."""
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    spec = KINDS[kind]
    try:
        cls, fn = spec.load()
    except ModuleNotFoundError as e:
        if e.name and (spec.module == e.name or spec.module.startswith(e.name + ".")):
            raise ConfigError(f"{where}: kind {kind!r} needs module {spec.module}, which is not in "
                              f"this tree yet") from None
        raise
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: kind {kind!r}: {spec.module} does not provide "
                          f"{spec.config} + {spec.run} ({e})") from None
    return cls, fn


if __name__ == "__main__":  # python -m lmforge.recipe.registry: which kinds import here
    for k in KINDS:
        try:
            load_kind(k, k)
            print(f"{k}: ok")
        except ConfigError as e:
            print(e, file=sys.stderr)
