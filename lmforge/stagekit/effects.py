"""Before/after measurements of the conversation stages (SFT, C-RLFT), on held-out data:
the stage's input model against its output model, each a lmforge.eval.effect dict.

- reply loss: mean NLL per reply token of each held-out conversation (val_fraction);
- format: greedy replies to the held-out prompts that end their turn with <|im_end|> within
  `max_new_tokens` and open no new turn. The pretrained model saw its dialogs only as plain
  "User: / Assistant:" text, so ChatML turn-taking is what SFT has to teach: a format a
  model of any size can learn.
"""
from __future__ import annotations

import numpy as np

from lmforge.align.chat_template import IM_END, IM_START
from lmforge.eval.effect import mean_target_nll, paired_effect
from lmforge.infer.generate import generate_ids
from lmforge.model.load import load_checkpoint

FORMAT_TOKENS = 48   # a chatterbot reply is ~15 tokens; 48 leaves room without rewarding rambling


def conversation_items(convs) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(c.ids, c.mask) for c in convs]


def first_prompt(conv) -> list[int]:
    """The tokens before the conversation's first reply (ending with "<|im_start|>assistant\\n")."""
    first = int(np.argmax(conv.mask)) if conv.mask.any() else len(conv.ids)
    return conv.ids[:first].tolist()


def ends_turn(tok, pad_id: int = 0, max_new_tokens: int = FORMAT_TOKENS, end: int | None = None,
              start: int | None = None):
    """(prompts, model) -> 0/1 per prompt: the greedy reply is non-empty, ends with <|im_end|>
    (or `end`, the turn end of another chat format) before max_new_tokens and contains no
    <|im_start|> (the model did not write the next turn; `start` where given)."""
    if end is None:
        end, start = tok.token_to_id(IM_END), tok.token_to_id(IM_START)

    def score(model, prompts: list[list[int]]) -> np.ndarray:
        budget = min(max_new_tokens, model.cfg.max_seq_len // 2)   # a shrunk (smoke) window keeps room for the prompt
        out = []
        for i in range(0, len(prompts), 16):
            batch = prompts[i:i + 16]
            # stop only at <|im_end|> (not kept in g): a reply that fills the budget did not end
            gen = generate_ids(model, batch, max_new_tokens=budget, stop_ids=[end], pad_id=pad_id)
            out += [float(0 < len(g) < budget and start not in g) for g in gen]
        return np.asarray(out)

    return score


def conversation_effect(start_model, model, tok, val_convs, pad_id: int = 0, chat=None) -> dict | None:
    """The held-out reply loss (headline) and the turn-taking rate (in `more`; ChatML, or the
    turn end of `chat`, the tokenizer's own format, where it has one)."""
    from lmforge.align.chat_format import end_of_turn_id

    if not val_convs:
        return None
    items = conversation_items(val_convs)
    loss = paired_effect("held-out reply loss (nats/token)", mean_target_nll(start_model, items),
                         mean_target_nll(model, items), False)
    prompts = [first_prompt(c) for c in val_convs]
    prompts = [p for p in prompts if p]
    own = chat is not None and chat.kind != "chatml"
    end = end_of_turn_id(chat, tok) if own else tok.token_to_id(IM_END)
    if prompts and end is not None:
        score = ends_turn(tok, pad_id, end=end, start=None if own else tok.token_to_id(IM_START))
        loss["more"] = [paired_effect(f"replies that end their turn ({tok.id_to_token(end)} within "
                                      f"{FORMAT_TOKENS} tokens)",
                                      score(start_model, prompts), score(model, prompts), True)]
    return loss


def start_model_of(step_dir, model):
    """The stage's input model on the trained model's device."""
    start, _ = load_checkpoint(step_dir, next(model.parameters()).device)
    return start


def sft_effect(cfg, trainer) -> dict | None:
    """For run_trainer_stage: the SFT stage's held-out conversations, input vs output model."""
    from lmforge.stagekit.source import load_source

    src = load_source(cfg.init, cfg.tokenizer, own_format=True)
    return conversation_effect(start_model_of(src.step_dir, trainer.model), trainer.model, src.tok,
                               trainer.objective.val_convs, src.info.get("pad_id") or 0, src.chat)
