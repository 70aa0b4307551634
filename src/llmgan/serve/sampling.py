"""Token-by-token sampling for the server: the same draws as ``Generator.sample`` (same random numbers
in the same order, so a seeded request gives the same text streamed or not), but yielding after every
step so that a stream can send each token as it comes and a deadline or a gone client stops the work
between two tokens instead of after ``max_tokens`` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from llmgan.models.base import Generator


class Stopped(Exception):
    """The request's deadline passed or its client went away; ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@torch.no_grad()
def sample_steps(
    g: Generator,
    n: int,
    max_len: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prompt: Tensor | None = None,
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (tokens (n,), log-probs (n,)) per step; ended rows get the pad id and log-prob 0 as in
    ``Generator.sample``. ``check()`` runs before each step and raises :class:`Stopped` to end early."""
    if z is None and bool(getattr(g, "latent_in_use", False)):
        z = torch.randn(n, g.latent.in_features, generator=generator, device=g.device)
    state = g.init_state(n, prompt=prompt, z=z)
    token = g._bos(n).squeeze(1)
    pad = g.pad_id if g.pad_id is not None else 0
    alive = torch.ones(n, dtype=torch.bool, device=g.device)
    for _ in range(max_len):
        if check is not None:
            check()
        token, lp, state = g._sample_next(token, state, temperature, top_k, top_p, generator, None)
        if g.eos_id is not None:
            token = torch.where(alive, token, torch.full_like(token, pad))
            lp = lp * alive
        yield token, lp
        if g.eos_id is not None:
            alive &= token != g.eos_id
            if not bool(alive.any()):
                break
