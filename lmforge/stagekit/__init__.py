"""The shared stage kit: what every training stage does the same way, in one place, so
each stage file (lmforge.stages.*) reads top to bottom on its own.

    lmforge.stagekit.source          InitConfig, Source, load_source (checkpoint + tokenizer, checked)
    lmforge.stagekit.runner          done_summary / write_done, reject_sink, start_trainer, finish, ...
    lmforge.stagekit.conversations   MixConfig, CHAT_TRAIN defaults, build_conversation_objective
                                     (SFT and C-RLFT: conversations -> packed rows -> objective)
"""
