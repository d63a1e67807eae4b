"""`lmforge export`: the folder loads in transformers offline with our logits and greedy output."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lmforge.export.generate import generate, generate_ids  # noqa: E402
from lmforge.export.hf import export  # noqa: E402
from lmforge.model.load import load_checkpoint, tokenizer_dir_of  # noqa: E402
from lmforge.tokenizer.train import load_tokenizer  # noqa: E402
from test_eval_helpers import tiny_run  # noqa: E402

VARIANTS = {"plain": (), "norm_head_partial_rotary": ("model.norm_head=true", "model.rotary_pct=0.5")}


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    run = tiny_run(tmp, steps=3, extra=VARIANTS[request.param])
    out = export(run, tmp / "hf")
    return run, out


def test_folder_files_and_tokenizer(exported):
    run, out = exported
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "generation_config.json", "lmforge_export.json"):
        assert (out / f).is_file(), f
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ours = load_tokenizer(run / "tokenizer")
    text = "The fox 12345 床前明月光"
    assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text).ids
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eos_token_id"] == ours.token_to_id("<|endoftext|>")


def test_same_logits_in_transformers(exported):
    run, out = exported
    model, _ = load_checkpoint(run)
    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    x = torch.randint(0, model.cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x)[..., :model.cfg.vocab_size], hf(x).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_greedy_generation_equals_transformers(exported):
    run, out = exported
    model, step = load_checkpoint(run)
    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = load_tokenizer(tokenizer_dir_of(step))
    prompts = ["The quick brown", "def add(a, b):\n    return", "床前"]
    n = 12
    ours = generate_ids(model, [tok.encode(p).ids for p in prompts], max_new_tokens=n, stop_ids=[])
    for p, got in zip(prompts, ours):   # transformers one prompt at a time: no padding involved
        ids = torch.tensor([tok.encode(p).ids])
        ref = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, ids.shape[1]:].tolist()
        assert got == ref
    # the text API on top decodes the same ids
    texts = generate(model, tok, prompts, max_new_tokens=n, stop_ids=[])
    assert texts == [tok.decode(o, skip_special_tokens=True) for o in ours]


def test_cli_export_and_generate(exported, tmp_path, capsys):
    import argparse
    from lmforge.export import cli
    run, _ = exported
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    args = parser.parse_args(["export", str(run), str(tmp_path / "hf2")])
    assert args.func(args) == 0 and (tmp_path / "hf2" / "model.safetensors").is_file()
    args = parser.parse_args(["generate", str(run), "--prompt", "The quick", "--prompt", "def",
                              "--max-new-tokens", "5"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip()
