"""LM head + cross-entropy fused by row chunks: full-vocab float32 logits never exist for the
whole batch at once (issue 9). The one loss path of every objective that scores target
tokens: the LM and pretraining loss (a sum over the batch), DPO (a loss per token, summed
per sequence into its log-probability), SFT and C-RLFT without KL (a loss per token, summed
per segment or weighted by class). Only what needs the whole distribution (a KL, a
teacher's divergence) still takes full logits.

The plain path materialises B*T*V logits in bf16 and again in float32 for the loss, plus
their gradient: for a 1B model at 16k tokens per micro-batch and a 100k vocab that is
several GB. Here the rows are processed in chunks. For the summed loss each chunk's logits
give the loss and, right away, the gradient with respect to the hidden states and the head
weight (softmax minus one-hot, times 1 + 2*z*logZ for the z-loss), so backward only scales
stored gradients. The loss per token (reduction "none") cannot do that: every token's
gradient is scaled by its own upstream gradient, which is known only in backward, so
backward recomputes each chunk's logits from the saved hidden states (one more head matmul,
the same peak memory). Peak extra memory is one chunk of logits and one float32 copy of the
head.

Exact: same losses and the same gradients as `token_loss_sum(model.logits(h))` or the
per-token cross-entropy of the logits (tests compare in float64). Padded vocabulary columns
get no probability, labels of -100 count nothing (loss 0 per token).
"""
from __future__ import annotations

from typing import Literal

import torch

# rows per chunk = CHUNK_ELEMENTS / vocab: about 256 MB of float32 logits per chunk
CHUNK_ELEMENTS = 1 << 26


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, n_vocab: int) -> torch.Tensor:
    """float32 (or float64) logits of one chunk of rows, padded columns -inf."""
    logits = h @ weight.t()                  # under autocast: a bf16 matmul
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if n_vocab < logits.shape[1]:
        logits[:, n_vocab:] = float("-inf")
    return logits


def _logit_grad(logits: torch.Tensor, lse: torch.Tensor, target: torch.Tensor, keep: torch.Tensor,
                z_loss: float) -> torch.Tensor:
    """d(ce + z*lse^2)/dlogits = softmax * (1 + 2 z lse) - onehot(target), zero on ignored rows."""
    g = torch.exp(logits - lse.unsqueeze(1)) * (1 + 2 * z_loss * lse).unsqueeze(1)
    g.scatter_add_(1, target, torch.full_like(lse, -1.0).unsqueeze(1))
    g *= keep.unsqueeze(1)
    return g


def _add_grads(g: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, grad_h: torch.Tensor | None,
               grad_w: torch.Tensor | None, rows: slice) -> None:
    """The chunk's share of the gradients through the head matmul, given d loss / d logits `g`."""
    if grad_h is not None:
        grad_h[rows] = (g.to(weight.dtype) @ weight).to(grad_h.dtype)
    if grad_w is not None:
        grad_w += (g.t().to(h.dtype) @ h).to(grad_w.dtype)


def _grad_buffers(hidden: torch.Tensor, weight: torch.Tensor, need_h: bool, need_w: bool):
    """Zeroed gradients of the hidden states and the head weight (None where not needed)."""
    acc = torch.promote_types(weight.dtype, torch.float32)   # float32, or float64 in tests
    grad_h = torch.zeros_like(hidden) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    return grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    """The summed loss: gradients computed in forward, backward scales them. Also returns each
    token's cross-entropy, detached (for metrics by segment: SFT's reply and pretraining rows)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, n_vocab: int, z_loss: float, chunk: int):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h, grad_w = _grad_buffers(hidden, weight, need_h, need_w)
        acc = torch.promote_types(weight.dtype, torch.float32)
        ce_total = torch.zeros((), dtype=acc, device=hidden.device)
        z_total = torch.zeros((), dtype=acc, device=hidden.device)
        token_ce = torch.zeros(hidden.shape[0], dtype=acc, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            h, y = hidden[s:s + chunk], labels[s:s + chunk]
            logits = _chunk_logits(h, weight, n_vocab)
            keep = y != -100
            target = y.clamp_min(0).unsqueeze(1)
            lse = torch.logsumexp(logits, dim=-1)
            ce = token_ce[s:s + chunk] = (lse - logits.gather(1, target).squeeze(1)) * keep
            ce_total += ce.sum()
            if z_loss > 0:
                z_total += z_loss * (lse.square() * keep).sum()
            if need_h or need_w:
                _add_grads(_logit_grad(logits, lse, target, keep, z_loss), h, weight, grad_h, grad_w,
                           slice(s, s + chunk))
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ce, zl = ce_total.detach(), z_total.detach()
        ctx.mark_non_differentiable(ce, zl, token_ce)
        return ce_total + z_total, ce, zl, token_ce

    @staticmethod
    def backward(ctx, grad_out, _ce, _z, _tokens):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None


class _TokenCrossEntropy(torch.autograd.Function):
    """The loss of every token [N] (0 where ignored): backward recomputes the chunks' logits
    under the autocast state forward ran in (the same bf16 matmul, the same values)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, n_vocab: int, z_loss: float, chunk: int):
        acc = torch.promote_types(weight.dtype, torch.float32)
        ce = torch.zeros(hidden.shape[0], dtype=acc, device=hidden.device)
        zl = torch.zeros(hidden.shape[0], dtype=acc, device=hidden.device)
        lse_all = torch.zeros(hidden.shape[0], dtype=acc, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            y = labels[s:s + chunk]
            logits = _chunk_logits(hidden[s:s + chunk], weight, n_vocab)
            keep = y != -100
            lse = lse_all[s:s + chunk] = torch.logsumexp(logits, dim=-1)
            ce[s:s + chunk] = (lse - logits.gather(1, y.clamp_min(0).unsqueeze(1)).squeeze(1)) * keep
            if z_loss > 0:
                zl[s:s + chunk] = z_loss * lse.square() * keep
        ctx.save_for_backward(hidden, weight, labels, lse_all)
        ctx.n_vocab, ctx.z_loss, ctx.chunk = n_vocab, z_loss, chunk
        device = hidden.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ce_sum, z_sum = ce.sum().detach(), zl.sum().detach()
        ctx.mark_non_differentiable(ce_sum, z_sum)
        return ce + zl, ce_sum, z_sum

    @staticmethod
    def backward(ctx, grad_out, _ce, _z):
        hidden, weight, labels, lse_all = ctx.saved_tensors
        grad_h, grad_w = _grad_buffers(hidden, weight, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        device, dtype, enabled = ctx.autocast
        with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            for s in range(0, hidden.shape[0], ctx.chunk):
                h, y = hidden[s:s + ctx.chunk], labels[s:s + ctx.chunk]
                logits = _chunk_logits(h, weight, ctx.n_vocab)
                g = _logit_grad(logits, lse_all[s:s + ctx.chunk], y.clamp_min(0).unsqueeze(1), y != -100, ctx.z_loss)
                g *= grad_out[s:s + ctx.chunk].to(g.dtype).unsqueeze(1)
                _add_grads(g, h, weight, grad_h, grad_w, slice(s, s + ctx.chunk))
        gw = grad_w.to(weight.dtype) if grad_w is not None else None
        return grad_h, gw, None, None, None, None


@torch.compiler.disable  # a Python loop over chunks; the model around it still compiles
def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         n_vocab: int, z_loss: float = 0.0, chunk: int | None = None,
                         reduction: Literal["sum", "none"] = "sum",
                         token_ce: bool = False) -> tuple[torch.Tensor, dict]:
    """CE(hidden @ weight.T) (+ z_loss * logZ^2) of the target tokens, in float32: their sum,
    or (reduction "none") each token's, shaped like `labels` (0 where ignored).

    hidden [..., d] (already final-normed), weight [V_padded, d], labels [...] with -100 to
    ignore; columns >= n_vocab are padding. Returns (loss, {"ce_sum", "z_loss_sum"}); with
    `token_ce` (reduction "sum") also "token_ce": each token's CE, detached, shaped like `labels`
    (a summed loss whose parts are wanted only as metrics: no recomputation in backward).
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    chunk = chunk or max(128, CHUNK_ELEMENTS // weight.shape[0])
    metrics = {}
    if reduction == "sum":
        loss, ce, zl, tokens = _LinearCrossEntropy.apply(h, weight, y, int(n_vocab), float(z_loss), int(chunk))
        if token_ce:
            metrics["token_ce"] = tokens.view(labels.shape)
    elif reduction == "none":
        loss, ce, zl = _TokenCrossEntropy.apply(h, weight, y, int(n_vocab), float(z_loss), int(chunk))
    else:
        raise ValueError(f"reduction must be 'sum' or 'none', not {reduction!r}")
    metrics["ce_sum"] = ce
    if z_loss > 0:
        metrics["z_loss_sum"] = zl
    return (loss.view(labels.shape) if reduction == "none" else loss), metrics
