"""`lmforge generate --chat` prompts a Hugging Face folder in the tokenizer's own chat format and
stops at its turn end, as `lmforge chat` does (it always wrapped the prompt in ChatML, which a
Llama 3 or Gemma model never saw); our ChatML tokenizers keep ChatML and the default stops."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from chat_families import FAMILIES, make_family_tokenizer  # noqa: E402
from lmforge.align.chat_template import render as chatml_render  # noqa: E402
from lmforge.cli import main  # noqa: E402
from lmforge.infer import generate as gen  # noqa: E402
from lmforge.tokenizer.train import load_tokenizer  # noqa: E402


def hf_folder(tmp, family: str):
    out = make_family_tokenizer(tmp / family, family)
    tok = load_tokenizer(out / "tokenizer.json")
    specials = FAMILIES[family]
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, bos_token_id=tok.token_to_id(specials[1]),
                      eos_token_id=tok.token_to_id(specials[2]))
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out, tok


@pytest.fixture
def seen(monkeypatch):
    """The prompts and stop ids the CLI hands to generate (which still runs)."""
    calls = []
    real = gen.generate

    def spy(model, tok, inputs, **kw):
        calls.append((list(inputs), kw.get("stop_ids")))
        return real(model, tok, inputs, **kw)
    monkeypatch.setattr(gen, "generate", spy)
    return calls


@pytest.mark.parametrize("family", ["llama3", "gemma"])
def test_hf_folder_is_prompted_in_its_own_format(family, tmp_path, seen, capsys):
    folder, tok = hf_folder(tmp_path, family)
    assert main(["generate", str(folder), "--chat", "--prompt", "What color is the sky?",
                 "--max-new-tokens", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prompt"] == "What color is the sky?"
    (inputs, stop_ids), = seen
    _, bos, eos, _, turn_end, _ = FAMILIES[family]
    opener = "<|start_header_id|>assistant<|end_header_id|>\n\n" if family == "llama3" else "<start_of_turn>model\n"
    assert inputs[0].startswith(bos) and inputs[0].endswith(opener) and "<|im_start|>" not in inputs[0]
    assert {tok.token_to_id(turn_end), tok.token_to_id(eos)} <= set(stop_ids)


def test_gemma_refusing_a_system_message_is_one_line(tmp_path, seen, capsys):
    folder, _ = hf_folder(tmp_path, "gemma")
    capsys.readouterr()          # transformers' save progress
    assert main(["generate", str(folder), "--chat", "--system", "Be brief.", "--prompt", "Hi"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "System role not supported" in err and not seen


def test_our_chatml_tokenizer_keeps_chatml(tmp_path, seen, capsys):
    from test_eval_helpers import tiny_run
    run = tiny_run(tmp_path / "run", steps=1)
    assert main(["generate", str(run), "--chat", "--prompt", "Hi", "--max-new-tokens", "2", "--json"]) == 0
    (inputs, stop_ids), = seen
    assert inputs == [chatml_render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)]
    assert stop_ids is None     # generate's defaults: <|endoftext|> and <|im_end|>
