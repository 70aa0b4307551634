"""The discriminator interface shared by every text-GAN discriminator.

Conventions (all discriminators):

* ``x`` is either token ids, a ``LongTensor`` of shape ``(B, T)``, or a soft one-hot
  ``FloatTensor`` of shape ``(B, T, V)`` (e.g. Gumbel-softmax outputs of a generator). Soft inputs are
  embedded as ``x @ embedding.weight`` so gradients flow back into the generator.
* ``forward(x)`` returns logits of shape ``(B,)``; **logit > 0 means "real"**. The loss functions in
  :mod:`llmgan.losses` take care of the WGAN sign conventions.
* ``forward(x, per_step=True)`` returns ``(B, T)``: column ``t`` is the score of the prefix
  ``x[:, :t+1]`` (computed in one pass; used for per-step rewards).
* ``features(x)`` returns the penultimate features ``(B, F)`` (feature matching / TextGAN, LeakGAN).
* ``pad_id`` (optional): positions whose token is ``pad_id`` are ignored by pooling, so appending pads
  to a sequence does not change its score (in eval mode). For soft inputs a position counts as padding
  when its argmax is ``pad_id``.
* ``prompt`` (optional, ``(B, P)`` left-padded ids): conditioning input. It is handled the simplest
  correct way: the prompt tokens are prepended to ``x`` and the whole ``(B, P+T)`` sequence is
  classified; per-step scores are returned for the ``T`` positions of ``x`` only (each prefix includes
  the whole prompt). Left padding of the prompt uses ``pad_id`` and is masked like any other padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmgan.errors import ConfigError


def check_positive(name: str, value: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a positive int (``name`` is the config field)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_dropout(value: float) -> None:
    """Raise :class:`ConfigError` unless ``0 <= value < 1``."""
    if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {value!r}")


class Highway(nn.Module):
    """One highway layer: ``y = t * relu(H x) + (1 - t) * x`` with gate ``t = sigmoid(T x + b)``.

    As in SeqGAN/RelGAN (gate bias initialised to 0). H and T are fused into one ``Linear(F, 2F)`` so
    that a single GEMM computes both. Works on any leading shape ``(..., F)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., F) -> (..., F)."""
        h, g = self.proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled() and (x.requires_grad or self.proj.weight.requires_grad):
            t = torch.sigmoid(g)
            return t * F.relu(h) + (1.0 - t) * x
        # Inference (rollout scoring runs this on ~20k rows): the same value, x + t * (relu(h) - x),
        # computed in place on the projection's buffer, which saves ~4 passes over (N, 2F) memory.
        t = g.sigmoid_()
        return h.relu_().sub_(x).mul_(t).add_(x)


def masked_max_pool(h: Tensor, valid: Tensor | None, per_step: bool) -> Tensor:
    """ReLU + max-over-time pooling of *pre-activation* conv outputs, ignoring padded positions.

    h: (N, C, L) (Conv1d layout, pre-ReLU); valid: (N, L) bool (True = real token) or None.
    Returns relu(max over time): (N, C), or (N, C, L) with ``per_step`` (column ``t`` = max over
    positions ``0..t``, via ``torch.cummax``).

    Why this order: relu and max commute, so pooling first and applying ReLU to the pooled result
    avoids two passes over the big (N, C, L) tensor; ``max(dim).values`` backpropagates through its
    indices (a scatter) instead of ``amax``'s compare-and-divide over the whole tensor. Padded
    positions are filled with -inf, so an all-padding prefix pools to relu(-inf) = 0.
    """
    if valid is not None:
        h = h.masked_fill(~valid.unsqueeze(1), float("-inf"))
    pooled = torch.cummax(h, dim=-1).values if per_step else h.max(dim=-1).values
    return F.relu(pooled)


class Discriminator(nn.Module):
    """Base class: token/soft-one-hot embedding, prompt prepending and padding masks.

    Subclasses implement :meth:`forward` and :meth:`features`.
    """

    def __init__(self, vocab_size: int, emb_dim: int, pad_id: int | None = None) -> None:
        super().__init__()
        check_positive("vocab_size", vocab_size)
        check_positive("emb_dim", emb_dim)
        if pad_id is not None and (isinstance(pad_id, bool) or not isinstance(pad_id, int)
                                   or not 0 <= pad_id < vocab_size):
            raise ConfigError(f"pad_id must be an int in [0, vocab_size={vocab_size}), got {pad_id!r}")
        self.vocab_size = vocab_size
        self.emb_dim = emb_dim
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, emb_dim)

    # ------------------------------------------------------------------ inputs
    def _check_input(self, x: Tensor) -> None:
        if x.dim() == 2 and not x.is_floating_point():
            pass
        elif x.dim() == 3 and x.is_floating_point():
            if x.size(-1) != self.vocab_size:
                raise ValueError(f"soft input last dim {x.size(-1)} != vocab_size={self.vocab_size}")
        else:
            raise ValueError(f"x must be ids (B, T) or soft (B, T, V), got {tuple(x.shape)} {x.dtype}")
        if x.size(1) == 0:
            raise ValueError("x must have at least one position (T >= 1)")

    def embed(self, x: Tensor) -> Tensor:
        """Embed ids (B, T) -> (B, T, E) by lookup, or soft one-hots (B, T, V) -> (B, T, E) by ``x @ W``.

        The soft path is a matmul so that gradients reach ``x``; for an exact one-hot it equals the
        lookup.
        """
        self._check_input(x)
        if x.is_floating_point():
            return x @ self.embedding.weight.to(x.dtype)
        return self.embedding(x)

    def pad_mask(self, x: Tensor) -> Tensor | None:
        """(B, T) bool, True at padding positions (argmax for soft inputs); None when pad_id is None."""
        if self.pad_id is None:
            return None
        ids = x.argmax(dim=-1) if x.is_floating_point() else x
        return ids == self.pad_id

    def embed_inputs(self, x: Tensor, prompt: Tensor | None = None) -> tuple[Tensor, Tensor | None, int]:
        """Embed ``prompt ++ x``.

        Returns ``(emb, valid, P)``: emb (B, P+T, E); valid (B, P+T) bool (True = real token) or None
        when no padding can occur; P = prompt length (0 without prompt).
        """
        emb = self.embed(x)
        pad = self.pad_mask(x)
        p_len = 0
        if prompt is not None:
            if prompt.dim() != 2 or prompt.is_floating_point() or prompt.size(0) != x.size(0):
                raise ValueError(f"prompt must be ids (B={x.size(0)}, P), got {tuple(prompt.shape)}")
            p_len = prompt.size(1)
            emb = torch.cat([self.embedding(prompt).to(emb.dtype), emb], dim=1)
            if pad is not None:
                pad = torch.cat([prompt == self.pad_id, pad], dim=1)
        valid = None if pad is None else ~pad
        return emb, valid, p_len

    # ------------------------------------------------------------------ API
    def forward(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        """Logits (B,) ("real" > 0), or (B, T) per-prefix logits with ``per_step=True``."""
        raise NotImplementedError

    def features(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        """Penultimate features (B, F)."""
        raise NotImplementedError
