"""Detectability: how well a classifier tells real text from generated text (AUROC).

:func:`auroc` is the exact rank statistic (Mann–Whitney U / (n_pos * n_neg), ties count 1/2), so
it needs no threshold and no sklearn. :func:`detector_auroc_for_run` applies it to a run's own
discriminator: held-out real sequences are the positives, fresh samples of the generator the
negatives. 0.5 means D cannot tell them apart (the GAN's goal); 1.0 means D separates them
perfectly. A trained D scoring its own final G is optimistic for G only if D has fallen behind,
so read it together with the sample-based metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from llmgan.errors import LLMGanError

__all__ = ["auroc", "detector_auroc_for_run", "discriminator_scores"]


def _as_scores(name: str, values: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise LLMGanError(f"auroc: {name} is empty; expected at least one score")
    if not np.isfinite(arr).all():
        raise LLMGanError(f"auroc: {name} holds NaN or infinite scores")
    return arr


def auroc(scores_pos: Sequence[float] | np.ndarray | torch.Tensor,
          scores_neg: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve for "positives score higher than negatives".

    Equals P(s_pos > s_neg) + 0.5 * P(s_pos == s_neg) over all pairs: the Mann–Whitney U statistic
    divided by n_pos * n_neg, the same value as ``sklearn.metrics.roc_auc_score`` with labels 1/0.

    The pair count is computed with two binary searches per positive in the sorted negatives and
    kept as an integer (2U), so the result is exact (one final division) in O((P + N) log N).
    """
    pos = _as_scores("scores_pos", scores_pos)
    neg = np.sort(_as_scores("scores_neg", scores_neg))
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    below_or_tied = np.searchsorted(neg, pos, side="right")
    twice_u = int(below.sum()) + int(below_or_tied.sum())  # 2 * (below + 0.5 * tied)
    return twice_u / (2 * pos.size * neg.size)


def _pad_to(tokens: torch.Tensor, length: int, pad: int) -> torch.Tensor:
    """Right-pad (or cut) (N, T) ids to (N, length): D was trained on sequences of exactly max_len."""
    if tokens.size(1) >= length:
        return tokens[:, :length]
    return torch.nn.functional.pad(tokens, (0, length - tokens.size(1)), value=pad)


@torch.no_grad()
def discriminator_scores(discriminator: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """D's logits (N,) for id sequences (N, T), in batches, in eval mode (no dropout)."""
    was_training = discriminator.training
    discriminator.eval()
    device = next(discriminator.parameters()).device
    out = [discriminator(tokens[i : i + batch_size].to(device)).float().cpu()
           for i in range(0, len(tokens), batch_size)]
    discriminator.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def detector_auroc_for_run(run, test_corpus, samples: torch.Tensor, lengths: torch.Tensor | None = None,
                           batch_size: int = 256) -> float:
    """AUROC of the run's own discriminator: held-out real sequences (positive) vs samples (negative).

    Args:
        run: a :class:`llmgan.run.LoadedRun` of an adversarial run with a discriminator.
        test_corpus: held-out real data (:class:`llmgan.data.EncodedCorpus`).
        samples: generated ids (N, T) as drawn by ``sample_tokens`` (padded after EOS).
        lengths: the samples' lengths; unused (samples are already padded after EOS, exactly what D
            saw in training) but accepted so every metric takes the same arguments.

    Raises:
        LLMGanError: the run has no discriminator (an MLE-only run, or an algorithm without D).
    """
    del lengths  # samples carry pad after EOS already; D scores the padded sequences, as in training
    try:
        D = run.discriminator()
    except LLMGanError as e:
        raise LLMGanError(f"detector_auroc: {e}") from None
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    max_len = run.max_len
    # Real sequences are padded to max_len exactly like GANContext.real_batch does for D's training.
    real = _pad_to(test_corpus.tokens, max_len, pad)
    fake = _pad_to(samples.cpu(), max_len, pad)
    return auroc(discriminator_scores(D, real, batch_size), discriminator_scores(D, fake, batch_size))
