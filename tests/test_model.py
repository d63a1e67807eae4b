"""The decoder: float64 reference, packing, Norm-Head, vocab padding, RoPE, configs, FLOPs."""
import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ConfigError, from_dict
from lmforge.model import PRESETS, ModelConfig, Transformer
from lmforge.model import attention as attn_mod
from lmforge.model.attention import build_mask, positions_from_doc_ids
from lmforge.model.flops import flops_per_token, peak_flops, peak_flops_by_name
from lmforge.model.rope import apply_rope, compute_inv_freq, rope_cos_sin


def small(**kw) -> ModelConfig:
    base = dict(vocab_size=100, d_model=64, n_layers=2, n_heads=4, max_seq_len=128)
    return ModelConfig(**{**base, **kw})


def model_for(cfg, seed=0) -> Transformer:
    torch.manual_seed(seed)
    m = Transformer(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights
        for name, p in m.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    return m


# ---------------------------------------------------------------- float64 reference

def reference_logits(model: Transformer, ids, pos, doc) -> torch.Tensor:
    """A from-scratch float64 forward: explicit angles, per-head loops, explicit mask."""
    cfg = model.cfg
    W = {k: v.detach().double() for k, v in model.state_dict().items()}
    B, T = ids.shape
    hd, rd, rep = cfg.head_dim, cfg.rotary_dim, cfg.n_heads // cfg.kv_heads

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps)

    def rope(v, p):  # v [T, hd], p [T]; dim i pairs with i + rd/2, for i < rd/2
        out = v.clone()
        for i in range(rd // 2):
            ang = p.double() * cfg.rope_theta ** (-2.0 * i / rd)
            a, b = v[:, i], v[:, i + rd // 2]
            out[:, i] = a * torch.cos(ang) - b * torch.sin(ang)
            out[:, i + rd // 2] = b * torch.cos(ang) + a * torch.sin(ang)
        return out

    x = W["embed_tokens.weight"][ids]
    allowed = (doc[:, :, None] == doc[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    for L in range(cfg.n_layers):
        p = f"layers.{L}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q, k, v = (h @ W[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
        y = torch.zeros_like(q)
        for b in range(B):
            for head in range(cfg.n_heads):
                kvh = head // rep
                qh = rope(q[b, :, head * hd:(head + 1) * hd], pos[b])
                kh = rope(k[b, :, kvh * hd:(kvh + 1) * hd], pos[b])
                s = (qh @ kh.T) / math.sqrt(hd)
                s = s.masked_fill(~allowed[b], float("-inf"))
                y[b, :, head * hd:(head + 1) * hd] = s.softmax(-1) @ v[b, :, kvh * hd:(kvh + 1) * hd]
        x = x + y @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    head = W["embed_tokens.weight"] if cfg.tie_embeddings else W["lm_head.weight"]
    if cfg.norm_head:
        head = head / head.norm(dim=-1, keepdim=True)
    return rms(x, W["norm.weight"]) @ head[:cfg.vocab_size].T


@pytest.mark.parametrize("kw", [{}, {"rotary_pct": 0.25}, {"n_kv_heads": 2}, {"norm_head": True},
                                {"tie_embeddings": True, "rotary_pct": 0.5, "n_kv_heads": 1}])
def test_matches_float64_reference(kw):
    cfg = small(**kw)
    m = model_for(cfg)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    doc = torch.tensor([[0] * 5 + [1] * 7, [3] * 12])
    pos = positions_from_doc_ids(doc)
    ref = reference_logits(m, ids, pos, doc)
    with torch.no_grad():
        ours32 = m(ids, position_ids=pos, doc_ids=doc)[..., :100]
        ours64 = m.double()(ids, position_ids=pos, doc_ids=doc)[..., :100]
    # not 1e-12: our RoPE angles are float32 by design (the reference's are float64)
    torch.testing.assert_close(ours64, ref, atol=1e-6, rtol=1e-6)
    gap = (ours32.double() - ref).abs().max().item()
    assert gap < 1e-4, gap   # float32 vs float64: ~1e-6 here


# ---------------------------------------------------------------- packing

def test_positions_from_doc_ids():
    doc = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5], [-1, 4, 4, 4, 7, -1]])
    assert positions_from_doc_ids(doc).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 0, 0]]


@pytest.mark.parametrize("kw", [{}, {"rotary_pct": 0.25, "n_kv_heads": 2}])
def test_packed_document_equals_document_alone(kw):
    m = model_for(small(**kw))
    g = torch.Generator().manual_seed(1)
    lengths = [7, 10, 5]  # start, middle and end of the row
    docs = [torch.randint(0, 100, (n,), generator=g) for n in lengths]
    row = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    pos = positions_from_doc_ids(doc_ids)
    with torch.no_grad():
        packed = m(row, position_ids=pos, doc_ids=doc_ids)
        default_pos = m(row, doc_ids=doc_ids)   # positions derived from doc_ids
        start = 0
        for d in docs:
            alone = m(d[None])
            torch.testing.assert_close(packed[:, start:start + len(d)], alone, atol=1e-5, rtol=1e-5)
            start += len(d)
        torch.testing.assert_close(default_pos, packed)
        # without the document mask the later documents would see the earlier ones
        leaky = m(row, position_ids=pos)
    assert not torch.allclose(leaky[:, lengths[0]:], packed[:, lengths[0]:], atol=1e-3)


def test_gradient_flows_with_doc_mask_and_stays_in_document():
    cfg = small(attn_backend="sdpa")
    m = model_for(cfg).train()
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(2))
    doc = torch.tensor([[0] * 6 + [1] * 10, [0] * 16])
    emb = m.embed_tokens(ids).detach().requires_grad_(True)
    m.embed_tokens.forward = lambda _ids: emb   # feed embeddings we can take gradients against
    logits = m(ids, doc_ids=doc)
    logits[0, 6:, :100].logsumexp(-1).sum().backward()   # a loss on document 1 of row 0 only
    assert emb.grad[0, 6:].abs().sum() > 0
    assert emb.grad[0, :6].abs().max() == 0              # document 0 receives nothing
    assert emb.grad[1].abs().max() == 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.layers.parameters())


def test_mask_built_once_per_forward(monkeypatch):
    calls = []
    real = attn_mod.build_mask

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr("lmforge.model.transformer.build_mask", counting)
    m = model_for(small(n_layers=3))
    m(torch.zeros(1, 8, dtype=torch.long), doc_ids=torch.zeros(1, 8, dtype=torch.long))
    assert len(calls) == 1


def test_sdpa_doc_mask_shape_and_backend_choice():
    doc = torch.tensor([[0, 0, 1, 1]])
    mask = build_mask("auto", doc, 1, 4, torch.device("cpu"))
    assert mask.backend == "sdpa" and mask.dense.shape == (1, 1, 4, 4)
    assert mask.dense[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert build_mask("sdpa", None, 1, 4, torch.device("cpu")).dense is None   # is_causal path
    with pytest.raises(ValueError, match="flex needs CUDA"):
        build_mask("flex", doc, 1, 4, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention backward needs CUDA")
@pytest.mark.parametrize("with_docs", [False, True])
def test_flex_matches_sdpa_on_cuda(with_docs):
    cfg = dict(vocab_size=1000, d_model=256, n_layers=2, n_heads=8, n_kv_heads=2, rotary_pct=0.5)
    torch.manual_seed(0)
    flex = Transformer(ModelConfig(**cfg, attn_backend="flex")).cuda()
    sdpa = Transformer(ModelConfig(**cfg, attn_backend="sdpa")).cuda()
    sdpa.load_state_dict(flex.state_dict())
    B, T = 2, 300   # not a multiple of the 128 block size
    ids = torch.randint(0, 1000, (B, T), device="cuda")
    doc = torch.cat([torch.zeros(B, 100), torch.ones(B, 150), torch.full((B, 50), 2)], 1).long().cuda()
    doc = doc if with_docs else None
    outs = []
    for m in (flex, sdpa):
        logits = m(ids, doc_ids=doc)
        logits[..., :1000].float().logsumexp(-1).mean().backward()
        outs.append((logits.detach(), m.layers[0].self_attn.q_proj.weight.grad.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=2e-4, rtol=2e-3)


# ---------------------------------------------------------------- Norm-Head, vocab padding

def test_norm_head_unit_rows_and_scale_invariance():
    m = model_for(small(norm_head=True))
    with torch.no_grad():
        m.lm_head.weight.mul_(5.0)
    assert torch.allclose(m.head_weight().norm(dim=-1), torch.ones(128), atol=1e-5)
    assert not torch.allclose(m.lm_head.weight.norm(dim=-1), torch.ones(128))   # stored unnormalised
    ids = torch.randint(0, 100, (1, 10))
    with torch.no_grad():
        before = m(ids)
        m.lm_head.weight[7].mul_(40.0)
        m.lm_head.weight[:50].mul_(0.01)
        after = m(ids)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)
    plain = model_for(small())
    with torch.no_grad():
        a = plain(ids)
        plain.lm_head.weight[7].mul_(40.0)
        assert not torch.allclose(a, plain(ids))


def test_padded_vocab_gets_no_probability():
    assert ModelConfig(vocab_size=100289).padded_vocab_size == 100352
    assert ModelConfig(vocab_size=100352).padded_vocab_size == 100352
    cfg = small()
    assert cfg.padded_vocab_size % cfg.pad_vocab_multiple == 0 and cfg.padded_vocab_size == 128
    m = model_for(cfg)
    with torch.no_grad():
        m.lm_head.weight[100:].fill_(10.0)   # padded rows that would win every argmax
    x = torch.randint(0, 100, (2, 9))
    logits = m(x)
    assert logits.shape == (2, 9, 128)
    probs = logits.softmax(-1)
    assert (probs[..., 100:] == 0).all() and torch.isfinite(probs).all()
    assert (logits.argmax(-1) < 100).all()
    loss = F.cross_entropy(logits.flatten(0, 1), x.flatten())
    loss.backward()
    assert torch.isfinite(loss) and m.lm_head.weight.grad[100:].abs().max() == 0


# ---------------------------------------------------------------- RoPE

def test_partial_rotary_leaves_pass_through_dims():
    cfg = small(rotary_pct=0.25)
    assert cfg.rotary_dim == 4 and cfg.head_dim == 16
    x = torch.randn(1, 4, 6, 16)
    inv = compute_inv_freq(cfg, 6)
    outs = []
    for offset in (0, 37):
        pos = torch.arange(6)[None] + offset
        cos, sin = rope_cos_sin(pos, inv, x.dtype)
        outs.append(apply_rope(x, cos, sin))
    assert torch.equal(outs[0][..., 4:], x[..., 4:]) and torch.equal(outs[1][..., 4:], x[..., 4:])
    assert not torch.allclose(outs[0][..., :4], outs[1][..., :4])
    # rotation keeps norms and q.k depends only on the position difference
    torch.testing.assert_close(outs[1].norm(dim=-1), x.norm(dim=-1))
    q, k = torch.randn(16), torch.randn(16)

    def dot(pq, pk):
        c, s = rope_cos_sin(torch.tensor([[pq, pk]]), inv, torch.float32)
        r = apply_rope(torch.stack([q, k])[None, None], c, s)[0, 0]
        return r[0] @ r[1]
    torch.testing.assert_close(dot(5, 2), dot(105, 102), atol=1e-4, rtol=1e-4)


def test_rope_inv_freq_formula():
    cfg = small(rope_theta=500000.0, rotary_pct=0.5)
    inv = compute_inv_freq(cfg, 10)
    assert inv.dtype == torch.float32 and inv.shape == (4,)
    torch.testing.assert_close(inv, torch.tensor([500000.0 ** (-i / 8) for i in (0, 2, 4, 6)]))


# ---------------------------------------------------------------- structure, init

def test_return_hidden():
    cfg = small(n_layers=3)
    m = model_for(cfg)
    ids = torch.randint(0, 100, (2, 7))
    logits, hidden = m(ids, return_hidden=True)
    assert len(hidden) == 4 and all(h.shape == (2, 7, 64) for h in hidden)
    torch.testing.assert_close(hidden[0], m.embed_tokens(ids))
    torch.testing.assert_close(m.logits(hidden[-1]), logits)
    head = F.linear(m.norm(hidden[-1]), m.lm_head.weight)[..., :100]
    torch.testing.assert_close(head, logits[..., :100])


def test_param_names_counts_and_init():
    cfg = small(n_kv_heads=2, tie_embeddings=True)
    m = Transformer(cfg)
    names = set(dict(m.named_parameters()))
    for n in ("embed_tokens.weight", "layers.1.self_attn.q_proj.weight", "layers.0.mlp.gate_proj.weight",
              "layers.0.input_layernorm.weight", "layers.0.post_attention_layernorm.weight", "norm.weight"):
        assert n in names
    assert m.lm_head.weight is m.embed_tokens.weight
    assert sum(p.numel() for p in m.parameters()) == cfg.n_params()
    assert "vocab_pad_mask" not in m.state_dict()
    big = Transformer(ModelConfig(d_model=256, n_layers=8, n_heads=4, vocab_size=512))
    assert abs(big.layers[0].mlp.gate_proj.weight.std().item() - 0.02) < 0.002
    assert abs(big.layers[0].self_attn.o_proj.weight.std().item() - 0.02 / 4) < 0.0005
    assert abs(big.layers[0].mlp.down_proj.weight.std().item() - 0.02 / 4) < 0.0005
    assert (big.norm.weight == 1).all() and (big.layers[3].input_layernorm.weight == 1).all()
    assert not any(mod.bias is not None for mod in big.modules() if isinstance(mod, torch.nn.Linear))


def test_meta_device_init_then_materialise():
    cfg = small()
    with torch.device("meta"):
        m = Transformer(cfg)
    m = m.to_empty(device="cpu")
    m.init_weights()
    assert m.vocab_pad_mask.sum() == 28 and torch.isfinite(m(torch.zeros(1, 3, dtype=torch.long))[..., :100]).all()


# ---------------------------------------------------------------- config

def test_preset_loading_and_overrides():
    cfg = from_dict(ModelConfig, {"preset": "tiny", "n_layers": 2})
    assert cfg.n_layers == 2 and cfg.d_model == 256 and cfg.preset == "tiny"
    idx = ModelConfig.from_preset("index-1.9b")
    assert (idx.d_model, idx.n_layers, idx.n_heads, idx.ffn_dim, idx.vocab_size, idx.norm_head,
            idx.tie_embeddings, idx.max_seq_len) == (2048, 36, 16, 5888, 65029, True, False, 4096)
    slm = ModelConfig.from_preset("stablelm-2-1.6b")
    assert slm.rotary_dim == 16 and slm.padded_vocab_size == 100352 and not slm.tie_embeddings
    assert ModelConfig(d_model=256).ffn_dim == 704 and ModelConfig(d_model=2048).ffn_dim == 5504


@pytest.mark.parametrize("data,key", [
    ({"preset": "huge"}, "preset"),
    ({"preset": ["tiny"]}, "preset"),
    ({"d_model": 250, "n_heads": 4}, "n_heads"),
    ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
    ({"rotary_pct": 0.0}, "rotary_pct"),
    ({"rotary_pct": 1.5}, "rotary_pct"),
    ({"d_model": 64, "n_heads": 4, "rotary_pct": 0.1}, "rotary_pct"),   # 1.6 -> 1 dim
    ({"vocab_size": 0}, "vocab_size"),
    ({"n_layers": 0}, "n_layers"),
    ({"ffn_hidden": -1}, "ffn_hidden"),
    ({"attn_backend": "xformers"}, "attn_backend"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_configs_refused_naming_key(data, key):
    with pytest.raises(ConfigError, match=key) as e:
        from_dict(ModelConfig, data, prefix="model")
    assert str(e.value).startswith(f"model.{key}") and "\n" not in str(e.value)
    if key == "preset" and data["preset"] == "huge":
        assert "index-1.9b" in str(e.value)


# (preset, target params, count embeddings?): Index names its model by non-embedding params
NAMED = [("small-125m", 125e6, True), ("medium-350m", 350e6, True), ("large-1b", 1e9, True),
         ("index-1.9b", 1.9e9, False), ("stablelm-2-1.6b", 1.6e9, True)]


@pytest.mark.parametrize("name,target,emb", NAMED)
def test_preset_sizes_match_names(name, target, emb):
    n = ModelConfig.from_preset(name).n_params(embeddings=emb)
    assert abs(n - target) / target < 0.15, (name, n)


def test_tiny_preset_size_and_all_presets_valid():
    assert set(PRESETS) >= {"tiny", "small-125m", "medium-350m", "large-1b", "index-1.9b", "stablelm-2-1.6b"}
    tiny = ModelConfig.from_preset("tiny")
    assert 4e6 < tiny.n_params() < 6e6
    with torch.device("meta"):
        m = Transformer(ModelConfig.from_preset("index-1.9b"))
    assert sum(p.numel() for p in m.parameters()) == ModelConfig.from_preset("index-1.9b").n_params()


# ---------------------------------------------------------------- FLOPs

def test_flops_per_token_formula():
    cfg = small(n_kv_heads=2)   # d 64, 2 layers, kv dim 32, ffn 192, padded vocab 128
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 192
    n_matmul = 2 * per_layer + 64 * 128
    assert flops_per_token(cfg, 256) == 6 * n_matmul + 12 * 2 * 64 * 256
    # ~6N for a big model at short context
    idx = ModelConfig.from_preset("index-1.9b")
    assert 6 * idx.n_params(False) < flops_per_token(idx, 4096) < 6 * idx.n_params() * 1.3


def test_peak_flops():
    assert peak_flops("cpu") is None
    assert peak_flops_by_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_by_name("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_by_name("NVIDIA H200") == 989e12
    assert peak_flops_by_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_by_name("NVIDIA GeForce GTX 1080") is None
