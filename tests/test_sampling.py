"""The two-level inverse-CDF sampler draws exactly the categorical distribution it claims to."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmgan.errors import ConfigError
from llmgan.models.sampling import filter_logits, gumbel_softmax, sample_categorical, sample_from_hidden

try:
    import scipy.stats as sps
except ImportError:  # pragma: no cover - scipy is optional
    sps = None

N_DRAWS = 200_000
Z_999 = 3.090232306167813  # standard normal quantile at 1 - 0.001


# chi-square critical values at p = 0.001 for dof 1..10 (tables); beyond, Wilson-Hilferty
CHI2_999 = [10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588]


def chi2_critical_999(dof: int) -> float:
    """Chi-square critical value at p = 0.001: table up to dof 10, then the Wilson-Hilferty
    approximation (< 0.6 % off there). Used only when scipy is missing: the dof depends on how
    many cells are pooled, so one hard-coded number would not do."""
    if dof <= len(CHI2_999):
        return CHI2_999[dof - 1]
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + Z_999 * math.sqrt(a)) ** 3


def assert_fits(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> None:
    """Chi-square goodness of fit of counts (V,) to probs (V,) at p = 0.001.

    Cells with expected count below ``min_expected`` are pooled into one (the chi-square
    approximation needs it); a drawn cell of probability 0 fails outright.
    """
    counts, probs = counts.double(), probs.double()
    n = counts.sum()
    assert counts[probs == 0].sum() == 0, "drew a token of probability 0"
    expected = probs * n
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] < min_expected:  # pooled cell still too small: fold it into the smallest kept cell
        i = int(exp[:-1].argmin())
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    exp = exp * (obs.sum() / exp.sum())  # exact totals despite float rounding of probs
    dof = obs.numel() - 1
    if dof == 0:  # a single possible token (top_k=1, say): nothing more to test
        return
    stat = float(((obs - exp) ** 2 / exp).sum())
    if sps is not None:
        p = sps.chisquare(obs.numpy(), exp.numpy()).pvalue
        assert p > 1e-3, f"chi-square p={p:.2e}, stat={stat:.1f}, dof={dof}"
    else:
        assert stat < chi2_critical_999(dof), f"chi-square stat={stat:.1f} >= critical, dof={dof}"


def counts_of(tokens: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=V)


def random_logits(V: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.skipif(sps is None, reason="needs scipy to check the fallback critical values")
def test_fallback_critical_values_are_accurate():
    for dof in (1, 2, 3, 10, 11, 36, 100, 4999):
        assert chi2_critical_999(dof) == pytest.approx(sps.chi2.ppf(0.999, dof), rel=6e-3)


@pytest.mark.parametrize("V,seed", [(2, 0), (37, 1), (37, 2), (49, 3), (5000, 4)])
def test_sample_categorical_fits_softmax(V, seed):
    logits = random_logits(V, seed)
    # rows are independent draws; expand() repeats the row without copying 200k x V floats
    tokens, logps = sample_categorical(
        logits.expand(N_DRAWS, V), generator=torch.Generator().manual_seed(seed)
    )
    assert tokens.shape == (N_DRAWS,) and int(tokens.max()) < V and int(tokens.min()) >= 0
    assert_fits(counts_of(tokens, V), logits.softmax(-1))
    torch.testing.assert_close(logps, logits.log_softmax(-1)[tokens], atol=1e-5, rtol=0)


@pytest.mark.parametrize("V,H,seed", [(37, 8, 5), (1000, 16, 6)])
def test_sample_from_hidden_fits_and_agrees_with_categorical(V, H, seed):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(H, generator=gen)
    w = torch.randn(V, H, generator=gen) * 0.5
    b = torch.randn(V, generator=gen) * 0.5
    logits = w @ h + b
    t_h, lp_h = sample_from_hidden(h.expand(N_DRAWS, H), w, b, generator=torch.Generator().manual_seed(1))
    t_c, _ = sample_categorical(logits.expand(N_DRAWS, V), generator=torch.Generator().manual_seed(2))
    c_h, c_c = counts_of(t_h, V), counts_of(t_c, V)
    assert_fits(c_h, logits.softmax(-1))
    torch.testing.assert_close(lp_h, logits.log_softmax(-1)[t_h], atol=1e-4, rtol=0)
    if sps is not None:  # the two samplers against each other (two-sample test), on well-filled cells
        keep = (c_h + c_c) >= 10
        table = np.stack([c_h[keep].numpy(), c_c[keep].numpy()])
        assert sps.chi2_contingency(table).pvalue > 1e-3
    # no bias: same distribution as the bias folded into the logits, and bias=None works
    t0, _ = sample_from_hidden(h.expand(N_DRAWS, H), w, None, generator=torch.Generator().manual_seed(3))
    assert_fits(counts_of(t0, V), (w @ h).softmax(-1))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_distribution(temperature):
    V = 37
    logits = random_logits(V, 7)
    target = (logits / temperature).softmax(-1)
    gen = torch.Generator().manual_seed(0)
    tokens, logps = sample_categorical(logits.expand(N_DRAWS, V), temperature=temperature, generator=gen)
    assert_fits(counts_of(tokens, V), target)
    torch.testing.assert_close(logps, target.log()[tokens], atol=1e-5, rtol=0)
    w = torch.eye(V)  # hidden = logits, so both samplers see the same tempered distribution
    tokens, logps = sample_from_hidden(
        logits.expand(N_DRAWS, V), w, None, temperature=temperature, generator=gen
    )
    assert_fits(counts_of(tokens, V), target)
    torch.testing.assert_close(logps, target.log()[tokens], atol=1e-5, rtol=0)
    # sharper (T < 1) or flatter (T > 1) than the untempered distribution, as it should be
    p = logits.softmax(-1)
    emp_top = float((tokens == logits.argmax()).double().mean())
    assert (emp_top > p.max()) == (temperature < 1)


def test_temperature_to_zero_is_argmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 37, generator=gen) * 2
    w = torch.eye(37)
    for fn in (
        lambda t: sample_categorical(logits, temperature=t, generator=gen)[0],
        lambda t: sample_from_hidden(logits, w, None, temperature=t, generator=gen)[0],
    ):
        assert torch.equal(fn(0.0), logits.argmax(-1))
        assert torch.equal(fn(1e-4), logits.argmax(-1))
    with pytest.raises(ConfigError):
        sample_categorical(logits, temperature=-1.0)


@pytest.mark.parametrize("k", [1, 5, 36])
def test_top_k_stays_in_top_k(k):
    gen = torch.Generator().manual_seed(k)
    V = 37
    logits = torch.randn(4000, V, generator=gen)
    topk = logits.topk(k, -1).indices
    for tokens, logps in (
        sample_categorical(logits, top_k=k, generator=gen),
        sample_from_hidden(logits, torch.eye(V), None, top_k=k, generator=gen),
    ):
        assert (topk == tokens[:, None]).any(1).all()
        # log-prob under the renormalised top-k distribution
        torch.testing.assert_close(
            logps, filter_logits(logits, top_k=k).log_softmax(-1).gather(1, tokens[:, None])[:, 0]
        )
    # and within the top k the proportions are the softmax's
    row = logits[0]
    tokens, _ = sample_categorical(row.expand(N_DRAWS, V), top_k=k, generator=gen)
    assert_fits(counts_of(tokens, V), filter_logits(row[None], top_k=k)[0].softmax(-1))


def nucleus(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) bool: the smallest top set of tokens whose mass reaches p (reference implementation)."""
    probs = logits.softmax(-1)
    out = torch.zeros_like(logits, dtype=torch.bool)
    for i in range(logits.size(0)):
        order = probs[i].argsort(descending=True)
        mass = 0.0
        for j in order.tolist():
            out[i, j] = True
            mass += float(probs[i, j])
            if mass >= p:
                break
    return out


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_top_p_stays_in_nucleus(p):
    gen = torch.Generator().manual_seed(11)
    V = 37
    logits = torch.randn(300, V, generator=gen) * 2
    inside = nucleus(logits, p)
    for tokens, _ in (
        sample_categorical(logits, top_p=p, generator=gen),
        sample_from_hidden(logits, torch.eye(V), None, top_p=p, generator=gen),
    ):
        assert inside.gather(1, tokens[:, None]).all()
    # explicit case: probs (.5, .3, .15, .05): top_p=.7 keeps 2 tokens, .85 keeps 3
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    for top_p, kept in [(0.7, 2), (0.85, 3)]:
        tokens, logps = sample_categorical(probs.log().expand(N_DRAWS // 4, 4), top_p=top_p, generator=gen)
        target = torch.cat([probs[:kept], torch.zeros(4 - kept)])
        target = target / target.sum()
        assert_fits(counts_of(tokens, 4), target)
        torch.testing.assert_close(logps, target.log()[tokens])
    with pytest.raises(ConfigError):
        sample_categorical(logits, top_p=0.0)


def test_generator_seed_reproducible():
    logits = torch.randn(3000, 5000, generator=torch.Generator().manual_seed(0))
    w = torch.randn(5000, 16, generator=torch.Generator().manual_seed(1))
    h = torch.randn(3000, 16, generator=torch.Generator().manual_seed(2))

    def draws(seed):
        a = sample_categorical(logits, generator=torch.Generator().manual_seed(seed))
        b = sample_from_hidden(h, w, None, generator=torch.Generator().manual_seed(seed))
        c = gumbel_softmax(logits[:10], 0.5, generator=torch.Generator().manual_seed(seed))
        return a[0], a[1], b[0], b[1], c[0], c[1]

    for x, y in zip(draws(3), draws(3)):
        assert torch.equal(x, y)
    assert not torch.equal(draws(3)[0], draws(4)[0])
    assert not torch.equal(draws(3)[2], draws(4)[2])


def test_gumbel_softmax_hard_is_exact_sample():
    V = 37
    logits = random_logits(V, 12)
    soft, hard = gumbel_softmax(logits.expand(50_000, V), tau=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hard, soft.argmax(-1))
    assert_fits(counts_of(hard, V), logits.softmax(-1))
