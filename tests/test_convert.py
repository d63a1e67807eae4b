"""Hugging Face round trip: same logits both ways, through memory and through a folder."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from lmforge.model import ModelConfig, Transformer  # noqa: E402
from lmforge.model.convert import (  # noqa: E402
    from_hf, hf_arch, hf_config_dict, load_hf, save_hf, to_hf_state_dict,
)

VOCAB = 100  # not a multiple of 64: padding is exercised (100 -> 128)
VARIANTS = {
    "full_rotary": {},
    "partial_rotary": {"rotary_pct": 0.25},
    "gqa": {"n_kv_heads": 2},
    "tied": {"tie_embeddings": True},
    "norm_head": {"norm_head": True},
    "norm_head_tied": {"norm_head": True, "tie_embeddings": True},
    "everything": {"rotary_pct": 0.5, "n_kv_heads": 1, "norm_head": True, "rope_theta": 5e5},
}


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, max_seq_len=64, **kw)


def randomized(cfg: ModelConfig) -> Transformer:
    """A model whose norms and head rows are not at their init values (so folding matters)."""
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
        model.lm_head.weight.mul_(torch.rand(cfg.padded_vocab_size, 1) * 3 + 0.1)  # uneven row norms
    return model


def hf_model_from(config: dict):
    config = {k: v for k, v in config.items() if k != "architectures"}
    hf_cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    hf_cfg._attn_implementation = "eager"  # the plainest reference implementation
    return AutoModelForCausalLM.from_config(hf_cfg).eval()


def ids(B=2, T=24, seed=1):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS)
def test_ours_to_hf_same_logits(variant):
    cfg = tiny_cfg(**VARIANTS[variant])
    ours = randomized(cfg)
    hf = hf_model_from(hf_config_dict(cfg))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected
    assert missing == (["lm_head.weight"] if cfg.tie_embeddings and not cfg.norm_head else [])
    if missing:
        hf.tie_weights()
    x = ids()
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
    assert b.shape[-1] == VOCAB
    torch.testing.assert_close(a[..., :VOCAB], b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hf_to_ours_same_logits(variant):
    cfg = tiny_cfg(**VARIANTS[variant])
    torch.manual_seed(3)
    hf = hf_model_from(hf_config_dict(cfg))   # randomly initialised by transformers
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    ours = from_hf(hf_config_dict(cfg), hf.state_dict()).eval()
    assert ours.cfg.padded_vocab_size == 128 and ours.cfg.rotary_dim == cfg.rotary_dim
    x = ids(seed=2)
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
    torch.testing.assert_close(a[..., :VOCAB], b, atol=1e-4, rtol=1e-4)
    assert torch.isinf(a[..., VOCAB:]).all()


def test_partial_rotary_exported_as_phi3_not_llama():
    # transformers' LlamaForCausalLM rotates the whole head whatever partial_rotary_factor says
    cfg = tiny_cfg(rotary_pct=0.25)
    assert hf_arch(cfg) == "phi3" and hf_config_dict(cfg)["architectures"] == ["Phi3ForCausalLM"]
    assert hf_arch(tiny_cfg()) == "llama"
    llama_cfg = {**hf_config_dict(tiny_cfg()), "partial_rotary_factor": 0.25}
    llama = hf_model_from(llama_cfg)
    assert llama.model.rotary_emb.inv_freq.numel() == cfg.head_dim // 2  # full rotary: ignored
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        from_hf(llama_cfg, llama.state_dict())


@pytest.mark.parametrize("variant", ["full_rotary", "partial_rotary", "norm_head_tied"])
def test_save_hf_loads_in_transformers_offline(tmp_path, monkeypatch, variant):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny_cfg(**VARIANTS[variant])
    ours = randomized(cfg)
    save_hf(ours, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(hf).__name__ == json.loads((tmp_path / "config.json").read_text())["architectures"][0]
    x = ids(seed=4)
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
    torch.testing.assert_close(a[..., :VOCAB], b, atol=1e-4, rtol=1e-4)
    back = load_hf(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x)[..., :VOCAB], b, atol=1e-4, rtol=1e-4)


def test_hf_folder_written_by_transformers_loads(tmp_path):
    cfg = tiny_cfg(n_kv_heads=2, tie_embeddings=True)
    torch.manual_seed(5)
    hf = hf_model_from(hf_config_dict(cfg))
    hf.save_pretrained(tmp_path)
    ours = load_hf(tmp_path).eval()
    assert ours.cfg.tie_embeddings and ours.lm_head.weight is ours.embed_tokens.weight
    x = ids(seed=6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[..., :VOCAB], hf(x).logits, atol=1e-4, rtol=1e-4)


def test_bfloat16_export_keeps_dtype(tmp_path):
    save_hf(randomized(tiny_cfg()), tmp_path, dtype=torch.bfloat16)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert load_hf(tmp_path).embed_tokens.weight.dtype == torch.bfloat16


def test_unsupported_hf_configs_refused(tmp_path):
    base = hf_config_dict(tiny_cfg())
    sd = to_hf_state_dict(randomized(tiny_cfg()))
    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        from_hf({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 8.0}}, sd)
    with pytest.raises(ValueError, match="rope_parameters.low_freq_factor missing"):
        from_hf({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}, sd)
    with pytest.raises(ValueError, match="missing model.layers.0.self_attn.q_proj.bias"):
        from_hf({**base, "attention_bias": True}, sd)   # a bias the weights do not have
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        from_hf({**base, "hidden_act": "gelu"}, sd)
    with pytest.raises(ValueError, match="hidden_size missing"):
        from_hf({k: v for k, v in base.items() if k != "hidden_size"}, sd)
    with pytest.raises(ValueError, match="model_type"):
        from_hf({**base, "model_type": "gpt2"}, sd)
    with pytest.raises(ValueError, match="missing model.norm.weight"):
        from_hf(base, {k: v for k, v in sd.items() if k != "model.norm.weight"})
    with pytest.raises(ValueError, match="unexpected"):
        from_hf(base, {**sd, "model.extra.weight": torch.zeros(1)})
    (tmp_path / "config.json").write_text("{\n  bad")
    with pytest.raises(ValueError, match="line 2"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(base))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="pickle"):
        load_hf(tmp_path)


def test_import_overrides_and_padding():
    cfg = tiny_cfg()
    hf = hf_model_from(hf_config_dict(cfg))
    ours = from_hf(hf_config_dict(cfg), hf.state_dict(), pad_vocab_multiple=8, attn_backend="sdpa")
    assert ours.cfg.padded_vocab_size == 104 and ours.embed_tokens.weight.shape == (104, 64)
    assert (ours.embed_tokens.weight[VOCAB:] == 0).all()
    assert ours.vocab_pad_mask.tolist() == [False] * VOCAB + [True] * 4
