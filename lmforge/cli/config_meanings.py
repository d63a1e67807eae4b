"""One-line meanings of the config fields that carry no `# comment` in their own source.

`lmforge.cli.confighelp` takes a field's meaning from the comment at the end of its line;
this table fills in the rest, so that `--help-config` and docs/config.md describe every key
(tests/test_config_help.py fails on a field that has neither). A comment added beside a
field in its source takes precedence over the entry here: moving an entry into the source
is always welcome. Keys are `module.Class.field`; GENERIC covers fields whose meaning is the
same in every config.
"""
from __future__ import annotations

GENERIC = {
    "out_dir": "the stage's output folder (reruns skip a finished one and resume an interrupted one)",
    "device": "auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps",
    "overwrite": "redo the work even when out_dir already holds a finished result",
    "progress": "show progress bars",
    "train": "the training loop: steps, batch, optimizer, LR schedule, evaluation, checkpoints",
}

_DATA = "lmforge.data.config."
_TRAIN = "lmforge.train."
_EVAL = "lmforge.stages.eval."
_STUDY = "lmforge.stages.longstudy."

MEANINGS = {
    # corpus
    "lmforge.stages.corpus.CorpusConfig.sources": "sources to read (pydocs, poetry, stdlib, chatterbot, quiz); "
                                                  "null = all",
    "lmforge.stages.corpus.CorpusConfig.paths": "source name -> folder of an installed offline source "
                                                "(default: where scripts/setup_sources.sh puts it)",
    "lmforge.stages.corpus.CorpusConfig.prose_format": "Python docs pages as html, rst, or split (half each)",
    "lmforge.stages.corpus.CorpusConfig.max_mcq": "most poem multiple-choice items written",
    "lmforge.stages.corpus.CorpusConfig.seed": "seed string of every random choice (sampling, splits)",
    "lmforge.stages.corpus.CorpusConfig.instruct_domain": "domain name of the instruction documents "
                                                          "(with instruct_docs)",
    # data
    _DATA + "DataConfig.input": "raw document files or folders (jsonl[.gz/.zst], parquet, csv, txt, md, html, WARC, datasets .arrow / save_to_disk folders)",
    _DATA + "DataConfig.output": "output folder: one numbered subfolder per step (kept/, rejected/, stats.json) and summary.json",
    _DATA + "DataConfig.steps": "pipeline steps in order: extract, filters, langid, quality, minhash, "
                                "substring, topics, code",
    _DATA + "DataConfig.extract": "HTML to text (step extract)",
    _DATA + "DataConfig.langid": "language identification with py3langid (step langid)",
    _DATA + "DataConfig.topics": "TF-IDF + k-means topics, some downsampled (step topics; Yi, Skywork)",
    _DATA + "DataConfig.format": "shard format of the kept documents",
    _DATA + "DataConfig.docs_per_shard": "documents per output shard",
    _DATA + "DataConfig.max_doc_bytes": "a larger input document is set aside as too_large (rejected/errors)",
    _DATA + "DataConfig.write_rejected": "keep rejected documents (with their reason) under each step's rejected/",
    _DATA + "ExtractConfig.backend": "HTML to text extractor",
    _DATA + "FilterConfig.min_units": "fewer words (CJK: characters) -> rejected as too_short",
    _DATA + "FilterConfig.max_units": "more words (CJK: characters) -> rejected as too_long",
    _DATA + "FilterConfig.max_mean_word_len": "longer mean word length (non-CJK words) -> rejected",
    _DATA + "FilterConfig.max_digit_ratio": "share of digits among non-space characters above this -> rejected",
    _DATA + "FilterConfig.max_bullet_line_ratio": "share of lines starting with a bullet above this -> rejected",
    _DATA + "FilterConfig.max_ellipsis_line_ratio": "share of lines ending in an ellipsis above this -> rejected",
    _DATA + "FilterConfig.max_dup_para_ratio": "share of paragraphs that repeat an earlier one above this -> "
                                               "rejected (Gopher)",
    _DATA + "FilterConfig.max_dup_line_char_ratio": "share of characters in repeated lines above this -> rejected",
    _DATA + "FilterConfig.max_dup_para_char_ratio": "share of characters in repeated paragraphs above this -> "
                                                    "rejected",
    _DATA + "FilterConfig.max_top_ngram_ratio": "n -> limit on the share of characters in the most frequent "
                                                "n-gram (Gopher)",
    _DATA + "FilterConfig.max_dup_ngram_ratio": "n -> limit on the share of characters in repeated n-grams (Gopher)",
    _DATA + "FilterConfig.remove_boilerplate_lines": "delete lines matching boilerplate_patterns before the "
                                                     "other rules (C4)",
    _DATA + "FilterConfig.boilerplate_patterns": "regular expressions of boilerplate lines (cookie notices, "
                                                 "'javascript', ...)",
    _DATA + "QualityConfig.negatives_per_positive": "raw-corpus negatives sampled per reference positive",
    _DATA + "QualityConfig.heldout_fraction": "share of the training documents held out to report accuracy",
    _DATA + "QualityConfig.n_features": "hashed n-gram feature dimensions",
    _DATA + "QualityConfig.char_ngrams": "[min, max] character n-gram lengths",
    _DATA + "QualityConfig.word_ngrams": "[min, max] word n-gram lengths",
    _DATA + "QualityConfig.C": "inverse regularisation strength of the logistic regression",
    _DATA + "QualityConfig.threshold": "documents whose probability of being reference-like is below this fail",
    _DATA + "QualityConfig.mode": "filter: drop low-quality documents; tag: only record the score in meta",
    _DATA + "QualityConfig.seed": "seed of the negative sample and the held-out split",
    _DATA + "MinhashConfig.num_perm": "hash functions per signature (memory: 4 bytes each per document)",
    _DATA + "MinhashConfig.rows": "rows per LSH band (with bands; null: the optimum for the threshold)",
    _DATA + "MinhashConfig.fn_weight": "weight of missed duplicate pairs when choosing bands x rows",
    _DATA + "MinhashConfig.seed": "seed of the hash functions",
    _DATA + "TopicsConfig.clusters": "k-means clusters (topics) over TF-IDF vectors",
    _DATA + "TopicsConfig.max_features": "TF-IDF vocabulary size",
    _DATA + "TopicsConfig.samples_per_cluster": "example documents listed per topic in the step's stats",
    _DATA + "TopicsConfig.sample_chars": "characters shown of each example document",
    _DATA + "TopicsConfig.top_terms": "top TF-IDF terms listed per topic (term_weights match these)",
    _DATA + "TopicsConfig.seed": "seed of the sample, k-means and the keep draws",
    _DATA + "CodeConfig.seed": "seed of the JSON/YAML keep draw",
    # tokenizer
    "lmforge.tokenizer.train.TokenizerConfig.out_dir": "tokenizer folder to write (tokenizer.json + "
                                                    "tokenizer_config.json)",
    "lmforge.tokenizer.train.TokenizerConfig.vocab_size": "vocabulary size, special tokens included",
    "lmforge.tokenizer.train.TokenizerConfig.min_frequency": "a pair must occur this often to be merged",
    "lmforge.tokenizer.train.TokenizerConfig.bos_token": "beginning-of-sequence token (one of special_tokens)",
    "lmforge.tokenizer.train.TokenizerConfig.eos_token": "end-of-document token appended by encode",
    "lmforge.tokenizer.train.TokenizerConfig.pad_token": "padding token",
    "lmforge.tokenizer.train.TokenizerConfig.chat_template": "Jinja chat template written to tokenizer_config.json "
                                                         "(ChatML)",
    "lmforge.tokenizer.train.TokenizerConfig.model_max_length": "model_max_length recorded in tokenizer_config.json",
    "lmforge.tokenizer.extend.ExtendConfig.out_dir": "folder of the extended tokenizer",
    "lmforge.tokenizer.extend.ExtendConfig.min_frequency": "a pair must occur this often to be merged",
    "lmforge.tokenizer.extend.ExtendConfig.max_bytes": "learn from at most this many text bytes (0 = all)",
    "lmforge.tokenizer.extend.ExtendConfig.pad_multiple": "embedding rows rounded up to this",
    "lmforge.tokenizer.encode.EncodeConfig.inputs": "document files or folders to encode",
    "lmforge.tokenizer.encode.EncodeConfig.out_dir": "token dataset folder to write (train/, val/, meta.json)",
    "lmforge.tokenizer.encode.EncodeConfig.split_salt": "salt of the document-id hash that picks validation "
                                                        "documents",
    "lmforge.tokenizer.encode.EncodeConfig.default_domain": "domain of documents without meta.domain",
    "lmforge.tokenizer.encode.EncodeConfig.append_eos": "end every document with the eos token",
    "lmforge.tokenizer.report.TokenizerReportConfig.tokenizer": "tokenizer folder or tokenizer.json to measure",
    "lmforge.tokenizer.report.TokenizerReportConfig.inputs": "document files or folders to measure on",
    "lmforge.tokenizer.report.TokenizerReportConfig.batch_docs": "documents encoded per batch",
    "lmforge.tokenizer.report.TokenizerReportConfig.default_domain": "domain of documents without meta.domain",
    # model
    "lmforge.model.config.ModelConfig.rope_scaling": "RoPE scaling (dynamic NTK, linear, llama3); null = plain "
                                                     "RoPE",
    "lmforge.stages.pretrain.PretrainConfig.model": "the model: a preset and/or its shape and options",
    "lmforge.model.config.ModelConfig.d_model": "hidden size",
    "lmforge.model.config.ModelConfig.n_layers": "transformer blocks",
    "lmforge.model.config.ModelConfig.n_heads": "attention (query) heads",
    "lmforge.model.config.ModelConfig.max_seq_len": "context length the model is trained for (RoPE positions)",
    "lmforge.model.config.ModelConfig.rope_theta": "RoPE base",
    "lmforge.model.config.ModelConfig.norm_eps": "epsilon of the normalisation layers",
    "lmforge.model.config.ModelConfig.tie_embeddings": "the LM head shares the token embedding matrix",
    "lmforge.model.config.ModelConfig.init_std": "standard deviation of the weight initialisation",
    "lmforge.model.config.ContextOverrides.rope_theta": "new RoPE base (Index-32K: 32 x 10000); null = keep",
    "lmforge.model.config.ContextOverrides.max_seq_len": "new context length; null = keep",
    "lmforge.model.config.ContextOverrides.rope_scaling": "RoPE scaling to train with; null = keep the "
                                                          "checkpoint's",
    "lmforge.model.config.ContextOverrides.attn_backend": "attention kernel; null = keep",
    "lmforge.model.config.RopeScaling.type": "dynamic (NTK), linear (position interpolation) or llama3",
    "lmforge.model.config.RopeScaling.factor": "context extension factor",
    "lmforge.model.lora.LoRAConfig.r": "rank of the adapters",
    "lmforge.model.lora.LoRAConfig.target_modules": "linear layers that get adapters (q, k, v, o, gate, up, down)",
    # training
    _TRAIN + "trainer.TrainConfig.steps": "optimizer steps (a curriculum's stages or a multistage schedule "
                                          "set it instead)",
    _TRAIN + "trainer.TrainConfig.micro_batch_size": "sequences per forward/backward pass",
    _TRAIN + "trainer.TrainConfig.grad_accum": "micro-batches per optimizer step (tokens per step: "
                                               "micro_batch_size x grad_accum x seq_len)",
    _TRAIN + "trainer.TrainConfig.seq_len": "tokens per training row",
    _TRAIN + "trainer.TrainConfig.seed": "seed of initialisation, data order and sampling",
    _TRAIN + "trainer.TrainConfig.compile": "torch.compile the model",
    _TRAIN + "trainer.TrainConfig.device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
    _TRAIN + "trainer.TrainConfig.eval_batches": "validation batches per domain at each evaluation",
    _TRAIN + "trainer.TrainConfig.ckpt_every": "save a checkpoint every this many steps (and at the end)",
    _TRAIN + "trainer.TrainConfig.keep_last": "checkpoints kept (older ones pruned)",
    _TRAIN + "trainer.BatchGrowthConfig.factor": "grad_accum multiplier at each plateau",
    _TRAIN + "trainer.BatchGrowthConfig.max_grad_accum": "grad_accum never grows beyond this",
    _TRAIN + "trainer.TrainConfig.optim": "the optimizer: AdamW, or Muon on hidden matrices + AdamW (name: muon)",
    _TRAIN + "optim.OptimConfig.muon": "Muon settings (name: muon); the AdamW keys above still apply to the other parameters",
    _TRAIN + "trainer.TrainConfig.schedule": "the learning-rate schedule",
    _TRAIN + "optim.OptimConfig.lr": "peak learning rate (AdamW; with name: muon also Muon's, scaled by muon.lr_scale)",
    _TRAIN + "optim.OptimConfig.betas": "AdamW [beta1, beta2]",
    _TRAIN + "optim.OptimConfig.eps": "AdamW epsilon",
    _TRAIN + "optim.OptimConfig.weight_decay": "decoupled weight decay (not on norms and biases; Muon matrices too)",
    _TRAIN + "schedules.ScheduleConfig.kind": "LR schedule: constant, linear or cosine decay, wsd "
                                              "(warmup-stable-decay) or multistage",
    _TRAIN + "schedules.ScheduleConfig.warmup_steps": "linear warmup from 0 to the peak LR",
    _TRAIN + "schedules.ScheduleConfig.decay_shape": "wsd: shape of the decay",
    _TRAIN + "schedules.ScheduleConfig.stages": "multistage: the schedules run one after another",
    _TRAIN + "mixture.MixtureConfig.weights": "domain -> sampling share (normalised; {} = by token counts)",
    _TRAIN + "mixture.MixtureConfig.repeat": "domain -> its epochs per pass over the others: multiplies its natural token count (Skywork: encyclopedia x5); refused beside weights, which are final shares",
    _TRAIN + "mixture.MixtureConfig.ramp": "one domain's share moving linearly over the stage",
    _TRAIN + "mixture.RampConfig.domain": "the domain whose share ramps",
    _TRAIN + "mixture.RampConfig.start": "its share at the start of the stage",
    _TRAIN + "mixture.RampConfig.end": "its share at the end of the stage",
    _TRAIN + "mixture.StageConfig.name": "stage name (in metrics and the report)",
    _TRAIN + "mixture.StageConfig.steps": "steps of this stage",
    _TRAIN + "mixture.StageConfig.mixture": "this stage's domain mixture",
    _TRAIN + "mixture.StageConfig.schedule": "this stage's LR schedule (default constant)",
    # stages
    "lmforge.stages.grow.GrowConfig.micro_batch_size": "calibration sequences per forward pass",
    "lmforge.stages.longctx.LongCtxConfig.z_loss": "PaLM z-loss coefficient (0 = off)",
    "lmforge.stages.sft.SFTConfig.epochs": "passes over the conversations",
    "lmforge.stages.dpo.DPOConfig.tokenizer": "tokenizer folder; \"\" = the one beside init.from_checkpoint's run",
    "lmforge.stages.dpo.DPOConfig.epochs": "passes over the preference pairs",
    "lmforge.stages.dpo.DPOConfig.max_steps": "> 0: stop after this many steps; 0 = all epochs",
    "lmforge.stages.dpo.DPOConfig.reference": "precompute: reference log-probs once, cached; model: a frozen "
                                              "reference model beside the policy",
    "lmforge.stages.dpo.DPOConfig.val_fraction": "pairs held out for val/ metrics",
    "lmforge.stages.dpo.PairsFromSFTConfig.files": "SFT conversation files to build pairs from",
    "lmforge.stages.dpo.PairsFromSFTConfig.rejected": "synthetic: another conversation's reply, truncated or "
                                                      "shuffled; model: the starting model's own sample",
    "lmforge.stages.dpo.PairsFromSFTConfig.seed": "seed string of the synthetic pairs",
    "lmforge.stages.dpo.PairsFromSFTConfig.temperature": "rejected: model - sampling temperature",
    "lmforge.stages.dpo.PairsFromSFTConfig.top_p": "rejected: model - nucleus sampling mass",
    "lmforge.stages.dpo.RefusalsConfig.max_new_tokens": "longest refusal sampled",
    "lmforge.stages.dpo.RefusalsConfig.temperature": "sampling temperature of the refusals",
    "lmforge.stages.dpo.RefusalsConfig.top_p": "nucleus sampling mass of the refusals",
    "lmforge.stages.selfknow.SelfKnowConfig.tokenizer": "tokenizer folder; \"\" = the one beside "
                                                        "init.from_checkpoint's run",
    "lmforge.stages.selfknow.SelfKnowConfig.facts": "facts about the model, put in the positive prompt (RLCD)",
    "lmforge.stages.selfknow.SelfKnowConfig.prompts": "questions the model answers with and without the facts",
    "lmforge.stages.selfknow.SelfKnowConfig.few_shot": "{user, assistant} examples shown with the facts",
    "lmforge.stages.selfknow.SelfKnowConfig.samples_per_prompt": "answers sampled per prompt and class",
    "lmforge.stages.selfknow.SelfKnowConfig.max_new_tokens": "longest sampled answer",
    "lmforge.stages.selfknow.SelfKnowConfig.temperature": "sampling temperature of the answers",
    "lmforge.stages.selfknow.SelfKnowConfig.top_p": "nucleus sampling mass of the answers",
    "lmforge.stages.selfknow.SelfKnowConfig.tag_format": "class tag at the start of the system message; "
                                                         "must contain {name}",
    "lmforge.stages.selfknow.SelfKnowConfig.fact_questions": "written positives: each question answered by each "
                                                             "fact (\"builtin\" = the built-in identity questions); "
                                                             "never a held-out check question; [] = none",
    "lmforge.stages.selfknow.SelfKnowConfig.kl_coef": "weight of KL(policy || starting model) per target token",
    "lmforge.stages.selfknow.SelfKnowConfig.max_steps": "> 0: stop after this many steps; 0 = all epochs",
    "lmforge.stages.selfknow.SelfKnowConfig.max_turns": "drop conversations with more assistant turns "
                                                        "(0 = keep all)",
    "lmforge.stages.selfknow.SelfKnowConfig.neftune_alpha": "NEFTune noise on the embeddings; 0 = off",
    "lmforge.stages.selfknow.SelfKnowConfig.val_fraction": "conversations held out for val/ metrics",
    "lmforge.stages.longsft.LongSFTConfig.tasks": "long-instruction task kinds to generate",
    "lmforge.stages.longsft.LongSFTConfig.seed": "seed of document and task draws",
    # eval
    _EVAL + "EvalConfig.perplexity": "per-domain perplexity and bits per byte on a token dataset",
    _EVAL + "EvalConfig.mcq": "multiple-choice accuracy by log-likelihood",
    _EVAL + "EvalConfig.contamination": "benchmark contamination: n-gram overlap and the reference perplexity gap",
    _EVAL + "EvalConfig.continuation": "continuation choice on held-out text: which of 4 token spans follows a "
                                       "context (lmforge.eval.continuation)",
    _EVAL + "ContinuationConfig.split": "which split of the token dataset (val: documents no stage trained on)",
    _EVAL + "ContinuationConfig.seed": "distractor draw",
    _EVAL + "ContinuationConfig.batch_size": "choices scored per forward pass",
    _EVAL + "PerplexityConfig.split": "which split of the token dataset (val or train)",
    _EVAL + "PerplexityConfig.batch_size": "windows per forward pass",
    _EVAL + "MCQConfig.sets": "multiple-choice sets: {name, path} of jsonl files",
    _EVAL + "MCQSetConfig.name": "set name in the results",
    _EVAL + "MCQSetConfig.path": "jsonl of {question, choices, answer}",
    _EVAL + "MCQConfig.shots": "few-shot counts to evaluate each set at",
    _EVAL + "MCQConfig.batch_size": "choices scored per forward pass",
    _EVAL + "ContaminationConfig.benchmarks": "benchmarks checked for contamination: {name, test, reference, train}",
    _EVAL + "BenchmarkConfig.name": "benchmark name in the results",
    _EVAL + "ContaminationConfig.ngram": "n-gram length of the overlap check against training_data",
    _EVAL + "ContaminationConfig.max_items": "items per benchmark; 0 = all",
    _EVAL + "ContaminationConfig.batch_size": "items scored per forward pass",
    "lmforge.stages.needle.NeedleConfig.question": "question appended after the haystack",
    "lmforge.stages.needle.NeedleConfig.value_digits": "digits of the random value hidden in the needle",
    "lmforge.stages.needle.NeedleConfig.rope": "model: as trained; naive: no scaling past max_seq_len; "
                                               "dynamic / linear: RoPE scaling by rope_factor",
    "lmforge.stages.needle.NeedleConfig.rope_factor": "scaling factor of rope: dynamic / linear",
    "lmforge.stages.needle.NeedleConfig.seed": "seed of the values and haystack offsets",
    _STUDY + "LongStudyConfig.settings": "checkpoint x RoPE settings compared: {name, checkpoint, rope, factor, "
                                         "rope_theta}",
    _STUDY + "LongStudyConfig.ppl": "perplexity by context length",
    _STUDY + "LongStudyConfig.short": "short-context seesaw: short-text perplexity and multiple choice",
    _STUDY + "LongStudyConfig.needle": "needle-in-a-haystack over lengths x depths",
    _STUDY + "LongStudyConfig.tasks": "multi-needle, multi-value and key-value retrieval",
    _STUDY + "StudySetting.name": "setting name in the tables and plots",
    _STUDY + "StudySetting.rope": "model: as trained; naive: no scaling; dynamic / linear: scaled by factor",
    _STUDY + "StudyPplConfig.split": "which split of the token dataset",
    _STUDY + "StudyPplConfig.lengths": "context lengths at which perplexity is measured",
    _STUDY + "StudyPplConfig.concat": "auto: concatenate documents only when too few are long enough",
    _STUDY + "StudyShortConfig.max_docs_per_domain": "short-text documents per domain (the seesaw's perplexity)",
    _STUDY + "StudyShortConfig.mcq_max_items": "multiple-choice items per file",
    _STUDY + "StudyShortConfig.shots": "few-shot examples per multiple-choice item",
    _STUDY + "StudyNeedleConfig.depths": "needle depths in percent of the prompt",
    _STUDY + "StudyNeedleConfig.trials": "values / haystack offsets per cell",
    _STUDY + "StudyNeedleConfig.needle": "the sentence hidden in the haystack; must contain {value}",
    _STUDY + "StudyNeedleConfig.question": "question appended after the haystack",
    _STUDY + "StudyNeedleConfig.value_digits": "digits of the hidden value",
    _STUDY + "StudyNeedleConfig.distractors": "other values ranked against the true one (0 = exact match only)",
    _STUDY + "StudyNeedleConfig.seed": "seed of values and offsets",
    _STUDY + "StudyTasksConfig.kinds": "retrieval tasks: multi_needle, multi_value, kv",
    _STUDY + "StudyTasksConfig.trials": "trials per task and length",
    _STUDY + "StudyTasksConfig.kv_depths": "kv: depths (percent) of the asked key",
    _STUDY + "StudyTasksConfig.distractors": "other values ranked against the true one",
    _STUDY + "StudyTasksConfig.seed": "seed of the task draws",
    "lmforge.stages.export.ExportConfig.checkpoint": "step-N folder or run folder (its latest checkpoint)",
    "lmforge.stages.export.ExportConfig.out_dir": "the Hugging Face folder to write (with `adapter`: the base "
                                                  "model, LoRA adapters off)",
    "lmforge.stages.character.CharacterConfig.out_dir": "the character package folder to write",
    "lmforge.stages.report.ReportConfig.run_dir": "a recipe run folder (with recipe.json) or one stage's folder",
}
