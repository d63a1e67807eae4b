"""Tokenizer library: train / extend a byte-level BPE, encode documents to token shards (the
stages that run them are lmforge.stages.tokenizer, extend and encode).

- `train.py`: `TokenizerConfig`, `train_folder`, `train_bpe`, the tokenizer folder (`save_tokenizer`, `load_tokenizer`,
  `tokenizer_info`, `padded_vocab_size`).
- `extend.py`: `extend_tokenizer` (new tokens, old ids kept), `new_embedding_rows` (mean init).
- `encode.py`: `EncodeConfig`, `encode_folder` (parallel, deterministic, val split per domain).
- `report.py`: characters/bytes per token by domain and language vs a baseline.

Submodules are imported on use so `import lmforge.tokenizer` stays cheap.
"""
