"""The discriminator as a density ratio: the math, on plain score arrays (no models, no runs).

An optimal classifier of real (p_data) against generated (p_G) samples has ``logit(x) = log p_data(x) /
p_G(x)`` (equal class priors), so ``r(x) = exp(logit)`` corrects G without retraining it:

* :func:`sir_select` -- sampling-importance-resampling: K candidates from G, one kept with probability
  ``r_k / sum_j r_j``. As K grows the kept sample's law tends to ``p_G(x) r(x) / Z``.
* :func:`rejection_accept` -- rejection sampling with a bound ``M >= r(x)``: accept with probability
  ``r(x) / M``. Exact (accepted samples follow ``p_G r / Z``) whenever the bound holds; acceptance rate
  ``Z / M``. Discriminator rejection sampling (Azadi et al. 2019) takes M as the largest ratio seen.
* :func:`fit_platt` -- Platt scaling ``log r = a * s + b`` of a trained D's realness logit ``s`` on held-out
  real vs fresh generated samples: a D trained to rank is not yet a ratio (its logit may be too sharp or
  too flat; a ``wgan``/``hinge`` critic's scale means nothing). Only ``a`` changes SIR and rejection
  sampling (``b`` cancels in the normalisation and in ``r / M``), and ``b`` cancels in the residual
  model's NLL too (it moves log Z by ``-b``); it is fitted so that ``r`` reads as a ratio (``E_G[r] ~ 1``).
* :func:`importance_log_z` / :func:`residual_nll` -- the residual energy-based model (Deng et al., ICLR
  2020) ``p(x) = p_G(x) exp(-E(x)) / Z`` with ``Z = E_{p_G}[exp(-E)]`` estimated by importance sampling
  with G as the proposal; an ESTIMATE with a delta-method standard error (log of a mean is biased low by
  Jensen, so the NLL estimate is biased low by O(1/n)).

Every function takes ``log_r`` (log-ratios), never ``r``: ratios of long sequences overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def effective_sample_size(log_w: Tensor) -> Tensor:
    """Kish's ESS ``(sum w)^2 / sum w^2`` over the last dim (in [1, K]), computed in log space."""
    log_w = log_w.double()
    return torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1))


def sir_select(log_r: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sampling-importance-resampling: for each row of ``log_r`` (N, K) keep one candidate index drawn
    with probability ``softmax(log_r)`` (the normalised ratios). Returns (indices (N,), ESS (N,))."""
    if log_r.dim() != 2 or log_r.size(1) < 1:
        raise ValueError(f"sir_select: log_r must be (N, K) with K >= 1, got {tuple(log_r.shape)}")
    p = torch.softmax(log_r.double(), dim=-1)
    idx = torch.multinomial(p.cpu(), 1, generator=generator).squeeze(1)
    return idx, effective_sample_size(log_r)


def rejection_accept(log_r: Tensor, log_m: float, generator: torch.Generator | None = None) -> Tensor:
    """Accept each candidate with probability ``min(1, r / M) = exp(min(0, log_r - log_m))``.

    Exact when ``log_m >= max log_r``; a candidate above the bound is accepted with probability 1, which
    under-weights it (the caller counts such violations and raises the bound, as DRS does)."""
    p = torch.exp(torch.clamp(log_r.double() - log_m, max=0.0)).cpu()
    u = torch.rand(p.shape, generator=generator, dtype=torch.float64)
    return u < p


@dataclass
class Calibration:
    """``log r = a * s + b`` on realness logits ``s``; ``method``: ``platt`` | ``temperature`` | ``none``."""

    a: float = 1.0
    b: float = 0.0
    method: str = "none"
    nll: float = float("nan")  # held-out balanced cross-entropy of the fitted calibrator (nats)
    nll_raw: float = float("nan")  # the same with a = 1, b = 0 (the uncalibrated D)

    def log_ratio(self, s: Tensor) -> Tensor:
        return self.a * s.double() + self.b


CALIBRATIONS = ("platt", "temperature", "none")


def _balanced_bce(a: float, b: float, s_real: np.ndarray, s_fake: np.ndarray) -> float:
    # each class weighted 1/2 whatever the counts: the logit of a balanced classifier is the log-ratio
    zr, zf = a * s_real + b, a * s_fake + b
    return 0.5 * float(np.logaddexp(0.0, -zr).mean()) + 0.5 * float(np.logaddexp(0.0, zf).mean())


def fit_platt(s_real: np.ndarray | Tensor, s_fake: np.ndarray | Tensor, method: str = "platt",
              l2: float = 1e-4, iters: int = 100) -> Calibration:
    """Fit ``log r = a * s + b`` by balanced logistic regression of real (label 1) vs generated scores.

    Balanced (each class weight 1/2, whatever the counts), so the fitted logit estimates ``log p_data /
    p_G`` rather than that plus ``log(n_real / n_fake)``. ``temperature``: ``b`` fixed at 0. A small L2
    penalty on ``a`` keeps the fit finite when the scores separate the classes. Newton's method with
    step halving (2 parameters; the loss is convex)."""
    if method not in CALIBRATIONS:
        raise ValueError(f"calibration {method!r}: expected one of {', '.join(CALIBRATIONS)}")
    sr = np.asarray(s_real, dtype=np.float64).ravel()
    sf = np.asarray(s_fake, dtype=np.float64).ravel()
    if sr.size == 0 or sf.size == 0:
        raise ValueError("fit_platt needs real and generated scores")
    raw = _balanced_bce(1.0, 0.0, sr, sf)
    if method == "none":
        return Calibration(1.0, 0.0, "none", raw, raw)
    s = np.concatenate([sr, sf])
    y = np.concatenate([np.ones_like(sr), np.zeros_like(sf)])
    w = np.concatenate([np.full(sr.size, 0.5 / sr.size), np.full(sf.size, 0.5 / sf.size)])
    free_b = method == "platt"

    def loss(th: np.ndarray) -> float:
        return _balanced_bce(th[0], th[1], sr, sf) + 0.5 * l2 * th[0] ** 2

    th = np.array([1.0, 0.0])
    cur = loss(th)
    for _ in range(iters):
        z = th[0] * s + th[1]
        p = 1.0 / (1.0 + np.exp(-z))
        g = np.array([np.sum(w * (p - y) * s) + l2 * th[0], np.sum(w * (p - y))])
        h = w * p * (1 - p)
        H = np.array([[np.sum(h * s * s) + l2, np.sum(h * s)], [np.sum(h * s), np.sum(h) + 1e-12]])
        if not free_b:
            g[1], H[0, 1], H[1, 0], H[1, 1] = 0.0, 0.0, 0.0, 1.0
        step = np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-8:
            nxt = th - t * step
            val = loss(nxt)
            if val <= cur:
                break
            t /= 2
        if t <= 1e-8 or cur - val < 1e-12:
            if t > 1e-8:
                th, cur = nxt, val
            break
        th, cur = nxt, val
    return Calibration(float(th[0]), float(th[1]), method, _balanced_bce(th[0], th[1], sr, sf), raw)


def importance_log_z(neg_energy: Tensor | np.ndarray) -> tuple[float, float]:
    """(log Z estimate, its standard error) for ``Z = E_{p_G}[exp(-E(x))]`` from ``-E`` at samples x ~ p_G.

    ``log Z_hat = logmeanexp(-E)``; SE by the delta method: ``se(log Z_hat) = std(w) / (sqrt(n) mean(w))``
    with ``w = exp(-E)`` (computed relative to the largest weight, so nothing overflows)."""
    v = torch.as_tensor(neg_energy, dtype=torch.float64).ravel()
    n = v.numel()
    if n < 2:
        raise ValueError("importance_log_z needs at least 2 samples")
    log_z = float(torch.logsumexp(v, 0) - math.log(n))
    w = torch.exp(v - v.max())
    se = float(w.std(unbiased=True) / (math.sqrt(n) * w.mean()))
    return log_z, se


def residual_nll(nll_g: Tensor | np.ndarray, energy: Tensor | np.ndarray, neg_energy_proposal: Tensor | np.ndarray,
                 n_tokens: Tensor | np.ndarray | None = None) -> dict:
    """NLL of held-out data under ``p_G exp(-E) / Z``: ``mean(nll_g + E) + log Z_hat`` and its SE.

    ``nll_g`` (N,): ``-log p_G(x)`` of each held-out sequence (nats); ``energy`` (N,): ``E(x)`` there;
    ``neg_energy_proposal`` (M,): ``-E`` at M fresh samples of G (the Z estimate). With ``n_tokens`` (N,)
    the per-token value ``(sum(nll_g + E) + N log Z) / sum(n_tokens)`` is reported too. The SE combines the
    held-out sample's spread and the log Z estimator's (independent samples). An estimate, not a bound."""
    a = torch.as_tensor(nll_g, dtype=torch.float64).ravel()
    e = torch.as_tensor(energy, dtype=torch.float64).ravel()
    if a.shape != e.shape or a.numel() < 2:
        raise ValueError(f"residual_nll: nll_g and energy must be equal-length (>= 2), got {a.numel()}, {e.numel()}")
    log_z, se_z = importance_log_z(neg_energy_proposal)
    per = a + e
    nll = float(per.mean()) + log_z
    se_data = float(per.std(unbiased=True)) / math.sqrt(per.numel())
    out = {"nll": nll, "nll_se": math.sqrt(se_data**2 + se_z**2), "log_z": log_z, "log_z_se": se_z,
           "nll_g": float(a.mean()), "mean_energy": float(e.mean())}
    if n_tokens is not None:
        tot = float(torch.as_tensor(n_tokens, dtype=torch.float64).sum())
        out["nll_per_token"] = (float(per.sum()) + per.numel() * log_z) / tot
        out["nll_g_per_token"] = float(a.sum()) / tot
        out["nll_per_token_se"] = out["nll_se"] * per.numel() / tot
    return out


# ----------------------------------------------------------------------------------------- on a run
@torch.no_grad()
def sequence_nll(generator: torch.nn.Module, tokens: Tensor, lengths: Tensor, batch_size: int = 256,
                 temperature: float = 1.0) -> Tensor:
    """``-log p_G(x)`` (N,) of each right-padded row, summed over its ``lengths`` tokens (EOS included);
    under ``softmax(logits / temperature)`` when ``temperature != 1`` (generators with ``hidden`` and
    ``lm_head``, as ``llmgan.sweep.temperature_nll``: the scaled output layer through the fused kernel)."""
    was = generator.training
    generator.eval()
    out = []
    for start in range(0, tokens.size(0), batch_size):
        ln = lengths[start : start + batch_size]
        t = tokens[start : start + batch_size].to(generator.device)
        mask = (torch.arange(t.size(1))[None, :] < ln[:, None]).to(generator.device)
        if temperature == 1.0:
            lp = generator.log_probs(t)
        else:
            from llmgan.models.output import token_log_probs

            w = generator.lm_head.weight / temperature
            b = generator.lm_head.bias / temperature if generator.lm_head.bias is not None else None
            h = generator.hidden(t)
            B, T, H = h.shape
            lp = token_log_probs(h.reshape(B * T, H), w, b, generator._safe_targets(t).reshape(-1)).view(B, T)
        out.append(-(lp.double() * mask).sum(1).cpu())
    generator.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def residual_ebm_nll_for_run(run, test_corpus, n_proposal: int = 10000, rng: torch.Generator | None = None,
                             batch_size: int = 256) -> dict:
    """Held-out NLL of a ``residual_ebm`` run's model ``p_G exp(-E) / Z`` (per token, EOS included, as
    ``test_nll``), ``E = -realness logit`` of its discriminator, log Z importance-sampled from
    ``n_proposal`` fresh G samples at temperature 1 (:func:`residual_nll`). Keys ``ebm_test_nll``,
    ``ebm_test_nll_se``, ``ebm_log_z``, ``ebm_log_z_se``, ``ebm_n_proposal`` and ``ebm_g_test_nll`` (G's own
    per-token NLL of the same sequences, for comparison)."""
    from llmgan.losses import realness_logits
    from llmgan.metrics.detection import _pad_to, discriminator_scores

    D = run.discriminator()
    kind = run.cfg.adversarial.loss
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    max_len = run.max_len
    g = run.generator
    tokens = _pad_to(test_corpus.tokens, max_len, pad)
    lengths = test_corpus.lengths.clamp(max=max_len)
    nll_g = sequence_nll(g, tokens, lengths, batch_size)
    energy = -realness_logits(discriminator_scores(D, tokens, batch_size).double(), kind)
    was = g.training
    g.eval()
    props = []
    with torch.no_grad():
        for start in range(0, n_proposal, batch_size):
            s = g.sample(min(batch_size, n_proposal - start), max_len, generator=rng)
            props.append(_pad_to(s.tokens.cpu(), max_len, pad))
    g.train(was)
    neg_e = realness_logits(discriminator_scores(D, torch.cat(props), batch_size).double(), kind)
    res = residual_nll(nll_g, energy, neg_e, n_tokens=lengths)
    return {"ebm_test_nll": res["nll_per_token"], "ebm_test_nll_se": res["nll_per_token_se"],
            "ebm_log_z": res["log_z"], "ebm_log_z_se": res["log_z_se"], "ebm_n_proposal": n_proposal,
            "ebm_g_test_nll": res["nll_g_per_token"]}
