"""Standard errors for the sampled metrics: two sample sets of one checkpoint differ by about this much.

Every metric computed from a finite set of samples is itself a random variable. The report and
``llmgan evaluate`` print each with one standard error, computed the cheapest honest way for its kind:

* a mean over samples (oracle NLL, BLEU-n and Self-BLEU-n, which are averages of sentence scores):
  ``std / sqrt(n)`` (:func:`mean_and_se`). For Self-BLEU the sentence scores share their references,
  so they are not independent and this is an approximation;
* AUROC: Hanley & McNeil (1982), from the AUC and the two class sizes (:func:`auroc_se`);
* corpus-level statistics with no per-sample decomposition (distinct-n, FED): a bootstrap over the
  samples with a fixed seed (:func:`bootstrap_se`). Resampling with replacement repeats sentences,
  which lowers distinct-n itself; the spread of the resampled values is what is used, not their level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from llmgan.errors import LLMGanError

__all__ = ["auroc_se", "bootstrap_se", "distinct_se", "mean_and_se"]


def mean_and_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(mean, standard error of the mean); SE is 0.0 for fewer than two values."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise LLMGanError("mean_and_se: no values")
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC from ``n_pos`` positives and ``n_neg`` negatives."""
    if n_pos < 1 or n_neg < 1:
        raise LLMGanError(f"auroc_se: need at least one positive and one negative, got {n_pos} and {n_neg}")
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def bootstrap_se(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 100, seed: int = 0) -> float:
    """Standard deviation of ``statistic(indices)`` over ``resamples`` draws of ``n`` indices with
    replacement (a fixed ``seed``: the same samples give the same SE)."""
    if n < 2 or resamples < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    vals = [statistic(rng.integers(0, n, size=n)) for _ in range(resamples)]
    return float(np.std(vals, ddof=1))


def distinct_se(texts: Sequence[Sequence[str]], ns: Sequence[int] = (1, 2, 3, 4), resamples: int = 100,
                seed: int = 0) -> dict[str, float]:
    """Bootstrap standard errors of :func:`llmgan.metrics.distinct` (keys ``distinct_N_se``)."""
    out = {}
    for n in ns:
        # each n-gram as an integer id, sentences as slices of one flat array: a resample is then a
        # mask and a bincount, not a Python set per draw
        ids: dict[tuple, int] = {}
        flat: list[int] = []
        counts = np.zeros(len(texts), dtype=np.int64)
        for i, t in enumerate(texts):
            t = list(t)
            grams = list(zip(*(t[j:] for j in range(n))))
            counts[i] = len(grams)
            flat.extend(ids.setdefault(g, len(ids)) for g in grams)
        flat_arr = np.asarray(flat, dtype=np.int64)
        n_ids = len(ids)

        def stat(idx: np.ndarray, flat_arr=flat_arr, counts=counts, n_ids=n_ids) -> float:
            total = int(counts[idx].sum())
            if total == 0:
                return 0.0
            chosen = np.zeros(len(counts), dtype=bool)
            chosen[idx] = True  # a repeated sentence adds to the total, never a new n-gram
            seen = np.zeros(n_ids, dtype=bool)
            seen[flat_arr[np.repeat(chosen, counts)]] = True
            return int(seen.sum()) / total

        out[f"distinct_{n}_se"] = bootstrap_se(stat, len(texts), resamples, seed)
    return out
