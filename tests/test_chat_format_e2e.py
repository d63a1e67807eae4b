"""A Llama-3-style and a Gemma-style Hugging Face folder (tiny random LlamaForCausalLM, the
family's tokenizer and chat template, no pad token for Llama 3) go through `lmforge sft` and
`lmforge dpo` in their own chat format, export to HF with the template intact (the exported
folder renders the same prompt as the original), and a GGUF written from the HF-started run
carries the right eos / end-of-turn ids and the chat template (read back with gguf), equal
to the HF export's. The runs keep only the tokenizer files, not the source weights."""
import json
import random
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
from gguf import GGUFReader  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from chat_families import FAMILIES, conversation, make_family_tokenizer  # noqa: E402
from lmforge import config  # noqa: E402
from test_align_utils import losses, write_jsonl  # noqa: E402


def hf_folder(tmp, family: str, jinja_file: bool):
    tok_dir = make_family_tokenizer(tmp / f"{family}-tok", family, jinja_file=jinja_file)
    hf_tok = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id)
    torch.manual_seed(0)
    out = tmp / family
    LlamaForCausalLM(cfg).save_pretrained(out)
    if jinja_file:   # transformers 5 writes the template to chat_template.jinja
        hf_tok.save_pretrained(out)
    else:            # an older folder: the template inside tokenizer_config.json
        for f in tok_dir.iterdir():
            shutil.copy2(f, out / f.name)
    return out


def field(reader, key):
    return reader.fields[key].contents() if key in reader.fields else None


@pytest.mark.parametrize("family,jinja_file", [("llama3", True), ("gemma", False)])
def test_own_format_through_sft_dpo_export_and_gguf(family, jinja_file, tmp_path):
    from lmforge.export.gguf import export_gguf
    from lmforge.export.hf import export
    from lmforge.export.hf_import import import_hf
    from lmforge.infer.chat import ChatSession, own_chat_format
    from lmforge.infer.generate import load_for_generation
    from lmforge.stages.dpo import DPOConfig, run as dpo
    from lmforge.stages.sft import SFTConfig, run as sft

    src = hf_folder(tmp_path, family, jinja_file)
    rng = random.Random(0)
    data = write_jsonl(tmp_path / "sft.jsonl", [{"messages": conversation(rng, rng.randint(1, 2))} for _ in range(12)])
    s = sft(config.load(SFTConfig, None, [f"init.from_checkpoint={src}", f"data=[{data}]", f"out_dir={tmp_path / 's'}",
                                          "train.seq_len=96", "train.micro_batch_size=4", "max_steps=3",
                                          "train.optim.lr=1e-2"]), progress=False)
    ls = losses(tmp_path / "s")
    assert s["step"] == 3 and len(ls) == 3 and ls[-1] < ls[0]
    kept = sorted(p.name for p in (tmp_path / "s" / "tokenizer").iterdir())
    assert "model.safetensors" not in kept and "tokenizer.json" in kept
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"What color is the {t}?", "chosen": f"The {t} is blue.",
                                                "rejected": "No."} for t in ("sky", "sea", "leaf", "milk")])
    d = dpo(config.load(DPOConfig, None, [f"init.from_checkpoint={tmp_path / 's'}", f"data=[{pairs}]",
                                          "train.seq_len=64", "train.micro_batch_size=2", "max_steps=2",
                                          f"out_dir={tmp_path / 'd'}"]), progress=False)
    assert d["step"] == 2

    original = PreTrainedTokenizerFast.from_pretrained(str(src))
    msgs = conversation(random.Random(5), 2)
    end_of_turn = original.convert_tokens_to_ids(FAMILIES[family][4])
    import_hf(src, tmp_path / "imp")   # `lmforge import`, then export: the template survives that too
    for run in ("s", "d", "imp"):
        out = export(tmp_path / run, tmp_path / f"hf-{run}")
        exported = PreTrainedTokenizerFast.from_pretrained(str(out))
        assert (exported.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
                == original.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False))
        assert exported.apply_chat_template(msgs) == original.apply_chat_template(msgs)
        gen = json.loads((out / "generation_config.json").read_text())
        assert gen["eos_token_id"] == [original.eos_token_id, end_of_turn]
        assert json.loads((out / "config.json").read_text())["eos_token_id"] == original.eos_token_id

    # `lmforge chat` on the export prompts in the model's own format and stops at its turn end
    model, tok = load_for_generation(tmp_path / "hf-d")
    fmt, stops = own_chat_format(tmp_path / "hf-d", tok)
    session = ChatSession(model, tok, max_new_tokens=4, temperature=0.0, chat=fmt, stop_ids=stops)
    session.messages = [{"role": "user", "content": "What color is the sky?"}]
    assert session.prompt_ids() == original.apply_chat_template(session.messages, add_generation_prompt=True,
                                                                return_dict=True)["input_ids"]
    assert {end_of_turn, original.eos_token_id} <= session.stop_ids

    # GGUF straight from the HF-started run (its tokenizer/ has no lmforge side file)
    r = GGUFReader(str(export_gguf(tmp_path / "s", tmp_path / "s.gguf")))
    hf_export = tmp_path / "hf-s"
    template = ((hf_export / "chat_template.jinja").read_text() if jinja_file
                else json.loads((hf_export / "tokenizer_config.json").read_text())["chat_template"])
    assert field(r, "tokenizer.chat_template") == template == original.chat_template
    assert field(r, "tokenizer.ggml.eos_token_id") == original.eos_token_id
    assert field(r, "tokenizer.ggml.bos_token_id") == original.bos_token_id
    assert field(r, "tokenizer.ggml.eot_token_id") == end_of_turn


def test_which_stages_take_which_tokenizers(tmp_path):
    """SFT/DPO take a tokenizer's own template; the stages that write ChatML themselves
    (selfknow, character) refuse it in one line; a base tokenizer with neither is refused."""
    from lmforge.config import ConfigError
    from lmforge.stagekit.source import InitConfig, load_source

    src = hf_folder(tmp_path, "mistral", jinja_file=False)
    init = InitConfig(from_checkpoint=str(src))
    s = load_source(init, "", own_format=True)
    assert s.chat.kind == "template" and s.info["pad_id"] == s.tok.token_to_id("</s>")   # eos pads
    with pytest.raises(ConfigError, match="this stage writes ChatML; sft and dpo take"):
        load_source(init, "")
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (src / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="has no chat template and no ChatML tokens"):
        load_source(init, "", own_format=True)
