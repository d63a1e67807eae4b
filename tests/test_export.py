"""`lmforge export`: the folder loads in transformers offline with our logits and greedy output."""
import argparse
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lmforge.align.chat_template import encode_chat  # noqa: E402
from lmforge.config import ConfigError  # noqa: E402
from lmforge.infer.generate import generate, generate_ids, load_for_generation  # noqa: E402
from lmforge.export.hf import export
from lmforge.stages.export import ExportConfig, run  # noqa: E402
from lmforge.model.convert import hf_max_length  # noqa: E402
from lmforge.model.load import load_checkpoint, tokenizer_dir_of  # noqa: E402
from lmforge.tokenizer.train import load_tokenizer  # noqa: E402
from test_eval_helpers import tiny_run  # noqa: E402

DYNAMIC = "model.rope_scaling={type: dynamic, factor: 4.0, original_max_position_embeddings: 16}"
# name -> (pretrain overrides, the transformers class it must load as)
VARIANTS = {
    "llama": ((), "LlamaForCausalLM"),
    "llama_tied": (("model.tie_embeddings=true",), "LlamaForCausalLM"),
    "norm_head_tied": (("model.norm_head=true", "model.tie_embeddings=true"), "LlamaForCausalLM"),
    "partial_norm_head": (("model.norm_head=true", "model.rotary_pct=0.5"), "Phi3ForCausalLM"),
    "llama_dynamic_ntk": ((DYNAMIC,), "LlamaForCausalLM"),
    "partial_dynamic_ntk": ((DYNAMIC, "model.rotary_pct=0.5"), "GlmForCausalLM"),
}
PROMPTS = ["The quick brown", "def add(a, b):\n    return", "床前", "A journey of a thousand miles begins"]


_BUILT = {}


def _build(name, tmp_path_factory):
    """(run dir, exported folder, expected HF class, export summary), trained once per module."""
    if name not in _BUILT:
        tmp = tmp_path_factory.mktemp(name)
        run_dir = tiny_run(tmp, steps=3, extra=VARIANTS[name][0])
        summary = run(ExportConfig(checkpoint=str(run_dir), out_dir=str(tmp / "hf")), progress=False)
        _BUILT[name] = (run_dir, tmp / "hf", VARIANTS[name][1], summary)
    return _BUILT[name]


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory):
    return _build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """One variant for the tests that do not depend on the architecture (CLI, dtype, skip)."""
    return _build("llama", tmp_path_factory)


@pytest.fixture(scope="module")
def hf_model(exported):
    return AutoModelForCausalLM.from_pretrained(exported[1], local_files_only=True).eval()


def test_folder_files_and_architecture(exported, hf_model):
    run_dir, out, arch, summary = exported
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "generation_config.json", "lmforge_export.json", "DONE.json"):
        assert (out / f).is_file(), f
    assert type(hf_model).__name__ == arch == summary["arch"]
    cfg = json.loads((out / "config.json").read_text())
    ours = load_tokenizer(run_dir / "tokenizer")
    assert cfg["eos_token_id"] == ours.token_to_id("<|endoftext|>")
    gen = json.loads((out / "generation_config.json").read_text())
    assert ours.token_to_id("<|im_end|>") in gen["eos_token_id"]
    # HF tools see the model's usable length, not the tokenizer trainer's default (4096)
    model, _ = load_checkpoint(run_dir)
    want = hf_max_length(model.cfg)
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == want
    assert AutoTokenizer.from_pretrained(out, local_files_only=True).model_max_length == want
    rs = model.cfg.rope_scaling
    if rs is not None and rs.type == "dynamic":   # trained at 64, dynamic NTK relative to 16
        assert (cfg["max_position_embeddings"], cfg["n_positions"]) == (16, want) and want == 64
        assert hf_model.config.n_positions == want


def test_same_logits_in_transformers(exported, hf_model):
    run_dir, out, _, _ = exported
    model, _ = load_checkpoint(run_dir)
    # 40 tokens: past the dynamic-NTK variants' original length (16), so the scaling is exercised
    x = torch.randint(0, model.cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x)[..., :model.cfg.vocab_size], hf_model(x).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # and the folder loads back into ours with the same logits
    back, _ = load_for_generation(out)
    with torch.no_grad():
        torch.testing.assert_close(back(x)[..., :model.cfg.vocab_size], a, atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_transformers(exported, hf_model):
    run_dir, out, _, _ = exported
    model, step = load_checkpoint(run_dir)
    tok = load_tokenizer(tokenizer_dir_of(step))
    n = 12
    encoded = [tok.encode(p).ids for p in PROMPTS]
    ours = generate_ids(model, encoded, max_new_tokens=n, stop_ids=[])   # one left-padded batch
    for ids, got in zip(encoded[:2], ours):   # transformers one prompt at a time: no padding involved
        x = torch.tensor([ids])
        ref = hf_model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, x.shape[1]:].tolist()
        assert got == ref
    # the text API on top decodes the same ids (less a character cut off by max_new_tokens)
    texts = generate(model, tok, PROMPTS, max_new_tokens=n, stop_ids=[])
    assert texts == [tok.decode(o, skip_special_tokens=True).rstrip("\ufffd") for o in ours]


def test_batched_greedy_equals_transformers_batched(exported, hf_model):
    """A batch of different-length prompts, left-padded in transformers too."""
    run_dir, out, _, _ = exported
    model, step = load_checkpoint(run_dir)
    hf_tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    hf_tok.padding_side = "left"
    batch = hf_tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    n = 10
    ref = hf_model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                            pad_token_id=hf_tok.pad_token_id)[:, batch["input_ids"].shape[1]:].tolist()
    encoded = [hf_tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert generate_ids(model, encoded, max_new_tokens=n, stop_ids=[]) == ref


def test_tokenizer_and_chat_template(exported):
    run_dir, out, _, _ = exported
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ours = load_tokenizer(run_dir / "tokenizer")
    text = "The fox 12345 床前明月光"
    assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text).ids
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"},
                {"role": "assistant", "content": "  Hello! 你好"}, {"role": "user", "content": "12 + 3?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    hf_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert hf_ids == encode_chat(ours, messages, add_generation_prompt=True)[0].tolist()
    assert hf_ids[0] == ours.token_to_id("<|im_start|>")


def test_stage_run_skips_when_done(llama):
    run_dir, out, _, summary = llama
    again = run(ExportConfig(checkpoint=str(run_dir), out_dir=str(out)), progress=False)
    assert again["skipped"] and again["arch"] == summary["arch"]
    assert summary["step"] == 3 and "model.safetensors" in summary["files"]


def test_export_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="dtype"):
        ExportConfig(checkpoint="a", out_dir="b", dtype="int8")
    with pytest.raises(ConfigError, match="checkpoint"):
        ExportConfig(out_dir="b")


def test_bfloat16_export(llama, tmp_path):
    run_dir = llama[0]
    out = export(run_dir, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16


def test_cli_export_and_generate(llama, tmp_path, capsys):
    from lmforge.cli import export as cli
    run_dir, out, _, _ = llama
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    args = parser.parse_args(["export", str(run_dir), str(tmp_path / "hf2")])
    assert args.func(args) == 0 and (tmp_path / "hf2" / "model.safetensors").is_file()
    assert "exported" in capsys.readouterr().out
    args = parser.parse_args(["export", str(run_dir), str(tmp_path / "hf2")])
    assert args.func(args) == 0 and "already exported" in capsys.readouterr().out
    # from the checkpoint and from the exported folder: same greedy text
    outs = []
    for src in (str(run_dir), str(out)):
        args = parser.parse_args(["generate", src, "--prompt", "The quick", "--prompt", "def",
                                  "--max-new-tokens", "5", "--json"])
        assert args.func(args) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] and [o["prompt"] for o in outs[0]] == ["The quick", "def"]
    args = parser.parse_args(["generate", str(run_dir), "--prompt", "x", "--top-p", "0"])
    assert args.func(args) == 2 and "top_p" in capsys.readouterr().err
