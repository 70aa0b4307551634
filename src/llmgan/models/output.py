"""Chunked, fused output layer + log-likelihood that never materializes all logits.

Why: for a small LM with a large vocabulary (SeqGAN: hidden 32, V = 5000) most of an MLE step is
spent writing and re-reading the (N, V) logit matrix (matmul output, log-softmax forward and
backward). Here the logits exist one row-chunk at a time, small enough to stay in cache.

``weighted_token_nll`` is the training path: it returns ``-sum(weights * log p(target))`` and
computes its gradients during the forward pass (each chunk's logits are used for the loss and the
gradients while they are hot), so backward is a scalar multiply. MLE uses
``weights = mask / n_tokens``; REINFORCE uses ``weights = advantage * mask / B``.

``token_log_probs`` returns the per-token log-probabilities (N,) with a recomputing backward,
for algorithms that need them individually (importance ratios, KL terms).
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 256


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    logits = h @ weight.t()
    if bias is not None:
        logits += bias
    return logits


def _no_autocast(device: torch.device):
    """The chunk math runs in fp32 whatever autocast says (inputs are cast explicitly)."""
    return torch.autocast(device_type=device.type, enabled=False)


class _WeightedTokenNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, weights: Tensor):
        with _no_autocast(h.device):
            return _WeightedTokenNLL._forward(ctx, h, weight, bias, targets, weights)

    @staticmethod
    def _forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, weights: Tensor):
        needs_grad = any(ctx.needs_input_grad[:3])
        hf, wf = h.float(), weight.float()
        bf = bias.float() if bias is not None else None
        total = hf.new_zeros(())
        grad_h = torch.empty_like(hf) if needs_grad else None
        grad_w = torch.zeros_like(wf) if needs_grad else None
        grad_b = torch.zeros_like(bf) if (needs_grad and bf is not None) else None
        wt = wf.t().contiguous()  # (H, V): contiguous right operand for the chunk matmuls
        for start in range(0, hf.size(0), CHUNK):
            rows = slice(start, start + CHUNK)
            logits = torch.addmm(bf, hf[rows], wt) if bf is not None else hf[rows] @ wt  # (c, V)
            tgt = targets[rows]
            w = weights[rows].float()
            if not needs_grad:
                lse = torch.logsumexp(logits, dim=-1)  # (c,)
                total -= (w * (logits.gather(-1, tgt[:, None]).squeeze(-1) - lse)).sum()
                continue
            # One fused softmax gives both the loss and the gradient (separate max/exp passes cost ~3x).
            probs = torch.softmax(logits, dim=-1)
            p_t = probs.gather(-1, tgt[:, None]).squeeze(-1)
            logp_t = p_t.log()
            tiny = p_t < 1e-30  # underflow: take those rows' log-probabilities exactly
            if bool(tiny.any()):
                exact = logits[tiny].gather(-1, tgt[tiny, None]).squeeze(-1) - torch.logsumexp(logits[tiny], -1)
                logp_t = logp_t.masked_scatter(tiny, exact)
            total -= (w * logp_t).sum()
            # d(-w * log p_t)/d logits = w * (softmax - onehot(t))
            dlogits = probs.mul_(w[:, None])
            dlogits.scatter_add_(-1, tgt[:, None], -w[:, None])
            grad_h[rows] = dlogits @ wf
            grad_w.addmm_(dlogits.t(), hf[rows])
            if grad_b is not None:
                grad_b += dlogits.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        gh = (grad_h * grad_out).to(h_dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(w_dtype) if grad_w is not None else None
        gb = (grad_b * grad_out).to(b_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None


def weighted_token_nll(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, weights: Tensor) -> Tensor:
    """``-sum_i weights[i] * log softmax(hidden[i] @ weight.T + bias)[targets[i]]`` as a scalar.

    hidden (N, H), weight (V, H), bias (V,) or None, targets (N,) long, weights (N,) (no gradient
    flows to ``weights``). Positions with weight 0 still cost compute; drop them before calling
    when many are padding.
    """
    return _WeightedTokenNLL.apply(hidden, weight, bias, targets, weights.detach())


class _TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor):
        with _no_autocast(h.device):
            return _TokenLogProbs._forward(ctx, h, weight, bias, targets)

    @staticmethod
    def _forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor):
        hf, wf = h.float(), weight.float()
        bf = bias.float() if bias is not None else None
        out = hf.new_empty(hf.size(0))
        lses = hf.new_empty(hf.size(0))
        for start in range(0, hf.size(0), CHUNK):
            rows = slice(start, start + CHUNK)
            logits = _chunk_logits(hf[rows], wf, bf)
            lse = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(-1, targets[rows, None]).squeeze(-1) - lse
            lses[rows] = lse
        ctx.save_for_backward(h, weight, bias, targets, lses)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        with _no_autocast(grad_out.device):
            return _TokenLogProbs._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: Tensor):
        h, weight, bias, targets, lses = ctx.saved_tensors
        hf, wf = h.float(), weight.float()
        bf = bias.float() if bias is not None else None
        grad_h = torch.empty_like(hf)
        grad_w = torch.zeros_like(wf)
        grad_b = torch.zeros_like(bf) if bf is not None else None
        for start in range(0, hf.size(0), CHUNK):
            rows = slice(start, start + CHUNK)
            g = grad_out[rows].float()
            logits = _chunk_logits(hf[rows], wf, bf)
            # d(g * log p_t)/d logits = g * (onehot(t) - softmax)
            dlogits = logits.sub_(lses[rows, None]).exp_().mul_(-g[:, None])
            dlogits.scatter_add_(-1, targets[rows, None], g[:, None])
            grad_h[rows] = dlogits @ wf
            grad_w.addmm_(dlogits.t(), hf[rows])
            if grad_b is not None:
                grad_b += dlogits.sum(0)
        return (
            grad_h.to(h.dtype),
            grad_w.to(weight.dtype),
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
        )


def token_log_probs(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    """Per-row ``log softmax(hidden @ weight.T + bias)[targets]``: hidden (N, H) -> (N,)."""
    return _TokenLogProbs.apply(hidden, weight, bias, targets)
