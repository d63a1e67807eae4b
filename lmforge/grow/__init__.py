"""Depth up-scaling (Yi-9B, SOLAR): layer similarity on calibration text, duplicate a block
of layers, write a checkpoint the trainer continues from. See lmforge/grow/stage.py."""
from lmforge.grow.stage import GrowConfig, run

__all__ = ["GrowConfig", "run"]
