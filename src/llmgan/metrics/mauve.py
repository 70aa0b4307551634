"""MAUVE (Pillutla et al., 2021) on precomputed embeddings — an optional metric.

The reference implementation, ``mauve-text``, is GPLv3, so llmgan never installs it by default and
never imports it at module import time: :func:`mauve_score` imports it on call and explains how to
install it when it is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmgan.errors import LLMGanError

__all__ = ["mauve_available", "mauve_score"]


def mauve_available() -> bool:
    """Whether the optional ``mauve-text`` package is importable."""
    try:
        import mauve  # noqa: F401
    except ImportError:
        return False
    return True


def mauve_score(gen_emb: np.ndarray, ref_emb: np.ndarray, **kwargs: Any) -> float:
    """MAUVE between generated and reference embeddings, both arrays of shape (N, D).

    Follows the HuggingFace ``evaluate`` wrapper's convention: the generated features are ``p`` and
    the references ``q``. Extra keyword arguments (``num_buckets``, ``seed``, ``device_id``,
    ``verbose`` ...) are passed to ``mauve.compute_mauve``.
    """
    try:
        import mauve
    except ImportError as e:
        raise LLMGanError(
            "mauve_score: the optional package 'mauve-text' (GPLv3) is not installed; "
            "run `pip install mauve-text` to use it"
        ) from e
    p = np.asarray(gen_emb, dtype=np.float32)
    q = np.asarray(ref_emb, dtype=np.float32)
    for name, a in (("gen_emb", p), ("ref_emb", q)):
        if a.ndim != 2 or a.shape[0] < 2:
            raise LLMGanError(f"mauve_score: {name} must be an (N, D) array with N >= 2, got shape {a.shape}")
    if p.shape[1] != q.shape[1]:
        raise LLMGanError(f"mauve_score: embedding sizes differ ({p.shape[1]} vs {q.shape[1]})")
    kwargs.setdefault("verbose", False)
    out = mauve.compute_mauve(p_features=p, q_features=q, **kwargs)
    return float(out.mauve)
