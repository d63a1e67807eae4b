"""Llama-style decoder (RoPE incl. partial rotary, GQA, SwiGLU, RMSNorm, Norm-Head),
document-masked attention for packed rows, and Hugging Face conversion."""
from lmforge.model.config import PRESETS, ModelConfig
from lmforge.model.transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "PRESETS"]
