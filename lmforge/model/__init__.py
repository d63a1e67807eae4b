"""Llama-style decoder (RoPE incl. partial rotary, GQA, SwiGLU, RMSNorm, Norm-Head) with the
options of the common open families (biases, QK-norm, LayerNorm, GeGLU, sliding window, ...),
document-masked attention for packed rows, and Hugging Face conversion (docs/models.md)."""
from lmforge.model.config import PRESETS, ModelConfig
from lmforge.model.transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "PRESETS"]
