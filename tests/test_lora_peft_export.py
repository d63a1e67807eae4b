"""`lmforge export CKPT BASE --adapter DIR`: a LoRA checkpoint's base as a Hugging Face folder and
its adapters in PEFT's format. For every export family (llama, qwen2, qwen3, mistral, phi3, glm,
stablelm, gemma), a model with random non-zero adapters: transformers + PeftModel.from_pretrained
computes our adapted logits and those of our merged export, peft's merge_and_unload() gives the
merged export's weights, and the files are those peft's own save_pretrained writes."""
import argparse
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from lmforge.config import ConfigError, to_dict  # noqa: E402
from lmforge.export.hf import export  # noqa: E402
from lmforge.model import ModelConfig, Transformer  # noqa: E402
from lmforge.model.load import copy_tokenizer  # noqa: E402
from lmforge.model.lora import LoRAConfig, attach_lora, lora_layers  # noqa: E402
from lmforge.stages.export import ExportConfig, run  # noqa: E402
from lmforge.train.checkpoint import save as save_checkpoint  # noqa: E402
from test_align_utils import make_tokenizer  # noqa: E402

ALL = list(LoRAConfig().target_modules)
# name -> (ModelConfig fields that make the export pick the family, lora targets, transformers class)
CASES = {
    "llama": ({}, ALL, "LlamaForCausalLM"),
    "llama_tied_norm_head": ({"tie_embeddings": True, "norm_head": True}, ["q_proj", "v_proj"], "LlamaForCausalLM"),
    "qwen2": ({"qkv_bias": True}, ALL, "Qwen2ForCausalLM"),
    "qwen3": ({"qk_norm": True, "attn_head_dim": 16}, ALL, "Qwen3ForCausalLM"),
    "mistral": ({"sliding_window": 8}, ALL, "MistralForCausalLM"),
    # fused qkv_proj (rank 3r) and gate_up_proj (rank 2r), partial rotary
    "phi3": ({"rotary_pct": 0.5}, ALL, "Phi3ForCausalLM"),
    # q and v in qkv_proj (rank 2r, k's rows zero); only up in gate_up_proj (rank r, gate's rows zero)
    "phi3_q_v_up": ({"rotary_pct": 0.5}, ["q_proj", "v_proj", "up_proj"], "Phi3ForCausalLM"),
    # interleaved rotary (B rows of q/k permuted), fused gate_up_proj, q/k/v biases
    "glm": ({"rotary_pct": 0.5, "qkv_bias": True}, ALL, "GlmForCausalLM"),
    "stablelm": ({"norm": "layernorm", "rotary_pct": 0.25, "qkv_bias": True}, ALL, "StableLmForCausalLM"),
    "gemma": ({"norm": "rmsnorm_plus_one", "embed_scale": True, "mlp_act": "gelu_tanh", "tie_embeddings": True},
              ALL, "GemmaForCausalLM"),
}
R, ALPHA = 4, 12.0


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def lora_run(folder, tok_dir, fields, targets, seed=0, lora=True):
    """A run folder like a LoRA SFT run's: checkpoints/step-1 (base + adapters, trainer.json with
    `model` and `lora`) and tokenizer/. Every weight random (norm gains, biases, B too)."""
    vocab = json.loads((tok_dir / "lmforge_tokenizer.json").read_text())["vocab_size"]
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                      max_seq_len=64, **fields)
    lcfg = LoRAConfig(r=R, alpha=ALPHA, dropout=0.05, target_modules=targets)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    if lora:
        model = attach_lora(model, lcfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((0.0 if "bias" in name or cfg.norm == "rmsnorm_plus_one" else 1.0) + 0.2 * torch.randn_like(p))
        for _, m in lora_layers(model):
            m.lora_B.normal_(0, 0.3)
    state = {"model": to_dict(cfg), **({"lora": to_dict(lcfg)} if lora else {})}
    save_checkpoint(folder / "checkpoints", 1, model, None, {"config": state})
    copy_tokenizer(tok_dir, folder)
    return folder, model.eval(), cfg


def ids(vocab, seed=1):
    return torch.randint(0, vocab, (2, 20), generator=torch.Generator().manual_seed(seed))


def hf_load(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_peft_loads_the_adapter_with_our_logits_and_merged_weights(case, tok_dir, tmp_path):
    fields, targets, cls = CASES[case]
    run_dir, ours, cfg = lora_run(tmp_path / "run", tok_dir, fields, targets)
    summary = run(ExportConfig(checkpoint=str(run_dir), out_dir=str(tmp_path / "base"),
                               adapter=str(tmp_path / "adapter")), progress=False)
    assert summary["arch"] == cls
    export(run_dir, tmp_path / "merged")
    x = ids(cfg.vocab_size)
    base_hf = hf_load(tmp_path / "base")
    with torch.no_grad():
        want = ours(x)[..., :cfg.vocab_size]
        base_logits = base_hf(x).logits
        assert (want - base_logits).abs().max() > 0.05          # the adapters matter: a wrong map shows
        model = peft.PeftModel.from_pretrained(base_hf, tmp_path / "adapter").eval()
        got = model(x).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)                       # (a) our adapted model
        torch.testing.assert_close(got, hf_load(tmp_path / "merged")(x).logits, atol=1e-5, rtol=1e-5)  # (b)
        merged = model.merge_and_unload().state_dict()
    ours_merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert not any("lora" in k for k in merged)
    for k, w in ours_merged.items():
        torch.testing.assert_close(merged[k], w, atol=1e-6, rtol=1e-5)
    # the base folder is the base, not merged: its weights are our base weights' export
    base_sd = load_file(str(tmp_path / "base" / "model.safetensors"))
    assert set(base_sd) == set(ours_merged)
    assert any(not torch.equal(base_sd[k], ours_merged[k]) for k in base_sd)


@pytest.mark.parametrize("case", ["llama", "phi3_q_v_up", "glm"])
def test_files_are_what_peft_itself_saves(case, tok_dir, tmp_path):
    """Same keys, shapes and config as get_peft_model(base, LoraConfig(...)).save_pretrained."""
    fields, targets, _ = CASES[case]
    run_dir, _, _ = lora_run(tmp_path / "run", tok_dir, fields, targets)
    run(ExportConfig(checkpoint=str(run_dir), out_dir=str(tmp_path / "base"), adapter=str(tmp_path / "ad")),
        progress=False)
    ours = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert ours["base_model_name_or_path"] == str((tmp_path / "base").resolve())
    ref_cfg = peft.LoraConfig(r=ours["r"], lora_alpha=ours["lora_alpha"], lora_dropout=ours["lora_dropout"],
                              target_modules=ours["target_modules"], rank_pattern=ours["rank_pattern"],
                              alpha_pattern=ours["alpha_pattern"], task_type="CAUSAL_LM")
    ref = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(
        str((tmp_path / "base").resolve()), local_files_only=True), ref_cfg)
    ref.save_pretrained(tmp_path / "ref")
    theirs = json.loads((tmp_path / "ref" / "adapter_config.json").read_text())
    theirs["target_modules"] = sorted(theirs["target_modules"], key=ours["target_modules"].index)  # a set in peft
    assert {k: theirs[k] for k in ours} == ours            # every key we write, as peft writes it
    loaded, ref_loaded = (peft.PeftConfig.from_pretrained(tmp_path / d).to_dict() for d in ("ad", "ref"))
    for c in (loaded, ref_loaded):
        c.pop("peft_version", None)
        c["target_modules"] = set(c["target_modules"])
    assert loaded == ref_loaded                            # the keys we leave out: peft's defaults
    a = load_file(str(tmp_path / "ad" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ref" / "adapter_model.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert {k: v.dtype for k, v in a.items()} == {k: v.dtype for k, v in b.items()}


def test_fused_ranks_keep_the_scale(tok_dir, tmp_path):
    run_dir, _, _ = lora_run(tmp_path / "run", tok_dir, CASES["phi3"][0], ALL)
    run(ExportConfig(checkpoint=str(run_dir), out_dir=str(tmp_path / "b"), adapter=str(tmp_path / "a")),
        progress=False)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (R, 12)
    assert cfg["target_modules"] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert cfg["rank_pattern"] == {"qkv_proj": 3 * R, "gate_up_proj": 2 * R}
    assert cfg["alpha_pattern"] == {"qkv_proj": 36, "gate_up_proj": 24}   # alpha / r everywhere (vLLM's one scale)
    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    B = a["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"]
    assert B.shape == (32 + 16 + 16, 3 * R) and not B[:32, R:].any() and not B[32:48, :R].any()


def test_refusals_in_one_line(tok_dir, tmp_path, capsys, monkeypatch):
    from lmforge.cli import export as cli
    from lmforge.cli import main
    from lmforge.model import lora_hf
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    plain = lora_run(tmp_path / "plain", tok_dir, {}, ALL, lora=False)[0] / "checkpoints" / "step-1"
    assert main(["export", str(plain), str(tmp_path / "b"), "--adapter", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no LoRA adapters" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "a").exists()      # nothing written
    lora = lora_run(tmp_path / "lora", tok_dir, CASES["phi3"][0], ALL)[0] / "checkpoints" / "step-1"
    args = parser.parse_args(["export", str(lora), str(tmp_path / "x.gguf"), "--format", "gguf",
                              "--adapter", str(tmp_path / "a")])
    assert args.func(args) == 2 and "--format gguf" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="adapter"):
        ExportConfig(checkpoint=str(lora), out_dir=str(tmp_path / "b"), adapter=str(tmp_path / "b"))
    # a layout the adapter map does not follow (here: Phi-3's fusing forgotten) is refused, not written wrong
    monkeypatch.setattr(lora_hf, "fused_modules", lambda arch: {})
    assert main(["export", str(lora), str(tmp_path / "b"), "--adapter", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "Phi3ForCausalLM cannot carry the adapter on model.layers.0.self_attn.q_proj" in err
    assert err.count("\n") == 1 and not (tmp_path / "b").exists()


def test_cli_export_then_rerun_skips_and_other_kind_redoes(tok_dir, tmp_path, capsys):
    from lmforge.cli import export as cli
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    run_dir, _, _ = lora_run(tmp_path / "run", tok_dir, {}, ["q_proj", "v_proj"])
    argv = ["export", str(run_dir), str(tmp_path / "base"), "--adapter", str(tmp_path / "ad")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "base (LoRA adapters off)" in out and "r 4, 4 modules: q_proj, v_proj" in out
    info = json.loads((tmp_path / "base" / "lmforge_export.json").read_text())
    assert info["adapter"] == str((tmp_path / "ad").resolve()) and info["weights"].startswith("base")
    args = parser.parse_args(argv)
    assert args.func(args) == 0 and "already exported" in capsys.readouterr().out
    # the same out_dir asked for the merged export: redone, not skipped
    args = parser.parse_args(["export", str(run_dir), str(tmp_path / "base")])
    assert args.func(args) == 0 and "exported LlamaForCausalLM to" in capsys.readouterr().out
    assert "adapter" not in json.loads((tmp_path / "base" / "lmforge_export.json").read_text())


def test_bfloat16_adapter(tok_dir, tmp_path):
    run_dir, _, _ = lora_run(tmp_path / "run", tok_dir, {}, ["q_proj"])
    run(ExportConfig(checkpoint=str(run_dir), out_dir=str(tmp_path / "b"), adapter=str(tmp_path / "a"),
                     dtype="bfloat16"), progress=False)
    assert {v.dtype for v in load_file(str(tmp_path / "a" / "adapter_model.safetensors")).values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "b" / "config.json").read_text())["dtype"] == "bfloat16"


def test_writes_are_atomic(tok_dir, tmp_path, monkeypatch):
    """A failure while writing the adapter weights leaves no half file and no DONE.json."""
    import lmforge.export.adapter as adapter_mod
    run_dir, _, _ = lora_run(tmp_path / "run", tok_dir, {}, ["q_proj"])
    cfg = ExportConfig(checkpoint=str(run_dir), out_dir=str(tmp_path / "b"), adapter=str(tmp_path / "a"))
    run(cfg, progress=False)
    before = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()

    import safetensors.torch
    real = safetensors.torch.save_file

    def broken(tensors, path, metadata=None):   # the base writes; the adapter's weights fail half-way
        if "adapter_model" not in path:
            return real(tensors, path, metadata=metadata)
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    (tmp_path / "b" / "DONE.json").unlink()
    with pytest.raises(OSError):
        adapter_mod.export_with_adapter(run_dir, tmp_path / "b", tmp_path / "a")
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not (tmp_path / "b" / "DONE.json").exists()
