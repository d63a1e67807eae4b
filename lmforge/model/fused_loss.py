"""LM head + cross-entropy fused by row chunks: full-vocab float32 logits never exist for the
whole batch at once (issue 9).

The plain path materialises B*T*V logits in bf16 and again in float32 for the loss, plus
their gradient: for a 1B model at 16k tokens per micro-batch and a 100k vocab that is
several GB. Here the rows are processed in chunks; each chunk's logits give the loss and,
right away, the gradient with respect to the hidden states and the head weight (softmax
minus one-hot, times 1 + 2*z*logZ for the z-loss), so backward only scales stored
gradients. Peak extra memory is one chunk of logits and one float32 copy of the head.

Exact: same sum of losses and the same gradients as `token_loss_sum(model.logits(h))`
(tests compare in float64). Padded vocabulary columns get no probability, labels of -100
count nothing.
"""
from __future__ import annotations

import torch

# rows per chunk = CHUNK_ELEMENTS / vocab: about 256 MB of float32 logits per chunk
CHUNK_ELEMENTS = 1 << 26


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, n_vocab: int, z_loss: float, chunk: int):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        acc = torch.promote_types(weight.dtype, torch.float32)   # float32, or float64 in tests
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        ce_total = torch.zeros((), dtype=acc, device=hidden.device)
        z_total = torch.zeros((), dtype=acc, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            h, y = hidden[s:s + chunk], labels[s:s + chunk]
            logits = h @ weight.t()                  # under autocast: a bf16 matmul
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            if n_vocab < logits.shape[1]:
                logits[:, n_vocab:] = float("-inf")
            keep = y != -100
            target = y.clamp_min(0).unsqueeze(1)
            lse = torch.logsumexp(logits, dim=-1)
            ce_total += ((lse - logits.gather(1, target).squeeze(1)) * keep).sum()
            if z_loss > 0:
                z_total += z_loss * (lse.square() * keep).sum()
            if need_h or need_w:
                # d(ce + z*lse^2)/dlogits = softmax * (1 + 2 z lse) - onehot(target)
                g = torch.exp(logits - lse.unsqueeze(1)) * (1 + 2 * z_loss * lse).unsqueeze(1)
                g.scatter_add_(1, target, torch.full_like(lse, -1.0).unsqueeze(1))
                g *= keep.unsqueeze(1)
                if need_h:
                    grad_h[s:s + chunk] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w += (g.t().to(h.dtype) @ h).to(grad_w.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ce, zl = ce_total.detach(), z_total.detach()
        ctx.mark_non_differentiable(ce, zl)
        return ce_total + z_total, ce, zl

    @staticmethod
    def backward(ctx, grad_out, _ce, _z):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None


@torch.compiler.disable  # a Python loop over chunks; the model around it still compiles
def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         n_vocab: int, z_loss: float = 0.0, chunk: int | None = None
                         ) -> tuple[torch.Tensor, dict]:
    """Sum over target tokens of CE(hidden @ weight.T) (+ z_loss * logZ^2), in float32.

    hidden [..., d] (already final-normed), weight [V_padded, d], labels [...] with -100 to
    ignore; columns >= n_vocab are padding. Returns (loss_sum, {"ce_sum", "z_loss_sum"}).
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    chunk = chunk or max(128, CHUNK_ELEMENTS // weight.shape[0])
    loss, ce, zl = _LinearCrossEntropy.apply(h, weight, y, int(n_vocab), float(z_loss), int(chunk))
    metrics = {"ce_sum": ce}
    if z_loss > 0:
        metrics["z_loss_sum"] = zl
    return loss, metrics
