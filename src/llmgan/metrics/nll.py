"""Held-out NLL of a corpus under a generator (per token, EOS included, padding not)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from llmgan import interrupt
from llmgan.data import EncodedCorpus
from llmgan.models.base import Generator


@torch.no_grad()
def corpus_nll(generator: Generator, corpus: EncodedCorpus, batch_size: int = 256, autocast=None) -> float:
    """Mean per-token NLL of a held-out corpus under the generator (EOS included, padding not)."""
    was_training = generator.training
    generator.eval()
    total, count = 0.0, 0
    ctx = autocast or nullcontext
    for start in range(0, len(corpus), batch_size):
        interrupt.point()
        lengths = corpus.lengths[start : start + batch_size]
        tokens = corpus.tokens[start : start + batch_size, : int(lengths.max())].to(generator.device)
        mask = (torch.arange(tokens.size(1))[None, :] < lengths[:, None]).to(generator.device)
        with ctx():
            lp = generator.log_probs(tokens)
        total += float(-(lp.float() * mask).sum())
        count += int(mask.sum())
    generator.train(was_training)
    return total / max(count, 1)
