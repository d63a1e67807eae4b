"""Small Hugging Face tokenizer folders in the chat formats of released families (Llama 3,
Mistral, Gemma): a byte-level BPE trained here with each family's special tokens, and that
family's chat template (with or without {% generation %} markers, in tokenizer_config.json
or in chat_template.jinja as transformers 5 writes it). No lmforge side file: these are
what a user's HF folder holds. Shared by test_chat_format.py and test_chat_format_e2e.py."""
import json
import random
from pathlib import Path

from lmforge.tokenizer.train import train_bpe

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' }}"
    "{% if role == 'model' %}{% generation %}{{ message['content'] | trim + '<end_of_turn>' }}{% endgeneration %}"
    "{{ '\n' }}{% else %}{{ message['content'] | trim + '<end_of_turn>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

# family: (special tokens, bos, eos, pad or None, end of turn, template)
FAMILIES = {
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|end_of_text|>", None, "<|eot_id|>", LLAMA3),
    "mistral": (["<unk>", "<s>", "</s>"], "<s>", "</s>", None, "</s>", MISTRAL),
    "gemma": (["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
              "<bos>", "<eos>", "<pad>", "<end_of_turn>", GEMMA),
}
THINGS = ["sky", "grass", "sun", "snow", "coal", "cherry", "plum", "lemon", "sea", "leaf", "night", "milk"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]


def no_markers(template: str) -> str:
    return template.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def conversation(rng: random.Random, turns: int, system: bool = False) -> list[dict]:
    msgs = [{"role": "system", "content": "You answer questions about colors."}] if system else []
    for _ in range(turns):
        t = rng.choice(THINGS)
        msgs += [{"role": "user", "content": f"What color is the {t}?"},
                 {"role": "assistant", "content": f"The {t} is {COLORS[sum(map(ord, t)) % len(COLORS)]}."}]
    return msgs


def make_family_tokenizer(folder: Path, family: str, markers: bool = True, jinja_file: bool = False,
                          vocab: int = 400) -> Path:
    specials, bos, eos, pad, _, template = FAMILIES[family]
    template = template if markers else no_markers(template)
    rng = random.Random(0)
    texts = [" ".join(m["content"] for m in conversation(rng, 3, True)) for _ in range(200)]
    texts += ["The quick brown fox jumps over the lazy dog. 12345 [INST] [/INST] text."] * 5
    tok = train_bpe(texts, vocab, specials)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
           "clean_up_tokenization_spaces": False, "model_max_length": 128}
    if pad is not None:
        cfg["pad_token"] = pad
    if jinja_file:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    else:
        cfg["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return folder
