"""GGUF export: read back with gguf's GGUFReader, tensors and metadata checked, a forward pass
with llama.cpp's conventions (adjacent-pair RoPE) computed from the file equals ours, the
pre-tokenizer name splits text as our tokenizer does, and what GGUF cannot express is refused."""
import argparse
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

gguf = pytest.importorskip("gguf")
from gguf import GGUFReader  # noqa: E402

from lmforge.export.gguf import (export_gguf, pre_tokenizer_name, rope_pair_permutation,  # noqa: E402
                                 write_gguf)
from lmforge.model import ModelConfig, Transformer  # noqa: E402
from lmforge.model.config import RopeScaling  # noqa: E402
from lmforge.model.rope import base_inv_freq, compute_inv_freq  # noqa: E402
from lmforge.tokenizer.train import load_tokenizer, tokenizer_info  # noqa: E402
from test_eval_helpers import make_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def tiny(tok_dir, seed=0, **kw) -> Transformer:
    vocab = load_tokenizer(tok_dir).get_vocab_size()
    cfg = ModelConfig(**{**dict(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                max_seq_len=128, rope_theta=5000.0), **kw})
    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
        model.lm_head.weight.mul_(torch.rand(cfg.padded_vocab_size, 1) * 3 + 0.1)
    return model


def field(reader: GGUFReader, key: str):
    f = reader.fields[key]
    v = f.contents()
    return v


def tensors(reader: GGUFReader) -> dict[str, torch.Tensor]:
    return {t.name: torch.from_numpy(t.data.copy()).float() for t in reader.tensors}


def gguf_forward(reader: GGUFReader, ids: torch.Tensor) -> torch.Tensor:
    """llama.cpp's llama graph in float64 from the file alone: RMSNorm, GQA attention with RoPE
    rotating ADJACENT pairs (2i, 2i+1) at theta^(-2i/n_rot) divided by rope_freqs, SwiGLU.
    Its qwen2 graph: the same plus q/k/v biases, with NEOX RoPE (pairs (i, i + n_rot/2))."""
    W = {k: v.double() for k, v in tensors(reader).items()}
    a = field(reader, "general.architecture")
    n_layer = field(reader, f"{a}.block_count")
    H, Hkv = field(reader, f"{a}.attention.head_count"), field(reader, f"{a}.attention.head_count_kv")
    n_rot, base = field(reader, f"{a}.rope.dimension_count"), field(reader, f"{a}.rope.freq_base")
    eps = field(reader, f"{a}.attention.layer_norm_rms_epsilon")
    scale = 1.0
    if f"{a}.rope.scaling.type" in reader.fields:
        assert field(reader, f"{a}.rope.scaling.type") == "linear"
        scale = 1.0 / field(reader, f"{a}.rope.scaling.factor")
    T = ids.shape[0]
    freq = base ** (-torch.arange(0, n_rot, 2, dtype=torch.float64) / n_rot)
    if "rope_freqs.weight" in W:
        freq = freq / W["rope_freqs.weight"]
    ang = torch.arange(T, dtype=torch.float64)[:, None] * scale * freq[None]     # [T, n_rot/2]

    def rope(x):   # x [T, heads, hd]; pairs (2i, 2i+1), or (i, i + hd/2) for NEOX (qwen2)
        c, s = ang.cos()[:, None], ang.sin()[:, None]
        if a == "qwen2":
            u, w = x[..., :n_rot // 2], x[..., n_rot // 2:]
            return torch.cat([u * c - w * s, u * s + w * c], dim=-1)
        u, w = x[..., 0::2], x[..., 1::2]
        return torch.stack([u * c - w * s, u * s + w * c], dim=-1).flatten(-2)

    def lin(h, name):
        return h @ W[name + ".weight"].T + (W[name + ".bias"] if name + ".bias" in W else 0.0)

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    x = W["token_embd.weight"][ids]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope(lin(h, p + "attn_q").view(T, H, -1))
        k = rope(lin(h, p + "attn_k").view(T, Hkv, -1))
        v = lin(h, p + "attn_v").view(T, Hkv, -1)
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(q.shape[-1])
        y = torch.einsum("hts,shd->thd", s.masked_fill(~mask, float("-inf")).softmax(-1), v).reshape(T, -1)
        x = x + y @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        x = x + (F.silu(h @ W[p + "ffn_gate.weight"].T) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    head = W.get("output.weight", W["token_embd.weight"])
    return rms(x, W["output_norm.weight"]) @ head.T


VARIANTS = {
    "llama": {},
    "gqa_tied_norm_head": {"tie_embeddings": True, "norm_head": True, "n_kv_heads": 1},
    "head_dim_64": {"attn_head_dim": 32},
    "linear_x4": {"rope_scaling": RopeScaling("linear", 4.0)},
    "llama3": {"rope_scaling": RopeScaling("llama3", 8.0, 32, 1.0, 4.0), "d_model": 128, "n_heads": 2},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_gguf_read_back_tensors_metadata_and_forward(tok_dir, tmp_path, variant):
    model = tiny(tok_dir, **VARIANTS[variant])
    cfg = model.cfg
    out = write_gguf(model, tok_dir, tmp_path / "m.gguf")
    r = GGUFReader(str(out))
    assert field(r, "general.architecture") == "llama"
    assert (field(r, "llama.block_count"), field(r, "llama.embedding_length"), field(r, "llama.context_length"),
            field(r, "llama.attention.head_count_kv"), field(r, "llama.feed_forward_length")) == \
        (cfg.n_layers, cfg.d_model, cfg.max_seq_len, cfg.kv_heads, cfg.ffn_dim)
    assert field(r, "llama.rope.freq_base") == pytest.approx(cfg.rope_theta)
    assert field(r, "llama.rope.dimension_count") == cfg.head_dim == field(r, "llama.attention.key_length")
    # tokenizer: byte-level BPE, the pre-tokenizer llama.cpp must run, ids as ours
    tok = load_tokenizer(tok_dir)
    assert field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "starcoder"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == cfg.vocab_size and tokens[300] == tok.id_to_token(300)
    info = tokenizer_info(tok_dir)
    assert field(r, "tokenizer.ggml.eos_token_id") == info["eos_id"]
    types = field(r, "tokenizer.ggml.token_type")
    im_end = tok.token_to_id("<|im_end|>")
    assert types[im_end] == gguf.TokenType.CONTROL and types[300] == gguf.TokenType.NORMAL
    assert len(field(r, "tokenizer.ggml.merges")) > 0 and "<|im_start|>" in field(r, "tokenizer.chat_template")
    # tensors: values equal after llama.cpp's q/k row order
    t = tensors(r)
    V, hd = cfg.vocab_size, cfg.head_dim
    sd = model.state_dict()
    assert torch.equal(t["token_embd.weight"], sd["embed_tokens.weight"][:V])
    if cfg.tie_embeddings and not cfg.norm_head:
        assert "output.weight" not in t
    else:
        assert torch.equal(t["output.weight"], model.head_weight()[:V].detach())
    for n, ours in (("attn_q", "q_proj"), ("attn_k", "k_proj")):
        g = t[f"blk.1.{n}.weight"].view(-1, hd, cfg.d_model)
        o = sd[f"layers.1.self_attn.{ours}.weight"].view(-1, hd, cfg.d_model)
        assert torch.equal(g[:, 0::2], o[:, :hd // 2]) and torch.equal(g[:, 1::2], o[:, hd // 2:])
    assert torch.equal(t["blk.0.ffn_down.weight"], sd["layers.0.mlp.down_proj.weight"])
    assert t["blk.0.attn_norm.weight"].dtype == torch.float32
    # the file alone, run with llama.cpp's conventions, computes our logits
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(ids[None])[0, :, :V].double()
    torch.testing.assert_close(gguf_forward(r, ids), ours, atol=1e-4, rtol=1e-4)


def test_llama3_rope_freqs_divide_back_to_our_frequencies(tok_dir, tmp_path):
    model = tiny(tok_dir, **VARIANTS["llama3"])
    r = GGUFReader(str(write_gguf(model, tok_dir, tmp_path / "m.gguf")))
    f = tensors(r)["rope_freqs.weight"]
    cfg = model.cfg
    plain = base_inv_freq(cfg.rotary_dim, cfg.rope_theta)
    torch.testing.assert_close(plain / f, compute_inv_freq(cfg), rtol=1e-6, atol=0)
    assert f[0] == 1.0 and f[-1] == pytest.approx(8.0)


def test_permutation_is_llama_cpp_permute():
    """Our row order equals convert_hf_to_gguf's LlamaModel.permute for one head group."""
    hd, heads, d = 8, 3, 5
    w = torch.randn(heads * hd, d)
    llama_cpp = w.reshape(heads, 2, hd // 2, d).swapaxes(1, 2).reshape(w.shape)
    ours = w.view(heads, hd, d)[:, rope_pair_permutation(hd)].reshape(w.shape)
    assert torch.equal(ours, llama_cpp)


GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def llama_cpp_starcoder_split(text: str) -> list[str]:
    """llama.cpp's STARCODER pre-type: regex "\\p{N}" (each digit alone), then GPT-2's on each piece."""
    import regex
    pieces = [p for p in regex.split(r"(\p{N})", text) if p]
    return [m for p in pieces for m in regex.findall(GPT2_REGEX, p)]


def test_starcoder_pre_tokenizer_splits_like_ours(tok_dir):
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    texts = [Path(__import__("json").__file__).read_text()[:3000], "床前明月光，疑是地上霜。 12345 abc123def",
             "x  =  3.14159\n\n\t  y = 2**10 # 1e-5 ½ ٣ 七\n", "don't I'll   trailing   "]
    for text in texts:
        ours = [text[a:b] for _, (a, b) in tok.pre_tokenizer.pre_tokenize_str(text)]
        assert ours == llama_cpp_starcoder_split(text)


def test_pre_tokenizer_names_and_refusals():
    bl = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert pre_tokenizer_name({"pre_tokenizer": bl}) == "gpt-2"
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, bl]}}) == "starcoder"
    with pytest.raises(ValueError, match="no known llama.cpp pre-tokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})
    with pytest.raises(ValueError, match="normalizer"):
        pre_tokenizer_name({"pre_tokenizer": bl, "normalizer": {"type": "NFC"}})


@pytest.mark.parametrize("kw,match", [
    ({"rotary_pct": 0.5}, "partial rotary"),
    ({"rope_scaling": RopeScaling("dynamic", 8.0)}, "Dynamic NTK"),
    ({"sliding_window": 16}, "sliding_window"),
    ({"qkv_bias": True, "o_bias": True}, "biases on the attention output"),
    ({"mlp_bias": True}, "biases on the attention output or the MLP"),
    ({"qkv_bias": True, "rope_scaling": RopeScaling("llama3", 8.0, 32, 1.0, 4.0)}, "qwen2 graph reads no rope_freqs"),
    ({"norm": "layernorm"}, "norm layernorm"),
    ({"qk_norm": True}, "qk_norm"),
    ({"block_norm": "post", "qk_norm": True, "qk_norm_scope": "all"}, "llama architecture cannot run .*block_norm post"),
])
def test_what_gguf_cannot_express_is_refused(tok_dir, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        write_gguf(tiny(tok_dir, **kw), tok_dir, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.tmp").exists()


def test_biased_model_is_written_as_qwen2_and_runs_as_llama_cpp_qwen2(tok_dir, tmp_path):
    """q/k/v biases (Qwen2): architecture qwen2, biases as blk.N.attn_q.bias, q/k rows as they are
    (NEOX RoPE), and the file alone run with the qwen2 graph computes our logits."""
    model = tiny(tok_dir, qkv_bias=True, rope_scaling=RopeScaling("linear", 2.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
    r = GGUFReader(str(write_gguf(model, tok_dir, tmp_path / "q.gguf")))
    assert field(r, "general.architecture") == "qwen2" and field(r, "qwen2.block_count") == 2
    t, sd = tensors(r), model.state_dict()
    assert torch.equal(t["blk.1.attn_q.weight"], sd["layers.1.self_attn.q_proj.weight"])
    assert torch.equal(t["blk.1.attn_k.bias"], sd["layers.1.self_attn.k_proj.bias"])
    assert "blk.0.attn_output.bias" not in t and "<|im_start|>" in field(r, "tokenizer.chat_template")
    V = model.cfg.vocab_size
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(ids[None])[0, :, :V].double()
    torch.testing.assert_close(gguf_forward(r, ids), ours, atol=1e-4, rtol=1e-4)


def test_export_gguf_from_run_and_hf_folder_and_cli(tmp_path, capsys):
    from lmforge.cli import export as cli
    from lmforge.export.hf import export
    from test_eval_helpers import tiny_run
    run_dir = tiny_run(tmp_path / "run", steps=2)
    a = GGUFReader(str(export_gguf(run_dir, tmp_path / "a.gguf")))
    hf_dir = export(run_dir, tmp_path / "hf")
    b = GGUFReader(str(export_gguf(hf_dir, tmp_path / "b.gguf")))
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert field(a, "tokenizer.ggml.tokens") == field(b, "tokenizer.ggml.tokens")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["export", str(run_dir), str(tmp_path / "c.gguf"), "--format", "gguf",
                              "--gguf-type", "f16"])
    assert args.func(args) == 0 and "GGUF" in capsys.readouterr().out
    c = GGUFReader(str(tmp_path / "c.gguf"))
    tc = {t.name: t for t in c.tensors}
    assert tc["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tc["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
