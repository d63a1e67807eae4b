"""Export: a checkpoint -> a Hugging Face folder with the same logits (lmforge.export.hf).
The `export` stage that wraps it is lmforge.stages.export; generation and chat are lmforge.infer."""
