"""The density-ratio math on toys where p_data / p_G is known exactly (llmgan.metrics.density_ratio)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmgan.metrics.density_ratio import (
    effective_sample_size,
    fit_platt,
    importance_log_z,
    rejection_accept,
    residual_nll,
    sir_select,
)

# a 6-outcome "generator" p_G and a target p_data; the true log-ratio is known exactly
P_G = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=torch.float64)
P_DATA = torch.tensor([0.05, 0.10, 0.15, 0.20, 0.25, 0.25], dtype=torch.float64)
LOG_R = torch.log(P_DATA) - torch.log(P_G)
CHI2_DF5_999 = 20.52  # the 99.9% quantile of chi-square with 5 degrees of freedom


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    n = counts.sum()
    return float(((counts - n * probs) ** 2 / (n * probs)).sum())


def _sir_counts(log_r: torch.Tensor, n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cand = torch.multinomial(P_G, n * k, replacement=True, generator=g).view(n, k)  # K draws from p_G per output
    idx, ess = sir_select(log_r[cand], generator=g)
    assert ess.shape == (n,) and bool(((ess >= 1 - 1e-9) & (ess <= k + 1e-9)).all())
    kept = cand[torch.arange(n), idx]
    return torch.bincount(kept, minlength=6).double()


def test_sir_with_many_candidates_samples_p_times_r():
    # SIR's law at finite K is biased by O(Var_G(r) / K) (here Var_G(r) ~ 1.5): K = 1024 makes the bias
    # invisible at this sample size, while K = 8 still shows it -- the law tends to p_G r / Z as K grows
    counts = _sir_counts(LOG_R, n=5000, k=1024, seed=0)
    assert _chi2(counts, P_DATA) < CHI2_DF5_999
    assert _chi2(_sir_counts(LOG_R, n=5000, k=8, seed=0), P_DATA) > CHI2_DF5_999
    # the test has power: the ratio read backwards (a wgan critic's fakeness as realness) is rejected
    assert _chi2(_sir_counts(-LOG_R, n=5000, k=1024, seed=0), P_DATA) > 100 * CHI2_DF5_999
    # and K = 1 is plain sampling from G, far from p_data
    assert _chi2(_sir_counts(LOG_R, n=20000, k=1, seed=0), P_DATA) > 100 * CHI2_DF5_999


def test_effective_sample_size():
    assert float(effective_sample_size(torch.zeros(1, 8))[0]) == pytest.approx(8.0)  # equal weights: K
    assert float(effective_sample_size(torch.tensor([[0.0, -1e4, -1e4]]))[0]) == pytest.approx(1.0)  # one weight
    # huge logs do not overflow: w = (1, 3) -> 16/10
    lw = torch.tensor([[1000.0, 1000.0 + math.log(3.0)]], dtype=torch.float64)
    assert float(effective_sample_size(lw)[0]) == pytest.approx(1.6)


def test_rejection_sampling_is_exact_when_the_bound_holds():
    g = torch.Generator().manual_seed(1)
    n = 60000
    cand = torch.multinomial(P_G, n, replacement=True, generator=g)
    log_m = float(LOG_R.max())  # the tightest valid bound
    acc = rejection_accept(LOG_R[cand], log_m, generator=g)
    kept = cand[acc]
    assert _chi2(torch.bincount(kept, minlength=6).double(), P_DATA) < CHI2_DF5_999
    # acceptance rate Z / M, with Z = E_G[r] = 1 for a true ratio
    rate, expected = float(acc.double().mean()), 1.0 / math.exp(log_m)
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    # a looser bound stays exact and accepts proportionally less
    acc2 = rejection_accept(LOG_R[cand], log_m + math.log(2.0), generator=g)
    assert float(acc2.double().mean()) == pytest.approx(expected / 2, abs=0.01)
    assert _chi2(torch.bincount(cand[acc2], minlength=6).double(), P_DATA) < CHI2_DF5_999
    # a bound that does not hold (clipped at acceptance 1) is not exact: the test can tell
    acc3 = rejection_accept(LOG_R[cand], float(LOG_R.max()) - 1.5, generator=g)
    assert _chi2(torch.bincount(cand[acc3], minlength=6).double(), P_DATA) > 10 * CHI2_DF5_999
    # reading the ratio backwards samples the wrong law
    acc4 = rejection_accept(-LOG_R[cand], float((-LOG_R).max()), generator=g)
    assert _chi2(torch.bincount(cand[acc4], minlength=6).double(), P_DATA) > 100 * CHI2_DF5_999


def test_platt_scaling_turns_a_sharp_score_into_the_ratio():
    g = torch.Generator().manual_seed(2)
    real = torch.multinomial(P_DATA, 3000, replacement=True, generator=g)
    fake = torch.multinomial(P_G, 5000, replacement=True, generator=g)  # unequal counts: balanced fit anyway
    score = 3.0 * LOG_R + 1.0  # a D that ranks correctly but is 3x too sharp and shifted
    cal = fit_platt(score[real].numpy(), score[fake].numpy())
    assert cal.a == pytest.approx(1 / 3, abs=0.05) and cal.b == pytest.approx(-1 / 3, abs=0.15)
    assert cal.nll < cal.nll_raw
    fitted = cal.log_ratio(score)
    assert float(torch.corrcoef(torch.stack([fitted, LOG_R]))[0, 1]) > 0.999
    assert float((P_G * fitted.exp()).sum()) == pytest.approx(1.0, abs=0.1)  # E_G[r] ~ 1: a ratio
    temp = fit_platt(score[real].numpy(), score[fake].numpy(), method="temperature")
    assert temp.b == 0.0 and temp.a == pytest.approx(1 / 3, abs=0.1)
    none = fit_platt(score[real].numpy(), score[fake].numpy(), method="none")
    assert (none.a, none.b) == (1.0, 0.0)
    # separable scores stay finite (the L2 penalty), still ranking the right way
    sep = fit_platt(np.array([5.0, 6.0]), np.array([-5.0, -6.0]))
    assert math.isfinite(sep.a) and sep.a > 0
    with pytest.raises(ValueError, match="calibration 'bogus'"):
        fit_platt(score[real].numpy(), score[fake].numpy(), method="bogus")


def test_importance_sampled_nll_matches_the_exact_value_on_an_enumerable_space():
    # residual EBM p(x) = p_G(x) exp(-E(x)) / Z on 6 outcomes: everything is exact by enumeration
    energy = torch.tensor([0.7, -0.3, 0.2, -1.0, 0.5, -0.4], dtype=torch.float64)
    log_z_exact = float(torch.logsumexp(torch.log(P_G) - energy, 0))
    p_model = P_G * torch.exp(-energy) / math.exp(log_z_exact)
    g = torch.Generator().manual_seed(3)
    test = torch.multinomial(P_DATA, 4000, replacement=True, generator=g)
    exact_nll = float(-(P_DATA * torch.log(p_model)).sum())  # the population value the sample estimates
    inside, trials, log_zs, ses = 0, 40, [], []
    for t in range(trials):
        prop = torch.multinomial(P_G, 2000, replacement=True, generator=g)
        log_z, se = importance_log_z(-energy[prop])
        log_zs.append(log_z)
        ses.append(se)
        if t == 0:
            assert abs(log_z - log_z_exact) < 4 * se
        res = residual_nll(-torch.log(P_G[test]), energy[test], -energy[prop], n_tokens=torch.full((4000,), 2.0))
        inside += abs(res["nll"] - exact_nll) < 2 * res["nll_se"]
        assert res["nll_per_token"] == pytest.approx(res["nll"] / 2.0)
    # the log Z standard error matches the estimator's actual spread over independent proposal sets
    assert 0.7 < float(np.std(log_zs, ddof=1)) / float(np.mean(ses)) < 1.4
    assert abs(float(np.mean(log_zs)) - log_z_exact) < 3 * float(np.mean(ses)) / math.sqrt(trials) + 1e-3
    # a standard error that means what it says: ~95% of 2-SE intervals cover (test set held fixed: a bit less)
    assert inside >= 0.75 * trials
    # the sign of E matters: exp(+E) in place of exp(-E) gives another (wrong) value
    wrong = residual_nll(-torch.log(P_G[test]), -energy[test], energy[prop])
    assert abs(wrong["nll"] - exact_nll) > 5 * wrong["nll_se"]
