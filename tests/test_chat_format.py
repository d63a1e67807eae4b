"""Conversations in the tokenizer's own chat format (lmforge.align.chat_format): Llama-3-,
Mistral- and Gemma-style templates give the ids, text and reply mask that transformers'
apply_chat_template(..., return_assistant_tokens_mask=True) gives; templates without
generation markers find the same replies by prefix renders; the template travels through the
HF export unchanged; eos pads where no pad token exists, never as a target."""
import json
import random
from collections import Counter

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
from transformers import PreTrainedTokenizerFast  # noqa: E402

from chat_families import FAMILIES, conversation, make_family_tokenizer  # noqa: E402
from lmforge.align.chat_format import ChatMLFormat, TemplateFormat, chat_format, end_of_turn_id  # noqa: E402
from lmforge.align.chat_template import encode_chat  # noqa: E402
from lmforge.io.documents import ErrorSink  # noqa: E402
from lmforge.tokenizer.train import CHATML_TEMPLATE_V1, load_tokenizer, tokenizer_info  # noqa: E402
from test_align_utils import make_tokenizer, write_jsonl  # noqa: E402


def hf_encode(folder, msgs, **kw):
    hf = PreTrainedTokenizerFast.from_pretrained(str(folder))
    out = hf.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kw)
    return out["input_ids"], out["assistant_masks"], hf.apply_chat_template(msgs, tokenize=False, **kw)


def convs(family, n=12, seed=0):
    rng = random.Random(seed)
    return [conversation(rng, rng.randint(1, 3), family == "llama3" and rng.random() < 0.5) for _ in range(n)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("jinja_file", [False, True])
def test_ids_text_and_reply_mask_equal_apply_chat_template(family, jinja_file, tmp_path):
    d = make_family_tokenizer(tmp_path / family, family, jinja_file=jinja_file)
    tok = load_tokenizer(d)
    fmt = chat_format(d, tok)
    assert isinstance(fmt, TemplateFormat) and fmt.has_generation_markers
    marked = 0
    for msgs in convs(family):
        ids, mask = fmt.encode(tok, msgs, "all")
        hf_ids, hf_mask, hf_text = hf_encode(d, msgs)
        assert ids.tolist() == hf_ids and mask.astype(int).tolist() == hf_mask, msgs
        assert fmt.render(msgs) == hf_text
        marked += int(mask.sum())
        # the last reply only (DPO) = transformers' marks from the last reply's first token on
        last_ids, last = fmt.encode(tok, msgs, "last")
        start = max(i for i in range(len(hf_mask)) if hf_mask[i] and (i == 0 or not hf_mask[i - 1]))
        assert last.astype(int).tolist() == [m if i >= start else 0 for i, m in enumerate(hf_mask)]
        # a prompt with the generation prompt: no targets, transformers' text
        prompt = msgs[:-1]
        p_ids, p_mask = fmt.encode(tok, prompt, "none", add_generation_prompt=True)
        assert not p_mask.any() and p_ids.tolist() == hf_encode(d, prompt, add_generation_prompt=True)[0]
    assert marked > 50
    # "weight": 0 (OpenAI) leaves that reply as context
    msgs = convs(family, 1, seed=3)[0] + conversation(random.Random(1), 1)
    assert msgs[-3]["role"] == "assistant"
    msgs[-3] = {**msgs[-3], "weight": 0}
    assert fmt.encode(tok, msgs)[1].sum() < fmt.encode(tok, [{k: v for k, v in m.items() if k != "weight"}
                                                              for m in msgs])[1].sum()
    end = end_of_turn_id(fmt, tok)
    assert tok.id_to_token(end) == FAMILIES[family][4]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_templates_without_markers_find_replies_by_prefix_renders(family, tmp_path):
    """No {% generation %}: a reply is what rendering it adds after the generation prompt (TRL's
    prompt/completion rule), the marked span of the marker version (Gemma: plus the "\\n" its
    template writes after <end_of_turn>)."""
    plain = make_family_tokenizer(tmp_path / "plain", family, markers=False)
    marked = make_family_tokenizer(tmp_path / "marked", family, markers=True)
    tok = load_tokenizer(plain)
    fmt = chat_format(plain, tok)
    assert not fmt.has_generation_markers
    for msgs in convs(family):
        ids, mask = fmt.encode(tok, msgs)
        hf_ids, hf_mask, _ = hf_encode(marked, msgs)
        assert ids.tolist() == hf_ids
        extra = [tok.id_to_token(int(i)) for i, m, h in zip(ids, mask, hf_mask) if m and not h]
        assert extra == ([] if family != "gemma" else ["Ċ"] * (len(msgs) // 2)), extra
        assert not any(h and not m for m, h in zip(mask, hf_mask))


def test_a_conversation_the_template_refuses_is_malformed(tmp_path):
    from lmforge.align.sft_data import load_conversations

    d = make_family_tokenizer(tmp_path / "gemma", "gemma")
    tok = load_tokenizer(d)
    rng = random.Random(0)
    data = write_jsonl(tmp_path / "c.jsonl", [{"messages": conversation(rng, 1, system=True)},
                                              {"messages": conversation(rng, 2)}])
    errors = ErrorSink(tmp_path / "rejects.jsonl")
    out, stats = load_conversations([str(data)], tok, 128, 8, errors, chat=chat_format(d, tok))
    errors.close()
    assert stats["kept"] == 1 and stats["malformed"] == 1
    assert "System role not supported" in (tmp_path / "rejects.jsonl").read_text()


def test_our_tokenizers_keep_the_chatml_path(tmp_path):
    d = make_tokenizer(tmp_path / "ours")
    tok = load_tokenizer(d)
    fmt = chat_format(d, tok)
    assert isinstance(fmt, ChatMLFormat)
    for msgs in convs("llama3"):
        a, b = fmt.encode(tok, msgs), encode_chat(tok, msgs)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert tok.id_to_token(end_of_turn_id(fmt, tok)) == "<|im_end|>"
    # the older ChatML template renders the same text: still ChatML; a ChatML-like template that
    # adds a default system turn (Qwen's) is that tokenizer's own format
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    for template, kind in ((CHATML_TEMPLATE_V1, "chatml"), (QWEN_LIKE, "template")):
        (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}))
        fmt = chat_format(d, tok)
        assert fmt.kind == kind
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert fmt.render(msgs).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    hf_ids, hf_mask, _ = hf_encode(d, msgs)
    assert fmt.encode(tok, msgs)[1].astype(int).tolist() == hf_mask and sum(hf_mask) > 2


QWEN_LIKE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
             "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
             "{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['role'] == 'assistant' %}{% generation %}"
             "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
             "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_base_tokenizer_without_template_or_chatml_has_no_format(tmp_path):
    d = make_family_tokenizer(tmp_path / "base", "llama3")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert chat_format(d, load_tokenizer(d)) is None


def test_eos_pads_where_no_pad_token_exists_and_never_reaches_the_loss(tmp_path):
    """Mistral declares no pad: eos pads the rows. The </s> that closes a reply is still a
    target; the padding </s> after the last conversation is not."""
    from lmforge.align.sft_data import build_row, load_conversations

    d = make_family_tokenizer(tmp_path / "mistral", "mistral")
    tok = load_tokenizer(d)
    info = tokenizer_info(d, tok)
    eos = tok.token_to_id("</s>")
    assert info["pad_id"] == eos and info["pad_is_eos"]
    data = write_jsonl(tmp_path / "c.jsonl", [{"messages": conversation(random.Random(0), 1)}])
    convs_, _ = load_conversations([str(data)], tok, 64, 8, ErrorSink(None), chat=chat_format(d, tok))
    n = len(convs_[0].ids)
    row = build_row(convs_, [0], 64, info["pad_id"])
    assert (row["input_ids"][n:] == eos).all() and (row["labels"][n - 1:] == -100).all()
    assert row["labels"][n - 2] == eos   # the reply's own </s>: learnt (the model must stop)
    assert Counter(row["labels"].tolist())[-100] == 64 - int(convs_[0].mask[1:].sum())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("jinja_file", [False, True])
def test_export_keeps_the_template_and_renders_the_same_prompt(family, jinja_file, tmp_path):
    from lmforge.export.hf import export_tokenizer

    d = make_family_tokenizer(tmp_path / "src", family, jinja_file=jinja_file)
    out = tmp_path / "out"
    out.mkdir()
    ids = export_tokenizer(d, out, 128)
    assert (out / "chat_template.jinja").is_file() == jinja_file
    a, b = (PreTrainedTokenizerFast.from_pretrained(str(p)) for p in (d, out))
    for msgs in convs(family, 4):
        for kw in ({"add_generation_prompt": True, "conversation": msgs[:-1]}, {"conversation": msgs}):
            assert a.apply_chat_template(tokenize=False, **kw) == b.apply_chat_template(tokenize=False, **kw)
            assert a.apply_chat_template(**kw) == b.apply_chat_template(**kw)
    assert "<|im_start|>" not in (out / "tokenizer_config.json").read_text()
    assert ids["im_end_id"] == a.convert_tokens_to_ids(FAMILIES[family][4])


def test_copy_tokenizer_copies_tokenizer_files_only(tmp_path):
    from lmforge.checkpoint import copy_tokenizer

    d = make_family_tokenizer(tmp_path / "hf", "llama3", jinja_file=True)
    (d / "model.safetensors").write_bytes(b"weights")
    (d / "config.json").write_text("{}")
    dst = copy_tokenizer(d, tmp_path / "run")
    assert sorted(p.name for p in dst.iterdir()) == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]


def test_a_template_that_rewrites_earlier_turns_is_refused_without_markers(tmp_path):
    """No markers and a template whose render of a prefix is not a prefix of the whole (it
    writes the turn count into the first line): the reply cannot be located, the record is
    refused naming the message, never masked wrong."""
    from lmforge.align.chat_format import TemplateFormat

    fmt = TemplateFormat("{{ messages | length }}\n{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}", {})
    tok = load_tokenizer(make_tokenizer(tmp_path / "t"))
    with pytest.raises(ValueError, match=r"messages\[:2\] is not a prefix .*reply 1 cannot be located .*generation"):
        fmt.encode(tok, conversation(random.Random(0), 1))
