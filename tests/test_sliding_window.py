"""Sliding-window attention: masks against a brute-force rule, packed documents, the KV-cache
path against the full forward, and FlexAttention against SDPA on CUDA."""
import pytest
import torch

from lmforge.model import ModelConfig, Transformer
from lmforge.model.attention import KVCache, build_mask, causal_window, positions_from_doc_ids


def test_window_mask_rule():
    T, W = 9, 3
    m = causal_window(T, W, "cpu")
    for i in range(T):
        assert [j for j in range(T) if m[i, j]] == list(range(max(0, i - W + 1), i + 1))
    assert build_mask("sdpa", None, 1, 3, torch.device("cpu"), window=3).dense is None   # window >= T: causal
    doc = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1]])
    dense = build_mask("sdpa", doc, 1, T, torch.device("cpu"), window=W).dense[0, 0]
    assert dense[8].tolist() == [False] * 6 + [True] * 3 and dense[4].tolist() == [False] * 4 + [True] + [False] * 4


def model(window, backend="sdpa", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256,
                      sliding_window=window, attn_backend=backend, **kw)
    return Transformer(cfg).eval()


def test_window_equals_truncated_context_and_packing():
    """With window W and 2 layers, the last position sees 2 (W - 1) + 1 tokens back: its logits
    equal a forward over just those (RoPE is relative: the shifted positions change nothing)."""
    W, T = 6, 20
    m = model(W)
    x = torch.randint(0, 100, (1, T), generator=torch.Generator().manual_seed(1))
    reach = 2 * (W - 1) + 1
    with torch.no_grad():
        full = m(x)[0, -1]
        torch.testing.assert_close(m(x[:, -reach:])[0, -1], full, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(m(x[:, -reach + 1:])[0, -1], full, atol=1e-4)   # one token less: not
        assert not torch.allclose(model(None)(x)[0, -1], full, atol=1e-3)   # the window matters
        # two packed documents: each as if alone
        doc = torch.tensor([[0] * 8 + [1] * 12])
        packed = m(x, doc_ids=doc, position_ids=positions_from_doc_ids(doc))
        torch.testing.assert_close(packed[0, 8:], m(x[:, 8:])[0], atol=1e-5, rtol=1e-5)


def test_kv_cache_decoding_with_window_equals_full_forward():
    W = 5
    m = model(W)
    x = torch.randint(0, 100, (2, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = m(x)
        cache = KVCache.for_model(m, 2, 17)
        got = [m.forward_cached(x[:, :7], cache)]
        for t in range(7, 17):
            got.append(m.forward_cached(x[:, t:t + 1], cache))
    torch.testing.assert_close(torch.cat(got, 1), want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention needs CUDA")
@pytest.mark.parametrize("with_docs", [False, True])
def test_flex_window_matches_sdpa_on_cuda(with_docs):
    flex, sdpa = model(100, "flex").cuda(), model(100, "sdpa").cuda()
    sdpa.load_state_dict(flex.state_dict())
    B, T = 2, 300
    ids = torch.randint(0, 100, (B, T), device="cuda")
    doc = torch.cat([torch.zeros(B, 150), torch.ones(B, 150)], 1).long().cuda() if with_docs else None
    outs = []
    for m in (flex, sdpa):
        logits = m(ids, doc_ids=doc)
        logits[..., :100].float().logsumexp(-1).mean().backward()
        outs.append((logits.detach(), m.layers[0].self_attn.q_proj.weight.grad.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=2e-4, rtol=2e-3)
