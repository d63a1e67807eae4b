"""Common open model families: tiny random transformers models (built offline from config
objects, saved with safetensors) import with transformers' logits, export back to the same
architecture and tensors, generate the same greedy tokens, and train for a few steps."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from lmforge.infer.generate import generate_ids  # noqa: E402
from lmforge.model import ModelConfig, Transformer  # noqa: E402
from lmforge.model.convert import export_arch, from_hf, hf_config_dict, load_hf, save_hf  # noqa: E402
from lmforge.train.optim import OptimConfig, build_optimizer  # noqa: E402

VOCAB = 100
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
            bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
# name -> (config.json keys, what our ModelConfig must have turned on)
FAMILIES = {
    "llama": (dict(model_type="llama"), {}),
    "llama_biases": (dict(model_type="llama", attention_bias=True, mlp_bias=True),
                     {"qkv_bias": True, "o_bias": True, "mlp_bias": True}),
    "llama3_rope": (dict(model_type="llama", rope_parameters=LLAMA3_ROPE, max_position_embeddings=128), {}),
    "mistral_window": (dict(model_type="mistral", sliding_window=8, head_dim=32), {"sliding_window": 8,
                                                                                   "attn_head_dim": 32}),
    "qwen2": (dict(model_type="qwen2", use_sliding_window=False), {"qkv_bias": True, "o_bias": False}),
    "qwen2_window": (dict(model_type="qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=0),
                     {"qkv_bias": True, "sliding_window": 8}),
    "qwen3": (dict(model_type="qwen3", head_dim=32), {"qk_norm": True, "attn_head_dim": 32}),
    "qwen3_bias": (dict(model_type="qwen3", head_dim=16, attention_bias=True), {"qk_norm": True, "o_bias": True}),
    "phi3": (dict(model_type="phi3", partial_rotary_factor=0.5), {"rotary_pct": 0.5}),
    "phi3_window": (dict(model_type="phi3", sliding_window=8), {"sliding_window": 8}),
    # stabilityai/stablelm-2-1_6b's config: q/k/v biases, sequential residual, 25% rotary
    "stablelm_2": (dict(model_type="stablelm", use_qkv_bias=True, partial_rotary_factor=0.25,
                        use_parallel_residual=False, qk_layernorm=False, layer_norm_eps=1e-5),
                   {"norm": "layernorm", "qkv_bias": True, "rotary_pct": 0.25}),
    "stablelm_parallel": (dict(model_type="stablelm", use_parallel_residual=True),
                          {"norm": "layernorm", "parallel_residual": True}),
    "glm": (dict(model_type="glm", head_dim=16, attention_bias=True, partial_rotary_factor=0.5),
            {"qkv_bias": True, "rotary_pct": 0.5}),
    "gemma": (dict(model_type="gemma", head_dim=32, tie_word_embeddings=True),
              {"norm": "rmsnorm_plus_one", "embed_scale": True, "mlp_act": "gelu_tanh", "tie_embeddings": True}),
    # OLMo 2: norms on the sublayer outputs, QK-norm over the whole q / k projections
    "olmo2": (dict(model_type="olmo2"), {"block_norm": "post", "qk_norm": True, "qk_norm_scope": "all"}),
    "olmo2_bias": (dict(model_type="olmo2", attention_bias=True, rms_norm_eps=1e-6),
                   {"block_norm": "post", "qk_norm_scope": "all", "qkv_bias": True, "o_bias": True}),
}


def hf_random(name: str, seed: int = 0):
    """A transformers model of the family with every parameter random (biases and norms too)."""
    keys = {**BASE, **FAMILIES[name][0]}
    mt = keys.pop("model_type")
    cfg = AutoConfig.for_model(mt, **keys)
    cfg._attn_implementation = "eager"   # the plainest reference implementation
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1:   # norm gains around their identity, biases around 0
                centre = 1.0 if "norm" in pname and mt != "gemma" and not pname.endswith("bias") else 0.0
                p.copy_(centre + 0.3 * torch.randn_like(p))
    return model


def ids(B=2, T=24, seed=1):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(name, transformers model, its folder, our imported model)."""
    name = request.param
    hf = hf_random(name)
    folder = tmp_path_factory.mktemp(name)
    hf.save_pretrained(folder)            # safetensors
    assert (folder / "model.safetensors").is_file()
    return name, hf, folder, load_hf(folder).eval()


def test_import_options_and_same_logits(family):
    name, hf, _, ours = family
    for field, value in FAMILIES[name][1].items():
        assert getattr(ours.cfg, field) == value, field
    assert sum(p.numel() for p in ours.parameters()) == ours.cfg.n_params()   # biases, norms, qk-norm counted
    x = ids()   # 24 tokens: longer than the 8-token windows, past llama3's original 16
    with torch.no_grad():
        a, b = ours(x)[..., :VOCAB], hf(x).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_export_back_same_architecture_tensors_and_logits(family, tmp_path):
    name, hf, folder, ours = family
    source = json.loads((folder / "config.json").read_text())["model_type"]
    save_hf(ours, tmp_path / "same", arch=source)
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "same", attn_implementation="eager").eval()
    want, got = hf.state_dict(), back.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k   # the round trip moves no number
    # the default export (the first architecture that carries the model: Phi-3 with full
    # rotary and a window is written as Mistral) loads with the same logits too
    save_hf(ours, tmp_path / "auto")
    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "auto", attn_implementation="eager").eval()
    assert type(auto).__name__ == json.loads((tmp_path / "auto" / "config.json").read_text())["architectures"][0]
    x = ids(seed=2)
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(back(x).logits, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(auto(x).logits, ref, atol=1e-5, rtol=1e-5)


def test_greedy_generation_with_kv_cache_equals_transformers(family):
    """Our cached decoding (sliding window included) against transformers' generate."""
    name, hf, _, ours = family
    prompts = [ids(1, 10, seed=3)[0].tolist(), ids(1, 5, seed=4)[0].tolist()]
    got = generate_ids(ours, prompts, max_new_tokens=14, stop_ids=[])   # one left-padded batch
    for p, g in zip(prompts, got):
        x = torch.tensor([p])
        ref = hf.generate(x, max_new_tokens=14, min_new_tokens=14, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, x.shape[1]:].tolist()
        assert g == ref


def test_training_loss_equals_transformers_and_continued_training_runs(family):
    name, hf, folder, _ = family
    ours = load_hf(folder).train()
    x = ids(B=4, T=20, seed=5)
    loss_sum, _ = ours(x[:, :-1], labels=x[:, 1:])
    ref = hf.train()(x, labels=x).loss      # mean over the 4 x 19 predicted tokens
    hf.eval()
    torch.testing.assert_close(loss_sum / x[:, 1:].numel(), ref, atol=1e-5, rtol=1e-5)
    opt = build_optimizer(ours, OptimConfig(lr=3e-3, weight_decay=0.1))
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss_sum, _ = ours(x[:, :-1], labels=x[:, 1:])
        loss = loss_sum / x[:, 1:].numel()
        loss.backward()
        for pname, p in ours.named_parameters():   # every new option's parameters learn
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_each_option_matters():
    """Turning an option off changes the logits: the tests above could not pass by accident."""
    x = ids()
    for name, off in [("qwen3", {"qk_norm": False}), ("mistral_window", {"sliding_window": None}),
                      ("gemma", {"embed_scale": False}), ("stablelm_parallel", {"parallel_residual": False}),
                      ("llama3_rope", {"rope_scaling": None}), ("gemma", {"mlp_act": "silu"}),
                      ("stablelm_2", {"norm": "rmsnorm"}), ("olmo2", {"block_norm": "pre"}),
                      ("olmo2", {"qk_norm": False})]:
        hf = hf_random(name)
        cfg = hf.config.to_dict()
        ours = from_hf(cfg, hf.state_dict()).eval()
        changed = Transformer(ModelConfig(**{**ours.cfg.__dict__, **off})).eval()
        changed.load_state_dict(ours.state_dict(), strict=False)
        with torch.no_grad():
            assert not torch.allclose(changed(x), ours(x), atol=1e-3), (name, off)


def test_unsupported_configs_refused_in_one_line():
    hf = hf_random("llama")
    sd, base = hf.state_dict(), {**BASE, "model_type": "llama"}
    cases = [
        ({**base, "model_type": "stablelm", "qk_layernorm": True}, "qk_layernorm"),
        ({**base, "model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 1}, "some layers only"),
        ({**base, "model_type": "gemma", "use_bidirectional_attention": True}, "bidirectional"),
        ({**base, "model_type": "phi3", "rope_parameters": {"rope_type": "longrope"}}, "longrope"),
        ({**base, "model_type": "mistral", "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ({**base, "model_type": "gpt_neox"}, "model_type 'gpt_neox'"),
    ]
    for config, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            from_hf(config, sd)
        assert "\n" not in str(e.value)
    # a config no architecture carries exactly: RMSNorm with GeGLU
    odd = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=1, n_heads=4, mlp_act="gelu_tanh")
    with pytest.raises(ValueError, match="no Hugging Face architecture expresses this model"):
        export_arch(odd)
    with pytest.raises(ValueError, match="sliding_window"):
        hf_config_dict(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=1, n_heads=4, sliding_window=8),
                       arch="llama")


def test_export_choice_per_option():
    def arch(**kw):
        return export_arch(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=1, n_heads=4, **kw))
    assert arch() == "llama" and arch(qkv_bias=True, o_bias=True, mlp_bias=True) == "llama"
    assert arch(qkv_bias=True) == "qwen2" and arch(qk_norm=True) == "qwen3"
    assert arch(sliding_window=16) == "mistral" and arch(sliding_window=16, qkv_bias=True) == "qwen2"
    assert arch(rotary_pct=0.5) == "phi3" and arch(rotary_pct=0.5, qkv_bias=True) == "glm"
    assert arch(norm="layernorm", rotary_pct=0.25, qkv_bias=True) == "stablelm"
    assert arch(norm="rmsnorm_plus_one", embed_scale=True, mlp_act="gelu_tanh") == "gemma"
    assert arch(qk_norm=True, qk_norm_scope="all", block_norm="post") == "olmo2"
    with pytest.raises(ValueError, match="block_norm post"):
        arch(block_norm="post")   # post-norm without OLMo 2's QK-norm: no architecture carries it


def test_stablelm_preset_is_the_real_block():
    cfg = ModelConfig.from_preset("stablelm-2-1.6b")
    assert export_arch(cfg) == "stablelm"
    c = hf_config_dict(cfg)
    assert (c["use_qkv_bias"], c["use_parallel_residual"], c["partial_rotary_factor"], c["layer_norm_eps"],
            c["hidden_size"], c["num_hidden_layers"]) == (True, False, 0.25, 1e-5, 2048, 24)
    with torch.device("meta"):
        m = Transformer(cfg)
    assert sum(p.numel() for p in m.parameters()) == cfg.n_params()
