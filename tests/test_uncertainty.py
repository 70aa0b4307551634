"""Standard errors of the sampled metrics agree with the spread of the metric over independent
sample sets (what "two sample sets of one checkpoint differ by about this much" promises)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmgan import metrics as M
from llmgan.metrics.detection import auroc
from llmgan.run import load_run
from llmgan.training.evaluation import evaluate_run
from test_bleu_definition import run_dir  # noqa: F401 - the module fixture (a tiny word-level MLE run)


def _sentences(rng: np.random.Generator, n: int) -> list[list[str]]:
    # a Zipf-like language of 200 words, 3-8 words per sentence
    p = 1.0 / np.arange(1, 201)
    p /= p.sum()
    return [[f"w{i}" for i in rng.choice(200, size=rng.integers(3, 9), p=p)] for _ in range(n)]


def _ratio(se: float, spread: float) -> float:
    return se / spread


def test_mean_and_se_is_the_standard_error_of_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    mean, se = M.mean_and_se(x)
    assert mean == pytest.approx(x.mean()) and se == pytest.approx(x.std(ddof=1) / 20.0)
    means = [rng.normal(3.0, 2.0, size=400).mean() for _ in range(300)]
    assert 0.8 < _ratio(se, float(np.std(means))) < 1.25
    assert M.mean_and_se([5.0]) == (5.0, 0.0)


def test_auroc_se_matches_the_spread_over_repeated_draws():
    rng = np.random.default_rng(1)
    n_pos, n_neg = 150, 250
    aucs = [auroc(rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)) for _ in range(400)]
    se = M.auroc_se(float(np.mean(aucs)), n_pos, n_neg)
    assert 0.8 < _ratio(se, float(np.std(aucs))) < 1.25
    assert M.auroc_se(0.5, 1000, 1000) < M.auroc_se(0.5, 100, 100)  # more samples, smaller error


def test_distinct_se_matches_the_spread_over_independent_sample_sets():
    rng = np.random.default_rng(2)
    values = [M.distinct_n(_sentences(rng, 300), 2) for _ in range(60)]
    one = _sentences(rng, 300)
    se = M.distinct_se(one, ns=(2,), resamples=100)["distinct_2_se"]
    assert 0.6 < _ratio(se, float(np.std(values))) < 1.6, (se, np.std(values))


class _StubEmbedder:
    """Texts "v:<floats>" -> their vectors: FED without the sentence model."""

    def encode(self, texts, batch_size=64):
        return np.array([[float(x) for x in t[2:].split(",")] for t in texts])


def test_fed_se_matches_the_spread_over_independent_sample_sets():
    rng = np.random.default_rng(3)

    def texts(shift: float) -> list[str]:
        return ["v:" + ",".join(f"{x:.6f}" for x in row) for row in rng.normal(shift, 1.0, size=(200, 4))]

    ref = texts(0.0)
    values = [M.fed(texts(0.5), ref, embedder=_StubEmbedder()) for _ in range(60)]
    value, se = M.fed_and_se(texts(0.5), texts(0.0), embedder=_StubEmbedder(), resamples=100)
    # the bootstrap resamples both sets, the reference spread holds ref fixed: SE may be larger, not smaller
    assert 0.7 < _ratio(se, float(np.std(values))) < 2.2, (se, np.std(values))
    assert M.fed_and_se(texts(0.5), ref, embedder=_StubEmbedder(), resamples=0)[1] == 0.0


def test_evaluate_reports_a_standard_error_beside_every_sampled_text_metric(run_dir):  # noqa: F811
    run = load_run(run_dir)
    ev = evaluate_run(run, metrics=["bleu", "self_bleu", "distinct"], n_samples=64,
                      rng=torch.Generator().manual_seed(0))
    for k in ("bleu_2", "bleu_5", "self_bleu_2", "self_bleu_4", "distinct_1", "distinct_4"):
        assert k + "_se" in ev and math.isfinite(ev[k + "_se"]) and ev[k + "_se"] > 0, k
