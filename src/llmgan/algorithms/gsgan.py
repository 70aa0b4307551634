"""GSGAN (Kusner & Hernández-Lobato 2016): a GAN on Gumbel-softmax sequences from an LSTM generator.

G update: a relaxed batch ``softmax((logits + g) / tau)`` (B, T, V) is fed back into the LSTM as the
next input (``feed="soft"``, as in the paper's model, so the whole sequence is differentiable), scored
by the discriminator, and G minimises the standard GAN generator loss (``adversarial.loss``;
non-saturating in the preset). When the generator has a latent code (``latent_dim > 0``) z ~ N(0, I)
sets its initial state, as the paper's noise input does.
D update: one minibatch of fresh (detached) relaxed samples against real one-hots, ``d_loss(kind)``.
The temperature is fixed (``temperature_schedule: no``) or annealed towards sharper samples (the
paper anneals it during training) with the RelGAN schedules; ``max_temperature`` is the final
*inverse* temperature 1 / tau.

Differences: the paper's discriminator is an LSTM; here it is any registered discriminator on soft
one-hots (the SeqGAN CNN in the preset).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmgan.algorithms.base import register
from llmgan.algorithms.relgan import GumbelAlgorithm, GumbelParams


@dataclass
class GSGANParams(GumbelParams):
    max_temperature: float = 100.0  # final inverse temperature 1/tau (RelGAN's; the paper gives no oracle value)
    temperature_schedule: str = "exp"  # anneal beta from start_temperature to max_temperature over the rounds
    feed: str = "soft"  # the paper feeds the Gumbel-softmax vector back into the LSTM
    d_grad_clip: float | None = None  # no D clipping in the paper
    per_representation: bool = False  # plain (B,) logits


@register("gsgan")
class GSGAN(GumbelAlgorithm):
    """The shared Gumbel-softmax G/D steps with GSGAN's defaults (soft feedback, standard GAN loss)."""

    Params = GSGANParams
