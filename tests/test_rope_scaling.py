"""RoPE scaling for context extension: Dynamic NTK / linear against transformers, config checks."""
import json

import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge.model import ModelConfig, Transformer
from lmforge.model.config import ContextOverrides, RopeScaling
from lmforge.model.rope import base_inv_freq, compute_inv_freq, scaled_theta

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from lmforge.model.convert import (  # noqa: E402
    from_hf, hf_config_dict, hf_max_length, load_hf, save_hf, to_hf_state_dict,
)

VOCAB = 100


def cfg_with(scaling=None, **kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, max_seq_len=32, rope_theta=500.0)
    return ModelConfig(**{**base, **kw}, rope_scaling=scaling)


def test_dynamic_ntk_formula_by_hand():
    cfg = cfg_with(RopeScaling("dynamic", 8.0))
    d = cfg.rotary_dim
    assert scaled_theta(cfg, 32) == cfg.rope_theta          # within the original length: unchanged
    assert scaled_theta(cfg, 10) == cfg.rope_theta
    want = 500.0 * (8 * 96 / 32 - 7) ** (d / (d - 2))
    assert scaled_theta(cfg, 96) == pytest.approx(want)
    torch.testing.assert_close(compute_inv_freq(cfg, 96), base_inv_freq(d, want))
    # the highest frequency is untouched, the lowest slows down
    plain = compute_inv_freq(cfg_with(), 96)
    assert compute_inv_freq(cfg, 96)[0] == plain[0] and compute_inv_freq(cfg, 96)[-1] < plain[-1]
    # explicit original length
    cfg16 = cfg_with(RopeScaling("dynamic", 8.0, original_max_position_embeddings=16))
    assert scaled_theta(cfg16, 32) == pytest.approx(500.0 * (8 * 2 - 7) ** (d / (d - 2)))


def test_linear_scaling_divides_frequencies():
    cfg = cfg_with(RopeScaling("linear", 4.0))
    torch.testing.assert_close(compute_inv_freq(cfg, 10), base_inv_freq(cfg.rotary_dim, 500.0) / 4)


def hf_model(cfg: ModelConfig, ours: Transformer):
    hc = hf_config_dict(cfg)
    hc = {k: v for k, v in hc.items() if k != "architectures"}
    hf_cfg = AutoConfig.for_model(hc.pop("model_type"), **hc)
    hf_cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(hf_cfg).eval()
    hf.load_state_dict(to_hf_state_dict(ours), strict=True)
    return hf


@pytest.mark.parametrize("kind,factor", [("dynamic", 8.0), ("dynamic", 2.0), ("linear", 4.0)])
def test_same_logits_as_transformers_beyond_original_length(kind, factor):
    cfg = cfg_with(RopeScaling(kind, factor))
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    hf = hf_model(cfg, ours)
    assert hf.config.rope_parameters["rope_type"] == kind
    # transformers' dynamic rope caches the largest length seen: use increasing lengths
    for T in (20, 32, 77, 130):   # inside, at, and beyond the original 32 positions
        x = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            a, b = ours(x)[..., :VOCAB], hf(x).logits
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)
    # and the scaling matters: plain RoPE gives other logits at 130 tokens
    plain = Transformer(cfg_with()).eval()
    plain.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(x)[..., :VOCAB], a, atol=1e-3)


def test_export_import_round_trip_keeps_scaling(tmp_path):
    cfg = cfg_with(RopeScaling("dynamic", 8.0, original_max_position_embeddings=16), max_seq_len=128)
    ours = Transformer(cfg).eval()
    save_hf(ours, tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    # transformers' dynamic NTK is relative to max_position_embeddings: it must stay the original
    # length; the trained length (128) goes where length readers (lm-eval: n_positions first) look
    assert written["rope_parameters"]["rope_type"] == "dynamic" and written["max_position_embeddings"] == 16
    assert written["n_positions"] == 128 == hf_max_length(cfg)
    back = load_hf(tmp_path / "hf")
    assert back.cfg.rope_scaling.type == "dynamic" and back.cfg.rope_original_len == 16
    assert back.cfg.max_seq_len == 128
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert hf.config.n_positions == 128
    x = torch.randint(0, VOCAB, (1, 60), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b, c = ours(x)[..., :VOCAB], back(x)[..., :VOCAB], hf(x).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, atol=2e-4, rtol=2e-4)
    # from an HF config that only has the old `rope_scaling` spelling
    old = {k: v for k, v in written.items() if k != "rope_parameters"}
    assert from_hf(old, to_hf_state_dict(ours)).cfg.rope_scaling.factor == 8.0


def test_exported_length_of_training_free_extensions():
    """Dynamic NTK x8 on a 32-token model: usable to 256 (Index-32K: 8 x 4K), with transformers'
    logits equal past the original length; linear x4: 128 in max_position_embeddings, which
    transformers' linear scaling does not read."""
    dyn = cfg_with(RopeScaling("dynamic", 8.0))
    c = hf_config_dict(dyn)
    assert (c["max_position_embeddings"], c["n_positions"], hf_max_length(dyn)) == (32, 256, 256)
    lin = cfg_with(RopeScaling("linear", 4.0))
    c = hf_config_dict(lin)
    assert c["max_position_embeddings"] == 128 and "n_positions" not in c
    assert hf_max_length(cfg_with()) == 32 and "n_positions" not in hf_config_dict(cfg_with())
    torch.manual_seed(2)
    for cfg in (dyn, lin):
        ours = Transformer(cfg).eval()
        hf = hf_model(cfg, ours)
        x = torch.randint(0, VOCAB, (1, 200), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            torch.testing.assert_close(ours(x)[..., :VOCAB], hf(x).logits, atol=2e-4, rtol=2e-4)


def test_llama3_scaling_matches_transformers_bit_for_bit():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cfg = cfg_with(RopeScaling("llama3", 8.0, 64, 1.0, 4.0), max_seq_len=128, d_model=256, n_heads=2)
    hc = hf_config_dict(cfg)
    assert hc["rope_parameters"]["original_max_position_embeddings"] == 64 and hc["max_position_embeddings"] == 128
    hf_cfg = AutoConfig.for_model(hc.pop("model_type"), **{k: v for k, v in hc.items() if k != "architectures"})
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    got = compute_inv_freq(cfg, 100)
    assert torch.equal(got, want)
    plain = base_inv_freq(cfg.rotary_dim, cfg.rope_theta)
    assert got[0] == plain[0] and torch.allclose(got[-1], plain[-1] / 8)   # high kept, low divided
    mid = (got != plain) & (got != plain / 8)
    assert mid.any()   # the smooth band exists at this size


def test_partial_rotary_with_scaling_refused_on_export():
    cfg = cfg_with(RopeScaling("dynamic", 8.0), rotary_pct=0.5)
    with pytest.raises(ValueError, match="rope_scaling"):   # Phi3Config takes default/longrope only
        hf_config_dict(cfg, arch="phi3")
    with pytest.raises(ValueError, match="partial rotary"):  # LlamaForCausalLM rotates the whole head
        hf_config_dict(cfg, arch="llama")
    assert hf_config_dict(cfg)["model_type"] == "glm"       # the default choice carries it


@pytest.mark.parametrize("data,key", [
    ({"rope_theta": 1.0}, "rope_theta"),
    ({"rope_theta": 1e39}, "rope_theta"),
    ({"max_seq_len": 2 ** 25}, "max_seq_len"),
    ({"rope_scaling": {"type": "dynamic", "factor": 0.5}}, "rope_scaling.factor"),
    ({"rope_scaling": {"type": "ntk", "factor": 2}}, "rope_scaling.type"),
    ({"rope_scaling": {"original_max_position_embeddings": 0}}, "rope_scaling.original_max_position_embeddings"),
    ({"d_model": 16, "n_heads": 4, "rotary_pct": 0.5, "rope_scaling": {"factor": 2}}, "rope_scaling"),
])
def test_bad_rope_configs_refused_naming_key(data, key):
    with pytest.raises(ConfigError, match=rf"model\.{key}\b"):
        config.from_dict(ModelConfig, data, prefix="model")


def test_yaml_rope_scaling_loads():
    cfg = config.from_dict(ModelConfig, {"preset": "tiny", "rope_scaling": {"type": "dynamic", "factor": 8}})
    assert cfg.rope_scaling == RopeScaling("dynamic", 8.0, None) and cfg.rope_original_len == 1024


def test_context_overrides():
    base = cfg_with()
    out = ContextOverrides(rope_theta=320000.0, max_seq_len=4096).apply(base)
    assert (out.rope_theta, out.max_seq_len, out.d_model) == (320000.0, 4096, base.d_model)
    assert ContextOverrides(rope_scaling=RopeScaling()).apply(base).rope_scaling.factor == 8.0
    scaled = cfg_with(RopeScaling())
    assert ContextOverrides(drop_rope_scaling=True).apply(scaled).rope_scaling is None
    assert ContextOverrides().apply(scaled) == scaled
    with pytest.raises(ConfigError, match=r"^model\.rope_theta: "):
        ContextOverrides(rope_theta=0.5).apply(base)
    with pytest.raises(ConfigError, match=r"n_layers: unknown key"):
        config.from_dict(ContextOverrides, {"n_layers": 4}, prefix="model")
