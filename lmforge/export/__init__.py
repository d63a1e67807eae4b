"""Export to a Hugging Face folder, text generation with a KV cache, and terminal chat.

    from lmforge.export.hf import ExportConfig, run, export          # checkpoint -> HF folder (stage)
    from lmforge.export.generate import generate, generate_ids, load_for_generation
    from lmforge.export.chat import ChatSession, chat_loop            # multi-turn ChatML, cache reuse
    lmforge.export.cli.register(subparsers)                           # `export`, `generate`, `chat`
"""
