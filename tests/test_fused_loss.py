"""The fused chunked head + cross-entropy equals the plain logits path (values and gradients)."""
import pytest
import torch

from lmforge import config
from lmforge.model import ModelConfig, Transformer
from lmforge.model.fused_loss import linear_cross_entropy


def _ce_float64(logits, y, z):
    """Direct float64 formula: sum over kept tokens of logZ - logit[target] + z * logZ^2."""
    logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    keep = y != -100
    lse = torch.logsumexp(logits[keep], dim=-1)
    return (lse - logits[keep].gather(1, y[keep].unsqueeze(1)).squeeze(1) + z * lse ** 2).sum()


def _reference(h, w, y, n_vocab, z):
    logits = h @ w.t()
    logits = logits.masked_fill(torch.arange(w.shape[0]) >= n_vocab, float("-inf"))
    return _ce_float64(logits, y, z)


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
@pytest.mark.parametrize("chunk", [3, 7, 64])
def test_matches_plain_cross_entropy_in_float64(z_loss, chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 9, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(70, 16, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 61, (2, 9), generator=g)
    y[0, :3] = -100
    loss, metrics = linear_cross_entropy(h, w, y, 61, z_loss, chunk=chunk)
    gh, gw = torch.autograd.grad(loss * 0.5, (h, w))
    ref = _reference(h, w, y, 61, z_loss)
    rh, rw = torch.autograd.grad(ref * 0.5, (h, w))
    torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gh, rh, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gw, rw, rtol=1e-6, atol=1e-9)
    assert gw[61:].abs().sum() == 0      # padded vocab rows get no gradient
    if z_loss:
        assert float(metrics["z_loss_sum"]) > 0


def test_model_labels_path_equals_logits_path_with_norm_head():
    cfg = config.from_dict(ModelConfig, {"vocab_size": 100, "d_model": 32, "n_layers": 2, "n_heads": 4,
                                         "n_kv_heads": 2, "max_seq_len": 32, "norm_head": True})
    torch.manual_seed(0)
    model = Transformer(cfg).double()
    ids = torch.randint(0, 100, (2, 16))
    labels = torch.roll(ids, -1, 1)
    labels[:, -1] = -100
    doc_ids = torch.tensor([[0] * 8 + [1] * 8, [0] * 16])
    loss, _ = model(ids, doc_ids=doc_ids, labels=labels, z_loss=1e-4)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref = _ce_float64(model(ids, doc_ids=doc_ids), labels, 1e-4)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = config.from_dict(ModelConfig, {"vocab_size": 100, "d_model": 32, "n_layers": 3, "n_heads": 4,
                                         "max_seq_len": 32})
    torch.manual_seed(0)
    model = Transformer(cfg).double()
    ids = torch.randint(0, 100, (2, 16))
    doc_ids = torch.tensor([[0] * 5 + [1] * 11, [0] * 16])

    def grads():
        loss, _ = model(ids, doc_ids=doc_ids, labels=torch.roll(ids, -1, 1))
        return torch.autograd.grad(loss, list(model.parameters()))
    plain = grads()
    model.activation_checkpointing = True
    for a, b in zip(grads(), plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
@pytest.mark.parametrize("chunk", [3, 64])
def test_per_token_losses_and_gradients_match_float64(z_loss, chunk):
    """reduction "none" (DPO's log-probs): each token's loss, 0 where ignored, and gradients
    under a different upstream gradient per token (what backward's recomputation must honour)."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(70, 16, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 61, (2, 9), generator=g)
    y[0, :3] = -100
    up = torch.randn(2, 9, generator=g, dtype=torch.float64)
    tok, metrics = linear_cross_entropy(h, w, y, 61, z_loss, chunk=chunk, reduction="none")
    gh, gw = torch.autograd.grad((tok * up).sum(), (h, w))
    logits = (h @ w.t()).masked_fill(torch.arange(70) >= 61, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    ce = (lse - logits.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)) * (y != -100)
    ref = ce + z_loss * lse ** 2 * (y != -100)
    rh, rw = torch.autograd.grad((ref * up).sum(), (h, w))
    assert tok.shape == y.shape and (tok[0, :3] == 0).all()
    torch.testing.assert_close(tok, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gh, rh, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gw, rw, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(metrics["ce_sum"], ce.sum(), rtol=1e-9, atol=1e-9)
    total, _ = linear_cross_entropy(h, w, y, 61, z_loss, chunk=chunk)     # the summed path's loss
    torch.testing.assert_close(tok.sum(), total, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [4, 64])
def test_summed_path_gives_each_tokens_ce_detached(chunk):
    """token_ce=True (SFT's per-segment metrics): the summed loss unchanged, each token's CE in
    float64 agreement with the logits, 0 where ignored, and not part of the graph."""
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 7, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(70, 16, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 61, (3, 7), generator=g)
    y[1, 2:5] = -100
    loss, metrics = linear_cross_entropy(h, w, y, 61, chunk=chunk, token_ce=True)
    plain, _ = linear_cross_entropy(h, w, y, 61, chunk=chunk)
    logits = (h @ w.t()).masked_fill(torch.arange(70) >= 61, float("-inf"))
    ce = (torch.logsumexp(logits, -1) - logits.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)) * (y != -100)
    tok = metrics["token_ce"]
    assert tok.shape == y.shape and not tok.requires_grad and (tok[1, 2:5] == 0).all()
    torch.testing.assert_close(tok, ce, rtol=1e-9, atol=1e-9)
    assert torch.equal(loss, plain)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, y, 61, reduction="mean")
