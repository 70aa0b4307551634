"""TextGAN (Zhang et al., ICML 2017): adversarial feature matching with a kernel MMD.

G update: draw z ~ N(0, I) and a relaxed batch from G(z); G minimises the squared MMD between the
discriminator's features of real sentences and of the soft fakes, ``MMD^2(D.features(real),
D.features(soft))``, with a sum of Gaussian kernels over several bandwidths; the gradient flows through
D (frozen) and the relaxation into G.
D update: the standard GAN loss (``adversarial.loss``) on real vs fresh (detached) relaxed fakes, one
minibatch per step.

Choices, stated:

* Relaxation: TextGAN used a soft-argmax, ``softmax(L * logits)`` with a large L, fed back as the next
  input. Here G uses the Gumbel-softmax with the soft vector fed back (``feed="soft"``), i.e. the same
  relaxation plus Gumbel noise (which makes sampling stochastic for a fixed z); ``max_temperature``
  plays L's role (``temperature_schedule: no, max_temperature: 1000`` is close to the soft-argmax).
* D's objective: TextGAN's D also maximises the MMD and reconstructs z from the features; those
  terms are skipped: D is trained with the standard loss only.
* z: the LSTM generator's ``latent_dim > 0`` sets its initial state from z. Its latent layer is zeroed
  when adversarial training starts (see ``GumbelAlgorithm.start``), so G(z) begins as the MLE model;
  sampling without z (evaluation, ``llmgan generate``) uses the zero state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from llmgan.algorithms.base import GANContext, register
from llmgan.algorithms.relgan import GumbelAlgorithm, GumbelParams, frozen
from llmgan.errors import ConfigError


def mmd2(x: Tensor, y: Tensor, bandwidths: Sequence[float]) -> Tensor:
    """Biased squared MMD between feature sets x (N, F) and y (M, F), clamped at 0 (scalar).

    Kernel: ``k(a, b) = sum_s exp(-||a - b||^2 / (2 s^2))`` over the bandwidths s. Identical sets give
    exactly 0; the estimate is differentiable in both arguments.
    """
    if x.dim() != 2 or y.dim() != 2 or x.size(1) != y.size(1):
        raise ValueError(f"mmd2 expects (N, F) and (M, F), got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.float(), y.float()
    xy = torch.cat([x, y], dim=0)  # (N + M, F)
    sq = xy.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * xy @ xy.t()).clamp(min=0)  # squared distances (N+M, N+M)
    k = sum(torch.exp(-d2 / (2.0 * float(s) ** 2)) for s in bandwidths)
    n = x.size(0)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return (kxx.mean() + kyy.mean() - 2.0 * kxy.mean()).clamp(min=0)


@dataclass
class TextGANParams(GumbelParams):
    bandwidths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0])  # Gaussian kernel sigmas
    feed: str = "soft"  # TextGAN feeds the relaxed (soft-argmax) vector back into the LSTM
    d_grad_clip: float | None = None
    per_representation: bool = False


@register("textgan")
class TextGAN(GumbelAlgorithm):
    Params = TextGANParams

    def setup(self, ctx: GANContext) -> None:
        super().setup(ctx)
        if not self.params.bandwidths or any(s <= 0 for s in self.params.bandwidths):
            raise ConfigError("adversarial.params.bandwidths: expected a non-empty list of positive numbers")
        if not hasattr(ctx.discriminator, "features"):
            raise ConfigError("textgan needs a discriminator with features()")

    def g_step(self, ctx: GANContext) -> dict:
        n = ctx.cfg.g_batch_size
        D = ctx.discriminator
        fake = self.relaxed(ctx, n)  # z drawn inside when G has a latent code
        real, _ = ctx.real_batch(n)
        D.train()
        with frozen(D), ctx.autocast():
            f_fake = D.features(fake.soft)  # (B, F), gradient to G through the soft samples
            with torch.no_grad():
                f_real = D.features(real)
        loss = mmd2(f_real, f_fake, self.params.bandwidths)
        ctx.log(temperature=self.beta(ctx))
        return {"g_loss": ctx.update_generator(loss), "mmd2": float(loss.detach())}
