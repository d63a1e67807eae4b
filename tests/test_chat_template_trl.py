"""The ChatML template works with TRL: transformers' apply_chat_template(...,
return_assistant_tokens_mask=True) marks exactly the tokens our SFT trains on, content parts
render as their joined text, and tools= is refused rather than ignored."""
import json
import random

import pytest

transformers = pytest.importorskip("transformers")
from jinja2.exceptions import TemplateError  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from lmforge.align.chat_template import encode_chat, render  # noqa: E402
from lmforge.export.hf import export_tokenizer  # noqa: E402
from lmforge.tokenizer.train import (CHATML_TEMPLATE, CHATML_TEMPLATE_V1, load_tokenizer,  # noqa: E402
                                     save_tokenizer, train_bpe)
from test_align_utils import SPECIALS, conversation, make_tokenizer  # noqa: E402

TRICKY = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What color is the sky?"},
     {"role": "assistant", "content": "  Blue.\n\nReally blue."}, {"role": "user", "content": "Sure?"},
     {"role": "assistant", "content": "\nYes"}],
    [{"role": "user", "content": "床前明月光"}, {"role": "assistant", "content": "疑是地上霜。 12345"}],
    [{"role": "user", "content": "empty reply next"}, {"role": "assistant", "content": ""}],
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def hf_mask(hf, messages):
    out = hf.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return out["input_ids"], out["assistant_masks"]


def test_assistant_mask_equals_our_reply_mask_token_by_token(tok_dir):
    hf = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    tok = load_tokenizer(tok_dir)
    rng = random.Random(5)
    convs = TRICKY + [conversation(rng, rng.randint(1, 3), rng.random() < 0.5)["messages"] for _ in range(20)]
    marked = 0
    for msgs in convs:
        ids, mask = encode_chat(tok, msgs, "all")
        hf_ids, hf_m = hf_mask(hf, msgs)
        assert hf_ids == ids.tolist()
        assert hf_m == mask.astype(int).tolist(), msgs
        assert hf.apply_chat_template(msgs, tokenize=False) == render(msgs)
        marked += sum(hf_m)
    assert marked > 100
    # the generation prompt is context only
    ids, m = hf_mask(hf, TRICKY[0][:2])
    assert m == encode_chat(tok, TRICKY[0][:2], "all")[1].astype(int).tolist()


def test_content_parts_render_as_joined_text_and_other_parts_are_refused(tok_dir):
    hf = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    parts = [{"role": "user", "content": [{"type": "text", "text": "What color "}, {"type": "text", "text": "is it?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "Green."}]}]
    plain = [{"role": "user", "content": "What color is it?"}, {"role": "assistant", "content": "Green."}]
    assert hf.apply_chat_template(parts, tokenize=False) == render(plain)
    assert hf_mask(hf, parts) == hf_mask(hf, plain)
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}]
    with pytest.raises(TemplateError, match="only text content parts"):
        hf.apply_chat_template(image, tokenize=False)


def test_tools_are_refused_not_ignored(tok_dir):
    hf = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    tool = {"type": "function", "function": {"name": "get_color", "description": "color of a thing",
                                             "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(TemplateError, match="tools are not supported"):
        hf.apply_chat_template(TRICKY[0], tools=[tool], tokenize=False)
    assert hf.apply_chat_template(TRICKY[0], tools=None, tokenize=False) == render(TRICKY[0])


def test_export_upgrades_the_template_of_older_tokenizer_folders(tmp_path):
    tok = train_bpe(["What color is the sky? Blue."] * 10, 300, SPECIALS)
    old = tmp_path / "old"
    save_tokenizer(tok, old, special_tokens=SPECIALS, bos_token=None, eos_token="<|endoftext|>",
                   pad_token="<|pad|>", chat_template=CHATML_TEMPLATE_V1)
    out = tmp_path / "export"
    out.mkdir()
    export_tokenizer(old, out)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHATML_TEMPLATE
