"""Export to a Hugging Face folder, and text generation with a KV cache.

    from lmforge.export.generate import generate, generate_ids, load_for_generation
    from lmforge.export.hf import export
"""
