"""Data adapters: every SFT format gives the ids and reply mask of the equivalent OpenAI
conversation; DPO reads TRL's explicit and implicit forms, string and conversational."""
import json

import pytest

from lmforge import config
from lmforge.align.chat_template import encode_chat
from lmforge.align.formats import DataFile
from lmforge.align.preference_data import encode_pair, load_pairs
from lmforge.align.sft_data import load_conversations
from lmforge.config import ConfigError
from lmforge.io.documents import ErrorSink
from lmforge.tokenizer.train import load_tokenizer
from test_align_utils import make_tokenizer, write_jsonl

SYS = {"role": "system", "content": "You answer questions about colors."}
U1, A1 = {"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "The sky is blue."}
U2, A2 = {"role": "user", "content": "And the grass?\nTell me."}, {"role": "assistant", "content": "  It is green."}
CONV = [SYS, U1, A1, U2, A2]
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


def load(tok, tmp_path, records, spec=None, name="d.jsonl"):
    path = write_jsonl(tmp_path / name, records)
    entry = DataFile(path=str(path), **(spec or {})) if spec is not None else str(path)
    errors = ErrorSink(tmp_path / f"{name}.rejects.jsonl")
    convs, stats = load_conversations([entry], tok, 512, 0, errors, eos_id=tok.token_to_id(EOS))
    errors.close()
    return convs, stats


def same(conv, tok, messages):
    ids, mask = encode_chat(tok, messages, "all")
    return conv.ids.tolist() == ids.tolist() and conv.mask.tolist() == mask.tolist()


SHAREGPT = {"system": SYS["content"], "conversations": [
    {"from": "human", "value": U1["content"]}, {"from": "gpt", "value": A1["content"]},
    {"from": "human", "value": U2["content"]}, {"from": "gpt", "value": A2["content"]}]}
ALPACA = {"instruction": "And the grass?", "input": "Tell me.", "output": A2["content"], "system": SYS["content"],
          "history": [[U1["content"], A1["content"]]]}
PARTS = {"messages": [SYS, {"role": "user", "content": [{"type": "text", "text": "What color "},
                                                          {"type": "text", "text": "is the sky?"}]},
                      {**A1, "name": "bot"}, {**U2, "name": "me"}, {**A2, "weight": 1}]}
PC = {"prompt": [SYS, U1, A1, U2], "completion": [A2]}


@pytest.mark.parametrize("record,spec", [
    ({"messages": CONV}, None),
    (PARTS, None),
    (SHAREGPT, None),
    (SHAREGPT, {"format": "sharegpt"}),
    (ALPACA, None),
    ({"q": "And the grass?", "ctx": "Tell me.", "a": A2["content"], "system": SYS["content"],
      "history": [[U1["content"], A1["content"]]]},
     {"format": "alpaca", "columns": {"instruction": "q", "input": "ctx", "output": "a"}}),
    ({"dialog": [{"speaker": "sys", "text": SYS["content"]}, {"speaker": "me", "text": U1["content"]},
                 {"speaker": "bot", "text": A1["content"]}, {"speaker": "me", "text": U2["content"]},
                 {"speaker": "bot", "text": A2["content"]}]},
     {"format": "sharegpt", "columns": {"messages": "dialog"},
      "tags": {"role": "speaker", "content": "text", "user": "me", "assistant": "bot", "system": "sys"}}),
], ids=["messages", "content_parts", "sharegpt_auto", "sharegpt", "alpaca", "alpaca_columns", "tags"])
def test_every_sft_format_equals_the_openai_conversation(tok, tmp_path, record, spec):
    convs, stats = load(tok, tmp_path, [record], spec)
    assert stats["kept"] == 1, stats
    assert same(convs[0], tok, CONV)


def test_extra_keys_counted_and_weight_zero_is_context(tok, tmp_path):
    convs, stats = load(tok, tmp_path, [PARTS, {"messages": [U1, {**A1, "weight": 0}, U2, A2]}])
    assert stats["kept"] == 2 and stats["ignored_keys"] == {"name": 2}
    c = convs[1]
    assert tok.decode(c.ids[c.mask].tolist(), skip_special_tokens=False) == A2["content"] + "<|im_end|>"
    _, stats = load(tok, tmp_path, [{"messages": [U1, {**A1, "weight": 0}]}], name="w0.jsonl")
    assert stats["no_assistant"] == 1 and stats["kept"] == 0


def test_prompt_completion_and_text_train_on_what_trl_does(tok, tmp_path):
    recs = [{"prompt": "The color of the sky is", "completion": " blue."}, {"text": "Plain text, all of it."}, PC]
    convs, stats = load(tok, tmp_path, recs)
    assert stats["kept"] == 3
    pc, text, conv = convs
    assert tok.decode(pc.ids.tolist(), skip_special_tokens=False) == "The color of the sky is blue." + EOS
    assert tok.decode(pc.ids[pc.mask].tolist(), skip_special_tokens=False) == " blue." + EOS
    assert text.mask.all() and tok.decode(text.ids.tolist(), skip_special_tokens=False) == recs[1]["text"] + EOS
    # conversational: the replies in the prompt are context, the completion's reply is the target
    ids, _ = encode_chat(tok, CONV, "all")
    assert conv.ids.tolist() == ids.tolist()
    assert tok.decode(conv.ids[conv.mask].tolist(), skip_special_tokens=False) == A2["content"] + "<|im_end|>"


def test_unusable_records_rejected_with_reasons(tok, tmp_path):
    bad = [
        {"messages": [U1, {"role": "tool", "content": "42"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, A1]},
        {"messages": [U1, A1], "tools": [{"type": "function"}]},
        {"messages": [U1, {**A1, "weight": 2}]},
        {"question": "?", "answer": "!"},
        {"prompt": "x", "completion": [A1]},
        {"instruction": "Say hi", "output": 5},
    ]
    convs, stats = load(tok, tmp_path, [*bad, {"messages": CONV}], name="bad.jsonl")
    assert stats["records"] == 8 and stats["kept"] == 1 and stats["malformed"] == 7
    details = [json.loads(line)["detail"] for line in (tmp_path / "bad.jsonl.rejects.jsonl").read_text().splitlines()]
    for want in ("tool messages", "only text parts", "tools are not supported", "weight: 0 or 1",
                 "unknown record shape (keys: answer, question)", "both be strings or both be message lists",
                 "output is not a string"):
        assert any(want in d for d in details), (want, details)


def test_json_array_and_parquet_files(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "alpaca.json").write_text(json.dumps([ALPACA, ALPACA, "oops"]))
    pq.write_table(pa.Table.from_pylist([{"prompt": "The sky is", "completion": " blue."}] * 3),
                   tmp_path / "pc.parquet")
    errors = ErrorSink()
    convs, stats = load_conversations([str(tmp_path / "alpaca.json"), str(tmp_path / "pc.parquet")], tok, 512, 0,
                                      errors, eos_id=tok.token_to_id(EOS))
    assert stats["records"] == 6 and stats["kept"] == 5 and stats["malformed"] == 1
    assert same(convs[0], tok, CONV)


def test_sft_config_takes_format_mappings(tmp_path):
    from lmforge.stages.sft import SFTConfig

    cfg = config.load(SFTConfig, None, ["init.from_checkpoint=x", "data=[a.jsonl, {path: b.json, format: alpaca, "
                                        "columns: {instruction: q}}]"])
    assert cfg.data[0] == "a.jsonl" and cfg.data[1] == DataFile("b.json", "alpaca", {"instruction": "q"})
    with pytest.raises(ConfigError, match="data"):
        config.load(SFTConfig, None, ["init.from_checkpoint=x", "data=[{path: b.json, format: nonsense}]"])


# ---------------------------------------------------------------- DPO


def pair_ids(p):
    return [p.chosen.tolist(), p.chosen_mask.tolist(), p.rejected.tolist(), p.rejected_mask.tolist()]


REF_PROMPT = [U1]
DPO_FORMS = {
    "explicit_string": {"prompt": U1["content"], "chosen": "Blue.", "rejected": "Red."},
    "explicit_conversational": {"prompt": [U1], "chosen": [{"role": "assistant", "content": "Blue."}],
                                "rejected": [{"role": "assistant", "content": "Red."}]},
    "implicit_conversational": {"chosen": [U1, {"role": "assistant", "content": "Blue."}],
                                "rejected": [U1, {"role": "assistant", "content": "Red."}]},
    "ultrafeedback": {"prompt": U1["content"], "chosen": [U1, {"role": "assistant", "content": "Blue."}],
                      "rejected": [U1, {"role": "assistant", "content": "Red."}]},
    "sharegpt_messages": {"chosen": [{"from": "human", "value": U1["content"]}, {"from": "gpt", "value": "Blue."}],
                          "rejected": [{"from": "human", "value": U1["content"]}, {"from": "gpt", "value": "Red."}]},
}


def test_dpo_forms_give_the_same_pair(tok, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", list(DPO_FORMS.values()))
    pairs, stats = load_pairs([str(path)], tok, 256, ErrorSink())
    ref = pair_ids(encode_pair(tok, REF_PROMPT, "Blue.", "Red."))
    # all forms are one pair: the first is kept, the rest are its duplicates
    assert stats["kept"] == 1 and stats["duplicate"] == len(DPO_FORMS) - 1
    assert pair_ids(pairs[0]) == ref
    for name, rec in DPO_FORMS.items():
        one = write_jsonl(tmp_path / f"{name}.jsonl", [rec])
        got, st = load_pairs([str(one)], tok, 256, ErrorSink())
        assert st["kept"] == 1 and pair_ids(got[0]) == ref, name


def test_implicit_string_prompt_is_trl_common_prefix(tok, tmp_path):
    rec = {"chosen": "Q: what color is the sky? A: blue", "rejected": "Q: what color is the sky? A: red"}
    path = write_jsonl(tmp_path / "s.jsonl", [rec, {"chosen": "blue", "rejected": "red"},
                                              {"chosen": [U1, A1], "rejected": [U2, A2]}])
    errors = ErrorSink()
    pairs, stats = load_pairs([str(path)], tok, 256, errors)
    assert stats["kept"] == 1 and stats["malformed"] == 2
    # TRL extract_prompt: prompt "Q: ... A:", chosen " blue", rejected " red"
    want = encode_pair(tok, [{"role": "user", "content": "Q: what color is the sky? A:"}], " blue", " red")
    assert pair_ids(pairs[0]) == pair_ids(want)
    assert [r["detail"] for r in errors.records] == [
        "chosen and rejected share no prompt (no common beginning)",
        "chosen and rejected differ before their last message (implicit prompt: everything but the final "
        "reply must be shared)"]
    cols = DataFile(path=str(write_jsonl(tmp_path / "c.jsonl", [{"question": U1["content"], "good": "Blue.",
                                                                   "bad": "Red."}])),
                    format="explicit", columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    got, _ = load_pairs([cols], tok, 256, ErrorSink())
    assert pair_ids(got[0]) == pair_ids(encode_pair(tok, REF_PROMPT, "Blue.", "Red."))
