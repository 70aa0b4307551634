"""Distinct-n: the share of unique n-grams among all n-grams of a generated set (Li et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence

from llmgan.errors import LLMGanError

__all__ = ["distinct", "distinct_n"]


def distinct_n(texts: Sequence[Sequence[str]], n: int) -> float:
    """Unique n-grams / total n-grams over the whole set of tokenized texts.

    Sentences shorter than ``n`` contribute no n-grams. Returns 0.0 when the set has no n-gram at
    all (rather than dividing by zero), so an empty or very short generation scores as "no diversity".
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LLMGanError(f"distinct_n: n must be an integer >= 1, got {n!r}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for i, t in enumerate(texts):
        if isinstance(t, str):
            raise LLMGanError(f"texts[{i}]: expected a list of tokens, got a string (tokenize it first)")
        t = list(t)
        k = len(t) - n + 1
        if k <= 0:
            continue
        total += k
        # zip of shifted slices builds the n-gram tuples without a Python loop per position.
        seen.update(zip(*(t[j:] for j in range(n))))
    return len(seen) / total if total else 0.0


def distinct(texts: Sequence[Sequence[str]], ns: Sequence[int] = (1, 2, 3, 4)) -> dict[str, float]:
    """``{"distinct_1": ..., "distinct_2": ...}`` for each order in ``ns``."""
    return {f"distinct_{n}": distinct_n(texts, n) for n in ns}
