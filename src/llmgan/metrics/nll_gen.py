"""NLL_gen as a *reverse* language-model score: fit a fresh LM on G's samples, score real test data.

A generator that drops modes produces samples from which no model can learn the missing parts of
the real distribution, so a fresh LM trained on those samples assigns the real test set a high NLL.
This is the "reverse perplexity" of ARAE (Zhao et al., 2018) / the "reverse LM score" of Cífka et
al. (2018); llmgan reports it as ``nll_gen`` (lower is better). Note that RelGAN (Nie et al., 2019)
uses the name NLL_gen for the test NLL of G itself, which llmgan reports as ``test_nll``.

The fresh model is built by the run's own factory (same architecture and vocabulary unless another
``generator_cfg`` is given) and trained by plain teacher-forced MLE (Adam, gradient clipping) with a
fixed budget, so scores of different runs are comparable when they use the same budget. Everything
is seeded: initialisation, data order.
"""

from __future__ import annotations

import math

import torch

from llmgan.errors import LLMGanError

__all__ = ["fit_mle", "nll_gen"]


def fit_mle(generator, tokens: torch.Tensor, lengths: torch.Tensor, *, epochs: int = 1, max_steps: int | None = None,
            batch_size: int = 64, lr: float = 1e-2, grad_clip: float | None = 5.0, seed: int = 0) -> int:
    """Train ``generator`` in place by MLE on ids (N, T) with per-row lengths; returns the steps taken.

    Positions at or after a row's length are padding and carry no loss. Data order is a function
    of ``seed`` and the epoch only.
    """
    n = tokens.size(0)
    if n == 0:
        raise LLMGanError("nll_gen: no samples to train on")
    device = generator.device
    opt = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=lr)
    was_training = generator.training
    generator.train()
    steps = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for start in range(0, n, batch_size):
            if max_steps is not None and steps >= max_steps:
                break
            idx = order[start : start + batch_size]
            lens = lengths[idx].clamp(min=1)
            batch = tokens[idx, : int(lens.max())].to(device)
            mask = (torch.arange(batch.size(1))[None, :] < lens[:, None]).to(device)
            loss = generator.weighted_nll(batch, mask.float() / mask.sum())
            if not math.isfinite(float(loss.detach())):
                raise LLMGanError(f"nll_gen: the MLE loss became {float(loss.detach())} at step {steps}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(generator.parameters(), grad_clip)
            opt.step()
            steps += 1
        if max_steps is not None and steps >= max_steps:
            break
    generator.train(was_training)
    return steps


def nll_gen(run, samples: torch.Tensor, lengths: torch.Tensor, test, *, generator_cfg=None,
            epochs: int | None = None, max_steps: int | None = None, batch_size: int | None = None,
            lr: float | None = None, grad_clip: float | None = 5.0, seed: int = 0) -> float:
    """Per-token NLL of the real ``test`` corpus under a fresh LM trained on the generator's samples.

    Args:
        run: a :class:`llmgan.run.LoadedRun` (gives tokenizer, config, device).
        samples: generated ids (N, T), padded after EOS; lengths (N,): tokens per row (EOS included).
        test: held-out real data (:class:`llmgan.data.EncodedCorpus`).
        generator_cfg: the fresh model's :class:`llmgan.config.ModelConfig` (default: the run's generator).
        epochs / max_steps / batch_size / lr: MLE budget; default the run's own MLE settings
            (``train.epochs``, ``train.max_steps``, ``train.batch_size``, ``train.lr``), i.e. the
            fresh model gets the same training the run's generator got on real data.
        grad_clip: global gradient-norm clip (None: off).
        seed: initialisation and data order.
    """
    from llmgan.metrics.nll import corpus_nll
    from llmgan.models.factory import make_generator

    t = run.cfg.train
    cfg = generator_cfg if generator_cfg is not None else run.cfg.generator
    # fork_rng: initialising the fresh model must not move the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = make_generator(cfg, run.tokenizer).to(run.generator.device)
    fit_mle(
        fresh,
        samples.cpu(),
        lengths.cpu(),
        epochs=t.epochs if epochs is None else epochs,
        max_steps=t.max_steps if max_steps is None and epochs is None else max_steps,
        batch_size=batch_size or t.batch_size,
        lr=lr or t.lr,
        grad_clip=grad_clip,
        seed=seed,
    )
    return corpus_nll(fresh, test)
