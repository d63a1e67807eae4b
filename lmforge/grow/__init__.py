"""Depth up-scaling (Yi-9B, SOLAR): layer similarity on calibration text and the duplication of a
block of layers (lmforge.grow.depth). The `grow` stage is lmforge.stages.grow."""
