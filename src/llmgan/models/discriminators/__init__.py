"""Text-GAN discriminators and a name registry.

All discriminators follow :class:`~llmgan.models.discriminators.base.Discriminator`: logits (B,) with
"real" > 0, per-prefix logits (B, T) with ``per_step=True``, penultimate ``features`` (B, F), token-id
or soft one-hot inputs, optional ``pad_id`` masking and ``prompt`` conditioning.
"""

from __future__ import annotations

from typing import Any

from llmgan.errors import ConfigError

from .base import Discriminator, Highway
from .cnn import SEQGAN_FILTER_SIZES, SEQGAN_NUM_FILTERS, CNNDiscriminator
from .relgan_cnn import RelGANDiscriminator
from .transformer import TransformerDiscriminator

DISCRIMINATORS: dict[str, type[Discriminator]] = {
    "cnn": CNNDiscriminator,
    "seqgan_cnn": CNNDiscriminator,
    "relgan_cnn": RelGANDiscriminator,
    "relgan": RelGANDiscriminator,
    "transformer": TransformerDiscriminator,
}


def build_discriminator(name: str, vocab_size: int, **kwargs: Any) -> Discriminator:
    """Build a discriminator by registry name (see ``DISCRIMINATORS``) with constructor kwargs.

    Raises ConfigError for an unknown name or an unknown keyword.
    """
    cls = DISCRIMINATORS.get(name)
    if cls is None:
        valid = ", ".join(sorted(DISCRIMINATORS))
        raise ConfigError(f"discriminator name {name!r} is unknown; valid: {valid}")
    try:
        return cls(vocab_size, **kwargs)
    except TypeError as e:  # unknown/duplicate keyword: report it as a config problem
        raise ConfigError(f"discriminator {name!r}: bad option ({e})") from None


__all__ = [
    "DISCRIMINATORS",
    "SEQGAN_FILTER_SIZES",
    "SEQGAN_NUM_FILTERS",
    "CNNDiscriminator",
    "Discriminator",
    "Highway",
    "RelGANDiscriminator",
    "TransformerDiscriminator",
    "build_discriminator",
]
